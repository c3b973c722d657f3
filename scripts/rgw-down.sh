#!/usr/bin/env bash
# rgw-down.sh — stop the cluster that rgw-up.sh started in DATA_DIR, by its pid files only.
#
# usage:  scripts/rgw-down.sh DATA_DIR [--purge]
#   (default)  SIGTERM radosgw, then the OSD, then the monitor, each waited for (SIGKILL after
#              20 s). memstore saves its objects, so rgw-up.sh DATA_DIR brings them back.
#   --purge    SIGKILL all three and delete DATA_DIR (fast; the data is gone).
# Works the same for a cluster whose daemons run from a Ceph root (RGW_CEPH_ROOT of rgw-up.sh).
set -uo pipefail

die() { echo "rgw-down: $*" >&2; exit 1; }
source "$(dirname "$0")/lib/down-args.sh"
parse_down_args "$0" "$@"
DAEMONS=(client.rgw.gw osd.0 mon.a)   # stop order: clients before the store they write to

# Alive means: not a zombie (an init that does not reap leaves those; they hold no resources and
# signals do nothing to them) and still running a ceph daemon's executable (the pid may have
# been reused). The executable, not /proc/PID/comm, which Reef's radosgw renames (notif-worker0).
pid_alive() {
  local state exe
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]] || return 1
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  exe=${exe##*/}
  [[ $exe == ceph-mon || $exe == ceph-osd || $exe == radosgw ]]
}

# rgw-up.sh made an empty mount point for DATA_DIR inside the Ceph root it ran from; remove it
# and the parents it made (empty ones only, never a top-level directory of the root).
remove_mount_point() {
  local root dir
  root=$(sed -n 's/^CEPH_ROOT=//p' "$DATA_DIR/ceph-release" 2>/dev/null)
  [[ -n $root && -d $root ]] || return 0
  dir=$root$(cd "$DATA_DIR" && pwd)
  while [[ $(dirname "$dir") != "$root" && $dir != "$root" ]]; do
    rmdir "$dir" 2>/dev/null || break
    dir=$(dirname "$dir")
  done
}

wait_gone() {  # wait_gone PID SECONDS
  local tenths=$(( $2 * 10 ))
  while (( tenths-- > 0 )); do
    pid_alive "$1" || return 0
    sleep 0.1
  done
  return 1
}

pid_of() {
  local pid_file=$RUN/$1.pid
  [[ -s $pid_file ]] && cat "$pid_file"
}

if $PURGE; then
  killed=()
  for name in "${DAEMONS[@]}"; do
    pid=$(pid_of "$name") || continue
    if pid_alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null && killed+=("$pid")
    fi
  done
  status=0
  for pid in "${killed[@]}"; do
    wait_gone "$pid" 5 || { echo "rgw-down: pid $pid still there after SIGKILL" >&2; status=1; }
  done
  [[ -d $DATA_DIR ]] && remove_mount_point
  rm -rf "$DATA_DIR"
  exit $status
fi

[[ -d $RUN ]] || exit 0
status=0
for name in "${DAEMONS[@]}"; do
  pid=$(pid_of "$name") || continue
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    if ! wait_gone "$pid" 20; then
      echo "rgw-down: $name (pid $pid) ignored SIGTERM for 20 s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
      wait_gone "$pid" 5 || { echo "rgw-down: $name (pid $pid) survived SIGKILL" >&2; status=1; }
    fi
  fi
  rm -f "$RUN/$name.pid"
done
exit $status
