"""`python -m rondo.scheduler.migrations revision -m MESSAGE`: the next revision from the models."""

from rondo.contracts.migrations import main
from rondo.scheduler.migrations import MIGRATIONS

main(MIGRATIONS)
