#!/usr/bin/env bash
# rgw-down.sh — stop the cluster that rgw-up.sh started in DATA_DIR, by its pid files only.
#
# usage:  scripts/rgw-down.sh DATA_DIR [--purge]
#   (default)  SIGTERM radosgw, then the OSD, then the monitor, each waited for (SIGKILL after
#              20 s). memstore saves its objects, so rgw-up.sh DATA_DIR brings them back.
#   --purge    SIGKILL all three and delete DATA_DIR (fast; the data is gone).
set -uo pipefail

die() { echo "rgw-down: $*" >&2; exit 1; }
[[ $# -ge 1 && $# -le 2 ]] || die "usage: rgw-down.sh DATA_DIR [--purge]"
DATA_DIR=$1
PURGE=false
if [[ $# -eq 2 ]]; then
  [[ $2 == --purge ]] || die "unknown option '$2'"
  PURGE=true
fi
RUN=$DATA_DIR/run
DAEMONS=(client.rgw.gw osd.0 mon.a)   # stop order: clients before the store they write to

# Alive means: not a zombie (an init that does not reap leaves those; they hold no resources and
# signals do nothing to them) and still a ceph binary (the pid may have been reused).
pid_alive() {
  local state comm
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]] || return 1
  comm=$(<"/proc/$1/comm") || return 1
  [[ $comm == ceph-mon || $comm == ceph-osd || $comm == radosgw ]]
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
  for pid in "${killed[@]}"; do
    wait_gone "$pid" 5 || echo "rgw-down: pid $pid still there after SIGKILL" >&2
  done
  rm -rf "$DATA_DIR"
  exit 0
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
