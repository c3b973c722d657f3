#!/usr/bin/env bash
# rgw-up.sh — a throwaway one-node Ceph cluster (1 monitor, 1 memstore OSD, no manager) with one
# radosgw, all on 127.0.0.1, no systemd, state kept in DATA_DIR.
#
# usage:  eval "$(scripts/rgw-up.sh DATA_DIR [PORT])"       PORT defaults to 7480
#
# Prints lines to eval: RGW_ENDPOINT, AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION and CEPH_CONF. Progress goes to stderr.
#
# Environment (all optional):
#   RGW_MEMSTORE_BYTES  RAM the memstore OSD may use (default 2 GiB; tests use 1 GiB)
#   RGW_USER            uid of the S3 user (default "tester")
#   RGW_ACCESS_KEY      its access key  (default: a fixed key for local use only)
#   RGW_SECRET_KEY      its secret key  (default: a fixed key for local use only)
#   RGW_FRONTEND        civetweb (default) or beast
#   RGW_EXTRA_CONF      extra lines for the radosgw section of ceph.conf
#   RGW_START_TIMEOUT   seconds to wait for S3 to answer (default 60)
#
# Why civetweb: radosgw 16.2 with the beast frontend aborts (boost continuation assert) on a
# DeleteObjects request to a bucket whose notifications match s3:ObjectRemoved:*. civetweb
# serves requests without coroutines and does not crash.
#
# Running it again on a live DATA_DIR only prints the settings; on a stopped DATA_DIR (see
# rgw-down.sh) it restarts the daemons, and memstore brings back the saved objects. A DATA_DIR
# keeps the port it was created with.
set -euo pipefail

die() { echo "rgw-up: $*" >&2; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: rgw-up.sh DATA_DIR [PORT]"
DATA_DIR=$1
PORT=${2:-7480}
MEMSTORE_BYTES=${RGW_MEMSTORE_BYTES:-2147483648}
S3_USER=${RGW_USER:-tester}
ACCESS_KEY=${RGW_ACCESS_KEY:-LOCALRGWACCESSKEY001}
SECRET_KEY=${RGW_SECRET_KEY:-local-rgw-secret-key-for-tests-only-0001}
FRONTEND_KIND=${RGW_FRONTEND:-civetweb}
START_TIMEOUT=${RGW_START_TIMEOUT:-60}

[[ $PORT =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$PORT'"
[[ $MEMSTORE_BYTES =~ ^[0-9]+$ ]] || die "RGW_MEMSTORE_BYTES must be a number of bytes"
# The settings are printed for eval: keep them free of shell metacharacters.
[[ $ACCESS_KEY =~ ^[A-Za-z0-9]+$ ]] || die "RGW_ACCESS_KEY may hold only letters and digits"
[[ $SECRET_KEY =~ ^[A-Za-z0-9/+=._-]+$ ]] || die "RGW_SECRET_KEY has characters unsafe for eval"

# --- Debian packages -------------------------------------------------------------------------
PACKAGES=(ceph-mon ceph-osd radosgw ceph-common uuid-runtime)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    die "missing Debian packages: ${missing[*]}
install them with: sudo apt-get update && sudo apt-get install --no-install-recommends -y ${missing[*]}"
  fi
  echo "rgw-up: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install --no-install-recommends -y -qq "${missing[@]}" >&2
fi

mkdir -p "$DATA_DIR"
DATA_DIR=$(cd "$DATA_DIR" && pwd)
CONF=$DATA_DIR/ceph.conf
RUN=$DATA_DIR/run
LOGS=$DATA_DIR/log
export CEPH_CONF=$CONF
STARTED_AT=$(date +%s%N)

say() { echo "rgw-up [$(( ($(date +%s%N) - STARTED_AT) / 1000000 )) ms] $*" >&2; }

# A pid file names a live daemon only if that pid is not a zombie (an init that does not reap
# leaves them behind) and still runs a ceph binary (pids get reused).
daemon_alive() {
  local pid_file=$RUN/$1.pid pid state comm
  [[ -s $pid_file ]] || return 1
  pid=$(<"$pid_file")
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]] || return 1
  comm=$(<"/proc/$pid/comm") || return 1
  [[ $comm == ceph-mon || $comm == ceph-osd || $comm == radosgw ]]
}

# Run a daemon in the foreground (-f) in its own session so that it outlives this script; its
# stdout/stderr (where assert banners land) go to log/NAME.out. radosgw -f writes no pid file,
# so this script writes them all.
launch() {
  local name=$1; shift
  daemon_alive "$name" && return 0
  setsid "$@" -f </dev/null >>"$LOGS/$name.out" 2>&1 &
  local pid=$!
  echo "$pid" >"$RUN/$name.pid"
  sleep 0.1
  if ! daemon_alive "$name"; then
    tail -n 20 "$LOGS/$name.out" >&2 || true
    die "$name exited right after start; logs in $LOGS"
  fi
}

s3_answers() {
  python3 - "$PORT" <<'PY' 2>/dev/null
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2)
except urllib.error.HTTPError:
    pass  # any HTTP status means the gateway is serving
PY
}

print_settings() {
  echo "RGW_ENDPOINT=http://127.0.0.1:$PORT"
  echo "AWS_ENDPOINT_URL_S3=http://127.0.0.1:$PORT"
  echo "AWS_ACCESS_KEY_ID=$ACCESS_KEY"
  echo "AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
  echo "AWS_REGION=default"
  echo "CEPH_CONF=$CONF"
}

loopback_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_conf() {
  local fsid=$1 mon_port=$2 frontend
  case $FRONTEND_KIND in
    civetweb) frontend="civetweb port=127.0.0.1:$PORT num_threads=64" ;;
    beast) frontend="beast endpoint=127.0.0.1:$PORT" ;;
    *) die "RGW_FRONTEND must be civetweb or beast, got '$FRONTEND_KIND'" ;;
  esac
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind msgr1 = false
keyring = $DATA_DIR/keyring
run dir = $RUN
admin socket = $RUN/\$name.asok
pid file = $RUN/\$name.pid.ceph
log file = $LOGS/\$name.log
log to stderr = false
err to stderr = true
# one OSD: pools of size 1, few placement groups, no autoscaler
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
# radosgw creates ~8 pools at first start; with the default 1 s per osdmap commit that alone
# takes ~10 s, with these it takes well under one
paxos propose interval = 0.01
paxos min wait = 0.01

[mon]
mon data = $DATA_DIR/\$name
mon data avail warn = 2
mon data avail crit = 1

[osd]
osd data = $DATA_DIR/\$name
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
# a clean stop must unmount, or memstore never writes its contents to disk
osd fast shutdown = false
# S3 allows 1024-byte keys; RGW names RADOS objects <bucket marker>_<key>, so leave room.
osd max object name len = 2048
osd max object namespace len = 64

[client.rgw.gw]
rgw frontends = $frontend
rgw data = $DATA_DIR/rgw
rgw dns name = localhost
rgw enable usage log = false
${RGW_EXTRA_CONF:-}
EOF
}

bootstrap() {
  local fsid mon_port keyring=$DATA_DIR/keyring
  fsid=$(uuidgen)
  mon_port=$(loopback_free_port)
  mkdir -p "$RUN" "$LOGS" "$DATA_DIR/mon.a" "$DATA_DIR/osd.0" "$DATA_DIR/rgw"
  write_conf "$fsid" "$mon_port"
  # One keyring holds every key; `ceph-mon --mkfs` imports it, so no `ceph auth` calls later.
  ceph-authtool --create-keyring "$keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$keyring" --gen-key -n osd.0 --cap mon 'allow profile osd' \
    --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
  ceph-authtool "$keyring" --gen-key -n client.rgw.gw --cap mon 'allow rw' \
    --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DATA_DIR/monmap" \
    >/dev/null
  ceph-mon --mkfs -i a --monmap "$DATA_DIR/monmap" --keyring "$keyring" \
    >>"$LOGS/mkfs.out" 2>&1 || die "ceph-mon --mkfs failed; see $LOGS/mkfs.out"
  launch mon.a ceph-mon -i a
  say "monitor up"
  local osd_uuid
  osd_uuid=$(uuidgen)
  ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid" --no-mon-config >>"$LOGS/mkfs.out" 2>&1 \
    || die "ceph-osd --mkfs failed; see $LOGS/mkfs.out"
  ceph --connect-timeout 30 osd new "$osd_uuid" 0 >/dev/null \
    || die "could not register the OSD with the monitor; see $LOGS"
  say "OSD registered"
}

if [[ -f $CONF ]]; then
  # An existing cluster keeps the port in its ceph.conf.
  PORT=$(sed -n 's/^rgw frontends = .*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$CONF")
  [[ -n $PORT ]] || die "cannot read the port from $CONF; rgw-down.sh $DATA_DIR --purge and retry"
  if daemon_alive mon.a && daemon_alive osd.0 && daemon_alive client.rgw.gw && s3_answers; then
    say "already running"
    print_settings
    exit 0
  fi
elif [[ -d $RUN ]]; then
  die "$DATA_DIR holds a half-made cluster (no ceph.conf); run rgw-down.sh $DATA_DIR --purge"
fi

daemon_alive client.rgw.gw || ! s3_answers \
  || die "something else already answers on 127.0.0.1:$PORT"

if [[ ! -f $CONF ]]; then
  bootstrap
else
  launch mon.a ceph-mon -i a
fi
launch osd.0 ceph-osd -i 0
launch client.rgw.gw radosgw -n client.rgw.gw
say "daemons started"

deadline=$(( $(date +%s) + START_TIMEOUT ))
until s3_answers; do
  daemon_alive client.rgw.gw || { tail -n 30 "$LOGS/client.rgw.gw.out" >&2 || true
    die "radosgw exited before S3 answered; logs in $LOGS"; }
  (( $(date +%s) < deadline )) || die "S3 did not answer within ${START_TIMEOUT}s; logs in $LOGS"
  sleep 0.1
done
say "S3 answers on 127.0.0.1:$PORT"

if ! radosgw-admin -n client.admin user info --uid "$S3_USER" >/dev/null 2>&1; then
  radosgw-admin -n client.admin user create --uid "$S3_USER" --display-name "$S3_USER" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >/dev/null \
    || die "could not create the S3 user; see $LOGS"
  say "S3 user $S3_USER created"
fi
print_settings
