#!/usr/bin/env bash
# Installs the Debian packages the tests and the local pipeline need, only those missing.
# As root it runs apt-get; as another user it prints the exact command to run and fails.
#   install-system-deps.sh          Ceph RGW and RabbitMQ (tests, demo), wrk (benchmarks)
#   install-system-deps.sh images   podman and friends, to build and run the container images
#   install-system-deps.sh ceph18   debootstrap, to build the Debian 13 root with Ceph 18 (make test-ceph18)
#   install-system-deps.sh results  PostgreSQL, Chromium and its driver: the results service's tests (make test)
set -euo pipefail
case ${1:-} in
  "") PACKAGES=(ceph-mon ceph-osd radosgw ceph-common uuid-runtime rabbitmq-server curl wrk) ;;
  images) PACKAGES=(podman buildah runc iptables debootstrap) ;;
  ceph18) PACKAGES=(debootstrap debian-archive-keyring) ;;
  results) PACKAGES=(postgresql chromium chromium-driver) ;;
  *) echo "usage: $0 [images | ceph18 | results]" >&2; exit 2 ;;
esac
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
cmd=(apt-get install --no-install-recommends -y "${missing[@]}")
if [[ $(id -u) -ne 0 ]]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get update && sudo ${cmd[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
"${cmd[@]}" >/dev/null
