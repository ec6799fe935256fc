"""Database URLs: SQLite and PostgreSQL (psycopg 3) are accepted, anything else is named."""

import pytest

from rondo.contracts.database import make_engine, parse_database_url


def test_plain_postgresql_urls_use_psycopg() -> None:
    url = parse_database_url("postgresql://rondo:secret@db:5432/rondo_scheduler")
    assert url.drivername == "postgresql+psycopg" and url.database == "rondo_scheduler"


@pytest.mark.parametrize(
    "given",
    ["mysql://rondo:secret@db/rondo", "postgresql+psycopg2://rondo:secret@db/rondo", "db.sqlite"],
)
def test_other_urls_are_refused_naming_the_accepted_forms(given: str) -> None:
    with pytest.raises(ValueError, match=r"postgresql\+psycopg://USER") as refused:
        make_engine(given)
    assert "secret" not in str(refused.value)
