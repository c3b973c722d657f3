#!/usr/bin/env bash
# rabbitmq-down.sh — stop the broker and the epmd that rabbitmq-up.sh started in DATA_DIR, by
# their pid files only.
#
# usage:  scripts/rabbitmq-down.sh DATA_DIR [--purge]
#   SIGTERM to the server script (it stops the Erlang VM), SIGKILL after 30 s; then epmd.
#   --purge also deletes DATA_DIR.
set -uo pipefail

die() { echo "rabbitmq-down: $*" >&2; exit 1; }
source "$(dirname "$0")/lib/down-args.sh"
parse_down_args "$0" "$@"

pid_alive() {  # not a zombie and still the program we started (pids get reused)
  local pid=$1 state comm want; shift
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]] || return 1
  comm=$(<"/proc/$pid/comm") || return 1
  for want in "$@"; do [[ $comm == "$want" ]] && return 0; done
  return 1
}

wait_gone() {  # wait_gone SECONDS PID COMM...
  local tenths=$(( $1 * 10 )); shift
  while (( tenths-- > 0 )); do
    pid_alive "$@" || return 0
    sleep 0.1
  done
  return 1
}

read_pid() { [[ -s $RUN/$1.pid ]] && cat "$RUN/$1.pid"; }

status=0
server=$(read_pid server) || server=
beam=$(read_pid beam) || beam=
if [[ -n $server ]] && pid_alive "$server" sh dash bash rabbitmq-server; then
  kill -TERM "$server" 2>/dev/null
fi
if [[ -n $beam ]]; then
  if ! wait_gone 30 "$beam" beam.smp; then
    echo "rabbitmq-down: Erlang VM (pid $beam) still up after 30 s; sending SIGKILL" >&2
    kill -KILL "$beam" 2>/dev/null
    wait_gone 5 "$beam" beam.smp || status=1
  fi
fi
if [[ -n $server ]]; then
  wait_gone 5 "$server" sh dash bash rabbitmq-server || kill -KILL "$server" 2>/dev/null
fi
epmd=$(read_pid epmd) || epmd=
if [[ -n $epmd ]] && pid_alive "$epmd" epmd; then
  kill -TERM "$epmd" 2>/dev/null
  wait_gone 5 "$epmd" epmd || kill -KILL "$epmd" 2>/dev/null
fi
rm -f "$RUN"/server.pid "$RUN"/beam.pid "$RUN"/epmd.pid
$PURGE && rm -rf "$DATA_DIR"
exit $status
