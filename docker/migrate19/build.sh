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

# The content hash: every input that shapes the image (not the mirror: same suite, same role).
hash=$(
  { printf 'suite=%s packages=%s version=%s\n' "$suite" "$packages" "$version"
    cat "$here/Dockerfile" "$here/migrate19.sh" "$here/build.sh"
  } | sha256sum | cut -c1-16
)
hashed="$repo:$version-$hash"
base="$repo-base:$version-$hash"

if [ "$force" = 0 ] && docker image inspect "$hashed" >/dev/null 2>&1; then
  docker tag "$hashed" "$image"
  echo "$image is up to date ($hashed)" >&2
  exit 0
fi
command -v mmdebstrap >/dev/null || {
  echo "build.sh: mmdebstrap is needed (apt-get install mmdebstrap)" >&2
  exit 1
}
docker version >/dev/null || { echo "build.sh: no Docker daemon answers" >&2; exit 1; }

start=$(date +%s)
if [ "$force" = 1 ] || ! docker image inspect "$base" >/dev/null 2>&1; then
  echo "building $base from $mirror ($suite, $packages)..." >&2
  # minbase + docker.io, no docs, man pages or locales; the tarball goes straight to import.
  mmdebstrap --mode=root --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --aptopt='Acquire::Retries "3"' \
    "$suite" - "$mirror" \
    | docker import --message "keeptar migrate19 base ($suite, $packages)" - "$base" >/dev/null
fi
docker build -q --build-arg "BASE=$base" -t "$hashed" -t "$image" "$here" >/dev/null
echo "built $image ($hashed) in $(($(date +%s) - start)) s" >&2
