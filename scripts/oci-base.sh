#!/usr/bin/env bash
# Makes the local base image localhost/bookworm-python:local with no registry: a minimal Debian
# bookworm (debootstrap) plus python3, python3-venv and ca-certificates, imported into podman.
# Needs root, debootstrap and podman (Debian: apt-get install podman buildah runc iptables debootstrap).
# Idempotent: does nothing when the image already exists.
set -euo pipefail
source "$(dirname "$0")/oci-env.sh"
BASE_IMAGE="${BASE_IMAGE:-localhost/bookworm-python:local}"
if podman image exists "$BASE_IMAGE"; then
  echo "$BASE_IMAGE already present" >&2
  exit 0
fi
# The mirror the host's apt already uses (deb822 or one-line sources), else Debian's default.
mirror="${DEBIAN_MIRROR:-}"
if [[ -z $mirror ]]; then
  mirror=$(grep -hoE '^URIs: *http[^ ]*/debian$' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | head -1 | sed 's/^URIs: *//' || true)
fi
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="$OCI_ROOT/rootfs"
rm -rf "$rootfs"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$OCI_ROOT/debootstrap.log" 2>&1 \
  || { tail -20 "$OCI_ROOT/debootstrap.log" >&2; exit 1; }
chroot "$rootfs" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends python3 python3-venv ca-certificates >/dev/null && apt-get clean \
  && rm -rf /var/lib/apt/lists/*'
tar --numeric-owner -C "$rootfs" -c . | podman import \
  --change 'CMD ["/bin/bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$BASE_IMAGE" >/dev/null
rm -rf "$rootfs"
echo "built $BASE_IMAGE" >&2
