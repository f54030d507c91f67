#!/usr/bin/env bash
# Make a minimal Debian bookworm base image from Debian's packages alone, for machines that can reach a
# Debian mirror but no container registry. It already holds what the image would otherwise install with
# apt (Python 3.11, venv, the Java runtime multi-model-server needs), so the build needs no network.
#   docker/bootstrap-base.sh [IMAGE_NAME]    (default imgclf-base:bookworm; needs root and debootstrap)
set -euo pipefail
name=${1:-imgclf-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=python3,python3-venv,openjdk-17-jre-headless,ca-certificates,procps

root=$(mktemp -d)
# debootstrap mounts /proc (and maybe more) inside $root while it installs; a run stopped midway leaves them
# mounted, so unmount whatever is below $root before removing it, and never cross into another file system.
cleanup() {
  findmnt -rn -o TARGET | awk -v root="$root/" 'index($0, root) == 1' | sort -r | xargs -r -n1 umount -l
  rm -rf --one-file-system "$root" "$root.log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "bootstrapping Debian bookworm ($packages) from $mirror ..."
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 30 "$root.log"; exit 1; }
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/*
tar -C "$root" -c . | docker import --change 'ENV LANG=C.UTF-8' - "$name" >/dev/null
echo "imported $name ($(docker image inspect --format '{{.Size}}' "$name" | numfmt --to=iec))"
