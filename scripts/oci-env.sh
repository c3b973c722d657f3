# Sourced by the other scripts/oci-*.sh: keeps podman's whole state (images, layers, run files)
# inside the git-ignored .cache/oci of this checkout, and works around two host traps: crun refuses
# hybrid cgroups (so runc), and the container may not raise rlimits above what podman inherits.
OCI_ROOT="${OCI_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache/oci}"
mkdir -p "$OCI_ROOT/store" "$OCI_ROOT/run"
_nofile=$(ulimit -Hn); _nproc=$(ulimit -Hu)
[[ $_nofile == unlimited ]] && _nofile=1048576
[[ $_nproc == unlimited ]] && _nproc=32768
# conmon's own hard nproc can be lower than the shell's; stay at or under 32768.
(( _nproc > 32768 )) && _nproc=32768
cat > "$OCI_ROOT/storage.conf" <<EOC
[storage]
driver = "overlay"
graphroot = "$OCI_ROOT/store"
runroot = "$OCI_ROOT/run"
EOC
cat > "$OCI_ROOT/containers.conf" <<EOC
[containers]
default_ulimits = ["nofile=${_nofile}:${_nofile}", "nproc=${_nproc}:${_nproc}"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOC
export CONTAINERS_STORAGE_CONF="$OCI_ROOT/storage.conf" CONTAINERS_CONF="$OCI_ROOT/containers.conf"
