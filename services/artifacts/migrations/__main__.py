"""`python -m rondo.artifacts.migrations revision -m MESSAGE`: the next revision from the models."""

from rondo.artifacts.migrations import MIGRATIONS
from rondo.contracts.migrations import main

main(MIGRATIONS)
