# Sourced by scripts/quickstart and scripts/test: make .venv and install Rondo into it.
#
# ensure_venv [EXTRAS]: create .venv with python3 (3.11+) unless it exists, then install
# torch==2.13.0 first (the local CPU wheel; anything looser may pull a CUDA build of several GB)
# and `pip install -e .[EXTRAS]`. Skipped when pyproject.toml and EXTRAS are unchanged since the
# last install (stamp file in .venv). Then the dashboard's npm packages (ensure_web_packages).

ensure_venv() {
  local extras="${1:-}"
  local target="."
  [ -n "$extras" ] && target=".[$extras]"
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
      echo "Rondo needs Python 3.11 or newer (set PYTHON=...)" >&2
      return 1
    }
    "${PYTHON:-python3}" -m venv .venv
  fi
  local stamp
  stamp=".venv/.rondo-installed-$( (cat pyproject.toml; echo "$extras") | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet torch==2.13.0
    .venv/bin/python -m pip install --quiet -e "$target"
    rm -f .venv/.rondo-installed-*
    touch "$stamp"
  fi
  ensure_web_packages
}

# ensure_web_packages: the dashboard's npm packages (Monaco) into services/gateway/web/
# node_modules, exactly as package-lock.json pins them; skipped while that lock is unchanged.
# Without npm the dashboard still runs; its file viewer then shows plain text.
ensure_web_packages() {
  local web=services/gateway/web
  local stamp
  stamp="$web/node_modules/.rondo-installed-$(sha256sum "$web/package-lock.json" | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  if ! command -v npm >/dev/null; then
    echo "npm not found: the dashboard's file viewer falls back to plain text" >&2
    return 0
  fi
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$stamp"
}

# ensure_sandbox_can_run_python: as root, jobs' code runs as unprivileged uids (the worker
# sandbox), and they must be able to run the venv's interpreter. A pyenv or venv under a 0700
# home (e.g. /root) is unreachable to them: give the folders above it the traverse bit only
# (o+x: pass through, never list), and say so. Not root: nothing to do (the stack then asks
# for `rondo up --trust-user-code`).
ensure_sandbox_can_run_python() {
  [ "$(id -u)" = 0 ] || return 0
  local target dir
  for target in "$(readlink -f .venv/bin/python)" "$(pwd)/.venv/bin/python"; do
    dir=$(dirname "$target")
    while [ "$dir" != "/" ]; do
      if [ -d "$dir" ] && [ $(( $(stat -c '%a' "$dir" | sed 's/^.*\(.\)$/\1/') & 1 )) -eq 0 ]; then
        echo "letting sandboxed job users pass through $dir (chmod o+x; listing stays closed)" >&2
        chmod o+x "$dir"
      fi
      dir=$(dirname "$dir")
    done
  done
}
