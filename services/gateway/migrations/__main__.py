"""`python -m rondo.gateway.migrations revision -m MESSAGE`: the next revision from the models."""

from rondo.contracts.migrations import main
from rondo.gateway.migrations import MIGRATIONS

main(MIGRATIONS)
