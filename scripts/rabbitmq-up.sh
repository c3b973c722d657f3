#!/usr/bin/env bash
# rabbitmq-up.sh — RabbitMQ (Debian's rabbitmq-server) as a plain process on 127.0.0.1, no
# systemd, all state in DATA_DIR.
#
# usage:  eval "$(scripts/rabbitmq-up.sh DATA_DIR [PORT])"      PORT defaults to 5672
#
# Prints AMQP_URL=amqp://127.0.0.1:PORT once the broker answers the AMQP handshake. The user is
# RabbitMQ's default guest/guest, which it accepts from loopback only. Progress goes to stderr.
#
# Everything listens on loopback: AMQP (RABBITMQ_NODE_IP_ADDRESS), the Erlang distribution port
# (inet_dist_use_interface) and a private epmd (ERL_EPMD_ADDRESS, on its own free port, so it
# never meets another node's epmd and rabbitmq-down.sh can stop it by pid). The node's Erlang
# name is rabbit-PORT@localhost.
#
# Environment (optional): RABBITMQ_START_TIMEOUT seconds to wait (default 60).
set -euo pipefail

die() { echo "rabbitmq-up: $*" >&2; exit 1; }
[[ $# -ge 1 && $# -le 2 ]] || die "usage: rabbitmq-up.sh DATA_DIR [PORT]"
DATA_DIR=$1
PORT=${2:-5672}
[[ $PORT =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$PORT'"
START_TIMEOUT=${RABBITMQ_START_TIMEOUT:-60}
SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server

if ! dpkg-query -W -f='${Status}' rabbitmq-server 2>/dev/null | grep -q "install ok installed"; then
  if [[ $(id -u) -ne 0 ]]; then
    die "the Debian package rabbitmq-server is missing
install it with: sudo apt-get update && sudo apt-get install --no-install-recommends -y rabbitmq-server"
  fi
  echo "rabbitmq-up: installing rabbitmq-server" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install --no-install-recommends -y -qq rabbitmq-server >&2
fi
[[ -x $SERVER ]] || die "$SERVER not found (rabbitmq-server package layout changed?)"

mkdir -p "$DATA_DIR"
DATA_DIR=$(cd "$DATA_DIR" && pwd)
RUN=$DATA_DIR/run
mkdir -p "$RUN" "$DATA_DIR/log" "$DATA_DIR/mnesia"
STARTED_AT=$(date +%s%N)
say() { echo "rabbitmq-up [$(( ($(date +%s%N) - STARTED_AT) / 1000000 )) ms] $*" >&2; }

# Not a zombie (this machine's init may not reap) and still the program we started.
pid_alive() {  # pid_alive PID COMM...
  local pid=$1 state comm; shift
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]] || return 1
  comm=$(<"/proc/$pid/comm") || return 1
  local want
  for want in "$@"; do [[ $comm == "$want" ]] && return 0; done
  return 1
}
recorded_alive() {  # recorded_alive NAME COMM...
  local name=$1; shift
  [[ -s $RUN/$name.pid ]] && pid_alive "$(<"$RUN/$name.pid")" "$@"
}

amqp_answers() {  # the broker sends connection.start (a method frame, type 1) after our header
  python3 - "$PORT" <<'PY' 2>/dev/null
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as sock:
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    sys.exit(0 if sock.recv(1) == b"\x01" else 1)
PY
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [[ -f $DATA_DIR/port ]]; then
  PORT=$(<"$DATA_DIR/port")   # a DATA_DIR keeps its port (and node name)
fi
if recorded_alive beam beam.smp && amqp_answers; then
  say "already running"
  echo "AMQP_URL=amqp://127.0.0.1:$PORT"
  exit 0
fi
amqp_answers && die "something else already answers AMQP on 127.0.0.1:$PORT"
echo "$PORT" >"$DATA_DIR/port"

EPMD_PORT=$(free_port)
DIST_PORT=$(free_port)
export HOME=$DATA_DIR                  # where Erlang keeps .erlang.cookie
export ERL_EPMD_ADDRESS=127.0.0.1
export ERL_EPMD_PORT=$EPMD_PORT
export RABBITMQ_NODENAME=rabbit-$PORT@localhost
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$PORT
export RABBITMQ_DIST_PORT=$DIST_PORT
export RABBITMQ_MNESIA_BASE=$DATA_DIR/mnesia
export RABBITMQ_LOG_BASE=$DATA_DIR/log
export RABBITMQ_PID_FILE=$RUN/rabbitmq.pid.erl
export RABBITMQ_CONF_ENV_FILE=$DATA_DIR/rabbitmq-env.conf     # not /etc/rabbitmq's
export RABBITMQ_CONFIG_FILE=$DATA_DIR/rabbitmq.conf
export RABBITMQ_ADVANCED_CONFIG_FILE=$DATA_DIR/advanced.config
export RABBITMQ_ENABLED_PLUGINS_FILE=$DATA_DIR/enabled_plugins
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
: >"$RABBITMQ_CONF_ENV_FILE"
echo "[]." >"$RABBITMQ_ENABLED_PLUGINS_FILE"
echo "[]." >"$RABBITMQ_ADVANCED_CONFIG_FILE"
cat >"$RABBITMQ_CONFIG_FILE" <<EOF
listeners.tcp.default = 127.0.0.1:$PORT
log.file.level = info
log.console = false
EOF

# Our own epmd, in the foreground so that its pid is ours to stop.
if ! recorded_alive epmd epmd; then
  setsid epmd -address 127.0.0.1 -port "$EPMD_PORT" </dev/null >>"$DATA_DIR/log/epmd.out" 2>&1 &
  echo $! >"$RUN/epmd.pid"
fi

# The server script stays in the foreground as a shell that forwards SIGTERM to the Erlang VM.
setsid "$SERVER" </dev/null >>"$DATA_DIR/log/server.out" 2>&1 &
echo $! >"$RUN/server.pid"
say "server started (node $RABBITMQ_NODENAME)"

deadline=$(( $(date +%s) + START_TIMEOUT ))
until amqp_answers; do
  if ! recorded_alive server sh dash bash rabbitmq-server; then
    tail -n 30 "$DATA_DIR/log/server.out" >&2 || true
    die "rabbitmq-server exited before AMQP answered; logs in $DATA_DIR/log"
  fi
  (( $(date +%s) < deadline )) || die "AMQP did not answer within ${START_TIMEOUT}s; logs in $DATA_DIR/log"
  sleep 0.2
done
# The VM is the server script's child; remember it for rabbitmq-down.sh's final check.
beam=$(cat "/proc/$(<"$RUN/server.pid")/task/"*/children 2>/dev/null | tr ' ' '\n' | grep . | head -n1)
[[ -n $beam ]] && echo "$beam" >"$RUN/beam.pid"
say "AMQP answers on 127.0.0.1:$PORT"
echo "AMQP_URL=amqp://127.0.0.1:$PORT"
