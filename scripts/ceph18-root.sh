#!/usr/bin/env bash
# ceph18-root.sh — a Debian 13 (trixie) root holding Ceph 18 "Reef" (ceph-mon, ceph-osd,
# radosgw, ceph-common), for running RGW's daemons from it with
#   RGW_CEPH_ROOT="$(scripts/ceph18-root.sh)" scripts/rgw-up.sh DATA_DIR [PORT]
# while everything else (tests, functions, the demo) stays on the host.
#
# usage:  scripts/ceph18-root.sh [--rebuild]      prints the root's path on stdout
#         scripts/ceph18-root.sh --cached         the same, but never builds: exit 1 if not built
#
# The root is built once with debootstrap from Debian's archive and cached outside the clone, in
# CEPH_ROOT_CACHE (default /var/cache/rgw-inference) under a name keyed by ROOT_STAMP below:
# change the stamp whenever what goes into the root changes, and the next run builds a new one.
# A run with the root cached only checks its stamp file (milliseconds). --rebuild builds it anew.
#
# Environment (all optional):
#   CEPH_ROOT_CACHE    where roots are kept (default /var/cache/rgw-inference)
#   CEPH_ROOT_MIRROR   Debian archive to fetch from (default: the one the host's apt uses,
#                      else http://deb.debian.org/debian)
#
# Needs root (debootstrap and chroot do) and the host packages debootstrap and
# debian-archive-keyring (scripts/install-system-deps.sh ceph18 installs them).
set -euo pipefail

SUITE=trixie
PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)
# Bump the trailing number when the recipe changes; a root without this exact stamp is rebuilt.
ROOT_STAMP=debian13-ceph18-r1
CACHE=${CEPH_ROOT_CACHE:-/var/cache/rgw-inference}
ROOT=$CACHE/$ROOT_STAMP
STAMP_FILE=$ROOT/.rgw-inference-root

die() { echo "ceph18-root: $*" >&2; exit 1; }

REBUILD=false
CACHED_ONLY=false
case ${1:-} in
  "") ;;
  --rebuild) REBUILD=true ;;
  --cached) CACHED_ONLY=true ;;
  -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  *) die "usage: ceph18-root.sh [--rebuild | --cached]" ;;
esac

if ! $REBUILD && [[ -f $STAMP_FILE && $(head -n1 "$STAMP_FILE") == "$ROOT_STAMP" ]]; then
  echo "$ROOT"
  exit 0
fi
$CACHED_ONLY && die "no root built yet at $ROOT (scripts/ceph18-root.sh builds it)"

[[ $(id -u) -eq 0 ]] || die "building the Debian 13 root needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null \
  || die "debootstrap is missing: run scripts/install-system-deps.sh ceph18 (as root)"

# The host's Debian mirror: the first URI of a sources entry that lists a plain Debian suite
# (not -security, not a third-party repository), in one-line or deb822 format.
host_mirror() {
  local file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $file ]] || continue
    awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; next } }' "$file" \
      | grep -E '/debian/?$' || true
  done
  for file in /etc/apt/sources.list.d/*.sources; do
    [[ -f $file ]] || continue
    awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$file" | grep -E '/debian/?$' || true
  done
}
MIRROR=${CEPH_ROOT_MIRROR:-}
[[ -n $MIRROR ]] || MIRROR=$(host_mirror 2>/dev/null | head -n1) || true
MIRROR=${MIRROR:-http://deb.debian.org/debian}

mkdir -p "$CACHE"
# One build at a time, also across concurrent CI jobs or test sessions on this machine.
exec 9>"$CACHE/.lock"
flock 9
if ! $REBUILD && [[ -f $STAMP_FILE && $(head -n1 "$STAMP_FILE") == "$ROOT_STAMP" ]]; then
  echo "$ROOT"   # another run built it while this one waited
  exit 0
fi

STARTED=$(date +%s)
WORK=$CACHE/.build-$ROOT_STAMP-$$
cleanup() {
  # The build mounts /proc and /dev inside WORK; never delete through a live mount.
  local mnt
  for mnt in "$WORK/dev/pts" "$WORK/dev" "$WORK/proc" "$WORK/sys"; do
    mountpoint -q "$mnt" 2>/dev/null && umount -l "$mnt"
  done
  [[ -d $WORK ]] && rm -rf --one-file-system "$WORK"
  return 0
}
trap cleanup EXIT

echo "ceph18-root: debootstrap $SUITE from $MIRROR into $WORK" >&2
debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
  "$SUITE" "$WORK" "$MIRROR" >"$CACHE/.build.log" 2>&1 \
  || { tail -n 30 "$CACHE/.build.log" >&2; die "debootstrap failed; log in $CACHE/.build.log"; }
echo "ceph18-root: [$(( $(date +%s) - STARTED )) s] base system ready; installing ${PACKAGES[*]}" >&2

# Package scripts must not try to start services in the root.
printf '#!/bin/sh\nexit 101\n' >"$WORK/usr/sbin/policy-rc.d"
chmod +x "$WORK/usr/sbin/policy-rc.d"
mount -t proc proc "$WORK/proc"
mount --bind /dev "$WORK/dev"
in_root() {
  chroot "$WORK" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}
{
  in_root apt-get update -qq
  in_root apt-get install --no-install-recommends -y -qq "${PACKAGES[@]}"
  in_root apt-get clean
} >>"$CACHE/.build.log" 2>&1 \
  || { tail -n 30 "$CACHE/.build.log" >&2; die "installing Ceph in the root failed; log in $CACHE/.build.log"; }
umount "$WORK/dev" "$WORK/proc"
rm -rf "$WORK"/var/lib/apt/lists/* "$WORK"/var/cache/apt/*.bin

version=$(dpkg-query --admindir="$WORK/var/lib/dpkg" -W -f='${Version}' radosgw)
printf '%s\nradosgw %s\nmirror %s\nbuilt %s\n' "$ROOT_STAMP" "$version" "$MIRROR" \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$WORK/.rgw-inference-root"

# Swap in the new root; roots of older stamps are left for the user to delete (see docs/rgw.md).
if [[ -d $ROOT ]]; then
  rm -rf --one-file-system "$ROOT"
fi
mv "$WORK" "$ROOT"
echo "ceph18-root: [$(( $(date +%s) - STARTED )) s] $ROOT ready (radosgw $version)" >&2
echo "$ROOT"
