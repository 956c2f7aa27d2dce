#!/bin/sh
# keeptar migrate19 engine: v1 archive on stdin -> v2 archive on stdout, logs on stderr.
#
#   docker run -i --rm --privileged --tmpfs /var/lib/docker IMAGE [--storage-driver D] <v1.tar >v2.tar
#
# Starts a private dockerd (TZ=UTC, so `docker save` writes the same bytes everywhere), lets
# its legacy `docker load` convert the archive, then saves every resulting image by ID
# (like arv-keepdocker: RepoTags null).  Any failure exits non-zero with nothing on stdout,
# except a failure in the middle of `docker save` itself (then the exit status says so).
set -eu

driver=overlay
while [ $# -gt 0 ]; do
  case $1 in
    --storage-driver) driver=${2:?--storage-driver needs a value}; shift 2 ;;
    --storage-driver=*) driver=${1#*=}; shift ;;
    -h|--help) sed -n '2,9p' "$0" >&2; exit 0 ;;
    *) echo "migrate19: unknown argument: $1" >&2; exit 2 ;;
  esac
done
case $driver in
  overlay|overlay2|vfs|aufs|btrfs|devicemapper|zfs) ;;
  *) echo "migrate19: unsupported storage driver: $driver" >&2; exit 2 ;;
esac

log() { echo "migrate19: $*" >&2; }
export TZ=UTC
sock=unix:///run/migrate19.sock
export DOCKER_HOST=$sock

stop() {
  if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  # The data root is scratch: leave nothing behind in a bind-mounted directory.
  rm -rf /var/lib/docker/* 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM

dockerd --storage-driver="$driver" --host="$sock" --iptables=false --ip6tables=false \
  --bridge=none --ip-masq=false --data-root=/var/lib/docker --pidfile=/run/migrate19.pid \
  >&2 2>&1 &
pid=$!
i=0
until docker info >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then log "dockerd ($driver) failed to start"; exit 1; fi
  i=$((i + 1))
  if [ "$i" -gt 240 ]; then log "dockerd ($driver) did not answer in 120 s"; exit 1; fi
  sleep 0.5
done
log "dockerd $(docker version --format '{{.Server.Version}}') ready, storage driver $driver"

if ! docker load >&2; then
  log "docker load failed: the input is not an archive this Docker can load"
  exit 1
fi
# A v1 load prints no "Loaded image" line: the fresh daemon's images are the result.
ids=$(docker images -q --no-trunc | sort -u)
if [ -z "$ids" ]; then
  log "docker load produced no image"
  exit 1
fi
log "loaded $(echo "$ids" | tr '\n' ' ')"
# shellcheck disable=SC2086 # one argument per image ID
docker save $ids
