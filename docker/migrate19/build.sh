#!/usr/bin/env bash
# Build keeptar's migrate19 engine image, make-style: nothing is done when an image built from
# exactly these inputs is already in the daemon (DOCKER_HOST) under its content-hash tag.
#
#   docker/migrate19/build.sh            # -> keeptar/migrate19:1 (and :1-<hash>)
#   MIGRATE19_IMAGE=name:tag build.sh    # another name for the version tag
#   MIGRATE19_MIRROR=http://... build.sh # another Debian mirror
#   build.sh --force                     # rebuild even if the image exists
#
# No registry is used: mmdebstrap makes a Debian bookworm root filesystem with docker.io
# (Docker 20.10, which still loads v1 archives) straight from the Debian package mirror named
# in the apt sources (default deb.debian.org), `docker import` turns it into the base image,
# and Dockerfile adds the entrypoint on top.  Needs root (mmdebstrap's root mode), mmdebstrap
# and a Docker daemon.  Takes about a minute and makes a ~400 MB image.
# Exit status 3: it cannot be built here (not root, no mmdebstrap, no daemon, mirror unreachable).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
version=1
suite=bookworm
packages=docker.io
image=${MIGRATE19_IMAGE:-keeptar/migrate19:$version}
repo=${image%:*}
force=0
[ "${1:-}" = --force ] && force=1

mirror=${MIGRATE19_MIRROR:-}
if [ -z "$mirror" ]; then
  # The first Debian mirror in the apt sources (deb822 "URIs:" or one-line "deb URL").
  mirror=$(
    { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
      grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}'
    } | grep -v -- '-security' | grep '/debian/\?$' | head -1 || true
  )
  mirror=${mirror:-http://deb.debian.org/debian}
fi

# How the base root filesystem is made: minbase + docker.io, no docs, man pages or locales.
mmdebstrap_opts=(--mode=root --variant=minbase --include="$packages"
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --aptopt='Acquire::Retries "3"')
# Content hashes of every input that shapes each image (not the mirror: same suite, same role).
base_hash=$(printf '%s\n' "$version" "$suite" "${mmdebstrap_opts[@]}" | sha256sum | cut -c1-16)
hash=$(
  { echo "$base_hash"; cat "$here/Dockerfile" "$here/migrate19.sh" "$here/build.sh"; } \
    | sha256sum | cut -c1-16
)
hashed="$repo:$version-$hash"
base="$repo-base:$version-$base_hash"

if [ "$force" = 0 ] && docker image inspect "$hashed" >/dev/null 2>&1; then
  docker tag "$hashed" "$image"
  echo "$image is up to date ($hashed)" >&2
  exit 0
fi
cannot() { echo "build.sh: cannot build $image here: $*" >&2; exit 3; }
command -v mmdebstrap >/dev/null || cannot "mmdebstrap is needed (apt-get install mmdebstrap)"
[ "$(id -u)" = 0 ] || cannot "mmdebstrap's root mode needs root"
docker version >/dev/null 2>&1 || cannot "no Docker daemon answers (DOCKER_HOST)"

start=$(date +%s)
if [ "$force" = 1 ] || ! docker image inspect "$base" >/dev/null 2>&1; then
  echo "building $base from $mirror ($suite, $packages)..." >&2
  mmdebstrap "${mmdebstrap_opts[@]}" \
    "$suite" - "$mirror" \
    | docker import --message "keeptar migrate19 base ($suite, $packages)" - "$base" >/dev/null \
    || { status=("${PIPESTATUS[@]}")
         [ "${status[0]}" = 0 ] || cannot "mmdebstrap failed (is $mirror reachable?)"
         echo "build.sh: docker import failed" >&2; exit 1; }
fi
docker build -q --build-arg "BASE=$base" -t "$hashed" -t "$image" "$here" >/dev/null
echo "built $image ($hashed) in $(($(date +%s) - start)) s" >&2
