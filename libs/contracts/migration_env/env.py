"""Alembic's env.py for every service's migrations (`rondo.contracts.migrations` runs it)."""

from rondo.contracts.migrations import run_migrations

run_migrations()
