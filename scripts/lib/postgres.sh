# Sourced by scripts/test: PostgreSQL 15 for the tests that run the services' stores on it.
#
# ensure_postgres: install Debian's `postgresql` package unless its server binaries are there
# (tests/support/postgres.py starts a throwaway server from them; nothing runs here). The
# package lists are refreshed only when the first install attempt cannot find the package.

PG_INITDB=/usr/lib/postgresql/15/bin/initdb

ensure_postgres() {
  command -v "$PG_INITDB" >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL 15 is missing: run 'apt-get install -y postgresql' as root" >&2
    return 1
  fi
  echo "scripts/test: installing PostgreSQL 15 (apt-get install postgresql)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq postgresql >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
}
