#!/usr/bin/env bash
# rgw-up.sh — a throwaway one-node Ceph cluster (1 monitor, 1 memstore OSD, no manager) with one
# radosgw, all on 127.0.0.1, no systemd, state kept in DATA_DIR.
#
# usage:  eval "$(scripts/rgw-up.sh DATA_DIR [PORT])"       PORT defaults to 7480
#         scripts/rgw-up.sh --help
#
# Prints lines to eval: RGW_ENDPOINT, AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION and CEPH_CONF. Progress goes to stderr.
#
# Environment (all optional):
#   RGW_MEMSTORE_BYTES  RAM the memstore OSD may use (default 2 GiB; tests use 1 GiB)
#   RGW_USER            uid of the S3 user (default "tester")
#   RGW_ACCESS_KEY      its access key  (default: a fixed key for local use only)
#   RGW_SECRET_KEY      its secret key  (default: a fixed key for local use only)
#   RGW_FRONTEND        civetweb or beast (default: civetweb on Ceph 16, beast from 17 on)
#   RGW_FRONTEND_OPTIONS  options appended to the frontend line (default "tcp_nodelay=1")
#   RGW_EXTRA_CONF      extra lines for the radosgw section of ceph.conf
#   RGW_START_TIMEOUT   seconds to wait for S3 to answer (default 60)
#   RGW_CEPH_ROOT       a Debian root holding another Ceph (scripts/ceph18-root.sh makes one with
#                       Debian 13's Ceph 18): the daemons and Ceph tools run chrooted in it, each
#                       in a private mount namespace with DATA_DIR bind-mounted at the same path,
#                       so paths, admin sockets and loopback ports look the same from the host.
#                       Needs root. Default: the host's Ceph.
#
# Why civetweb on 16.2: radosgw 16.2 with the beast frontend aborts (boost continuation assert)
# on a DeleteObjects request to a bucket whose notifications match s3:ObjectRemoved:*. civetweb
# serves requests without coroutines and does not crash. Reef (18) has no civetweb any more, and
# its beast does not have that crash.
#
# Why tcp_nodelay=1: without it both frontends send an XML answer (GetObjectTagging, listings,
# ACLs) as two small writes under Nagle's algorithm, and the client's delayed ACK holds the
# second one back: every such call on a kept-alive connection took 44 ms instead of about 2 ms,
# on 16.2 (civetweb) and 18.2 (beast) alike (`make bench-rgw` measures both settings).
#
# Running it again on a live DATA_DIR only prints the settings; on a stopped DATA_DIR (see
# rgw-down.sh) it restarts the daemons, and memstore brings back the saved objects. A DATA_DIR
# keeps the port and the Ceph (host or root) it was created with. If a start fails, the daemons
# this run started are stopped again.
set -euo pipefail

die() { echo "rgw-up: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

if [[ ${1:-} == -h || ${1:-} == --help ]]; then usage; exit 0; fi
[[ $# -ge 1 && $# -le 2 ]] || die "usage: rgw-up.sh DATA_DIR [PORT]  (rgw-up.sh --help explains)"
[[ $1 != -* ]] || die "unknown option '$1' (rgw-up.sh --help explains)"
DATA_DIR=$1
PORT=${2:-7480}
MEMSTORE_BYTES=${RGW_MEMSTORE_BYTES:-2147483648}
S3_USER=${RGW_USER:-tester}
ACCESS_KEY=${RGW_ACCESS_KEY:-LOCALRGWACCESSKEY001}
SECRET_KEY=${RGW_SECRET_KEY:-local-rgw-secret-key-for-tests-only-0001}
FRONTEND_KIND=${RGW_FRONTEND:-}
START_TIMEOUT=${RGW_START_TIMEOUT:-60}
CEPH_ROOT=${RGW_CEPH_ROOT:-}

[[ $PORT =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$PORT'"
[[ $MEMSTORE_BYTES =~ ^[0-9]+$ ]] || die "RGW_MEMSTORE_BYTES must be a number of bytes"
# The settings are printed for eval: keep them free of shell metacharacters.
[[ $ACCESS_KEY =~ ^[A-Za-z0-9]+$ ]] || die "RGW_ACCESS_KEY may hold only letters and digits"
[[ $SECRET_KEY =~ ^[A-Za-z0-9/+=._-]+$ ]] || die "RGW_SECRET_KEY has characters unsafe for eval"

mkdir -p "$DATA_DIR"
DATA_DIR=$(cd "$DATA_DIR" && pwd)
CONF=$DATA_DIR/ceph.conf
RUN=$DATA_DIR/run
LOGS=$DATA_DIR/log
# Which Ceph made this DATA_DIR (CEPH_VERSION=, CEPH_ROOT=); a restart keeps using that one.
RELEASE_FILE=$DATA_DIR/ceph-release
recorded() { [[ -f $RELEASE_FILE ]] && sed -n "s/^$1=//p" "$RELEASE_FILE"; }
if [[ -z $CEPH_ROOT ]]; then
  CEPH_ROOT=$(recorded CEPH_ROOT) || true
  [[ -z $CEPH_ROOT ]] || echo "rgw-up: $DATA_DIR was made with the Ceph in $CEPH_ROOT" >&2
fi
[[ -z $CEPH_ROOT ]] || CEPH_ROOT=$(cd "$CEPH_ROOT" 2>/dev/null && pwd) \
  || die "RGW_CEPH_ROOT=${RGW_CEPH_ROOT:-$(recorded CEPH_ROOT)} does not exist; make it with scripts/ceph18-root.sh"
DPKG_ADMIN=()
[[ -z $CEPH_ROOT ]] || DPKG_ADMIN=(--admindir="$CEPH_ROOT/var/lib/dpkg")

# --- Debian packages -------------------------------------------------------------------------
PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query "${DPKG_ADMIN[@]}" -W -f='${Status}' "$pkg" 2>/dev/null \
    | grep -q "install ok installed" || missing+=("$pkg")
done
if [[ -n $CEPH_ROOT ]]; then
  [[ ${#missing[@]} -eq 0 && -x $CEPH_ROOT/usr/bin/radosgw ]] \
    || die "$CEPH_ROOT is not a root with Ceph (missing: ${missing[*]:-radosgw}); make one with scripts/ceph18-root.sh"
  [[ $(id -u) -eq 0 ]] || die "running Ceph from RGW_CEPH_ROOT needs root (chroot, mount namespace)"
elif [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    die "missing Debian packages: ${missing[*]}
install them with: sudo apt-get update && sudo apt-get install --no-install-recommends -y ${missing[*]}"
  fi
  echo "rgw-up: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install --no-install-recommends -y -qq "${missing[@]}" >&2
fi

export CEPH_CONF=$CONF
STARTED_AT=$(date +%s%N)

say() { echo "rgw-up [$(( ($(date +%s%N) - STARTED_AT) / 1000000 )) ms] $*" >&2; }

# The Ceph release: the radosgw package's upstream version (18.2.7 of 18.2.7+ds-1+deb13u1).
CEPH_VERSION=$(dpkg-query "${DPKG_ADMIN[@]}" -W -f='${Version}' radosgw | sed 's/^[0-9]*://; s/[+~-].*//')
CEPH_MAJOR=${CEPH_VERSION%%.*}
[[ $CEPH_MAJOR =~ ^[0-9]+$ ]] || die "cannot tell the Ceph version (radosgw package: '$CEPH_VERSION')"
made_with=$(recorded CEPH_VERSION) || true
if [[ -n $made_with && $made_with != "$CEPH_VERSION" ]]; then
  die "$DATA_DIR was made with Ceph $made_with, this run would use $CEPH_VERSION${CEPH_ROOT:+ (from $CEPH_ROOT)}; rgw-down.sh $DATA_DIR --purge and retry"
fi

# Every Ceph program runs through CEPH_EXEC: nothing on the host; with a root, a private mount
# namespace holding /proc, /dev and DATA_DIR (at its own path) and a chroot into the root. The
# mounts vanish with the process, so nothing stays mounted in the root. Every step execs (as do
# setsid and env), so a daemon started through it keeps the pid the shell saw.
CEPH_EXEC=()
if [[ -n $CEPH_ROOT ]]; then
  # shellcheck disable=SC2016  # expanded by the inner shell
  CEPH_EXEC=(unshare --mount --propagation private -- /bin/sh -c '
    set -e
    root=$1 data=$2; shift 2
    mkdir -p "$root$data"   # the mount point; rgw-down.sh --purge removes it
    mount --bind /proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --bind "$data" "$root$data"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      LANG=C.UTF-8 CEPH_CONF="$CEPH_CONF" "$@"' ceph-root "$CEPH_ROOT" "$DATA_DIR")
fi
ceph_run() { "${CEPH_EXEC[@]}" "$@"; }

# A pid is a live daemon only if it is not a zombie (an init that does not reap leaves them
# behind) and runs a ceph daemon's executable (pids get reused). The executable, not
# /proc/PID/comm: Reef's radosgw renames its main thread (to notif-worker0).
pid_exists() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}
pid_is_daemon() {
  local exe
  pid_exists "$1" || return 1
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}   # its package was upgraded under the running daemon
  exe=${exe##*/}
  [[ $exe == ceph-mon || $exe == ceph-osd || $exe == radosgw ]]
}
daemon_alive() {
  local pid_file=$RUN/$1.pid
  [[ -s $pid_file ]] && pid_is_daemon "$(<"$pid_file")"
}

# The daemons this run started: if the start fails, they are killed again (nothing leaks).
STARTED_PIDS=()
STARTED_NAMES=()
on_exit() {
  local status=$? i pid tenths
  [[ $status -ne 0 && ${#STARTED_PIDS[@]} -gt 0 ]] || return 0
  echo "rgw-up: start failed; stopping the daemons this run started (${STARTED_NAMES[*]})" >&2
  for i in "${!STARTED_PIDS[@]}"; do
    pid=${STARTED_PIDS[$i]}
    pid_exists "$pid" && kill -KILL "$pid" 2>/dev/null
    tenths=50
    while pid_exists "$pid" && (( tenths-- > 0 )); do sleep 0.1; done
    rm -f "$RUN/${STARTED_NAMES[$i]}.pid"
  done
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run a daemon in the foreground (-f) in its own session so that it outlives this script; its
# stdout/stderr (where assert banners land) go to log/NAME.out. radosgw -f writes no pid file,
# so this script writes them all.
launch() {
  local name=$1; shift
  daemon_alive "$name" && return 0
  setsid "${CEPH_EXEC[@]}" "$@" -f </dev/null >>"$LOGS/$name.out" 2>&1 &
  local pid=$! tenths=40
  disown "$pid"   # no "Killed" job notice from this shell if a failed start kills it
  echo "$pid" >"$RUN/$name.pid"
  STARTED_PIDS+=("$pid")
  STARTED_NAMES+=("$name")
  # Until the exec chain reaches the daemon, the pid runs a wrapper; give it a moment.
  while ! daemon_alive "$name" && pid_exists "$pid" && (( tenths-- > 0 )); do sleep 0.05; done
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

# The directory holding the object classes (libcls_rgw.so and friends), as the daemons see it.
# Debian's 18.2 build has a relative default osd_class_dir, so its OSD cannot load cls_version
# and radosgw stops with "Couldn't init storage provider"; an absolute one is right everywhere.
class_dir() {
  local lib
  for lib in "$CEPH_ROOT"/usr/lib/*/rados-classes/libcls_rgw.so \
             "$CEPH_ROOT"/usr/lib64/rados-classes/libcls_rgw.so \
             "$CEPH_ROOT"/usr/lib/rados-classes/libcls_rgw.so; do
    [[ -e $lib ]] || continue
    lib=${lib#"$CEPH_ROOT"}
    echo "${lib%/*}"
    return 0
  done
  return 1
}

write_conf() {
  local fsid=$1 mon_port=$2 frontend classes options
  classes=$(class_dir) || die "no rados-classes/libcls_rgw.so under ${CEPH_ROOT:-}/usr/lib*"
  case $FRONTEND_KIND in
    civetweb) frontend="civetweb port=127.0.0.1:$PORT num_threads=64" ;;
    beast) frontend="beast endpoint=127.0.0.1:$PORT" ;;
  esac
  options=${RGW_FRONTEND_OPTIONS-tcp_nodelay=1}  # set but empty: no options
  if [[ -n $options ]]; then frontend+=" $options"; fi
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
osd class dir = $classes
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

new_uuid() { cat /proc/sys/kernel/random/uuid; }

bootstrap() {
  local fsid mon_port keyring=$DATA_DIR/keyring
  fsid=$(new_uuid)
  mon_port=$(loopback_free_port)
  mkdir -p "$RUN" "$LOGS" "$DATA_DIR/mon.a" "$DATA_DIR/osd.0" "$DATA_DIR/rgw"
  write_conf "$fsid" "$mon_port"
  printf 'CEPH_VERSION=%s\nCEPH_ROOT=%s\n' "$CEPH_VERSION" "$CEPH_ROOT" >"$RELEASE_FILE"
  # One keyring holds every key; `ceph-mon --mkfs` imports it, so no `ceph auth` calls later.
  ceph_run ceph-authtool --create-keyring "$keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph_run ceph-authtool "$keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph_run ceph-authtool "$keyring" --gen-key -n osd.0 --cap mon 'allow profile osd' \
    --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
  ceph_run ceph-authtool "$keyring" --gen-key -n client.rgw.gw --cap mon 'allow rw' \
    --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
  ceph_run monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DATA_DIR/monmap" \
    >/dev/null
  ceph_run ceph-mon --mkfs -i a --monmap "$DATA_DIR/monmap" --keyring "$keyring" \
    >>"$LOGS/mkfs.out" 2>&1 || die "ceph-mon --mkfs failed; see $LOGS/mkfs.out"
  launch mon.a ceph-mon -i a
  say "monitor up"
  local osd_uuid
  osd_uuid=$(new_uuid)
  ceph_run ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid" --no-mon-config >>"$LOGS/mkfs.out" 2>&1 \
    || die "ceph-osd --mkfs failed; see $LOGS/mkfs.out"
  ceph_run ceph --connect-timeout 30 osd new "$osd_uuid" 0 >/dev/null \
    || die "could not register the OSD with the monitor; see $LOGS"
  say "OSD registered"
}

# The frontend this Ceph has: civetweb on 16 (see the top), beast from 17 on. Reef (18) dropped
# civetweb; asked for it, radosgw would run with no listener at all.
if [[ -z $FRONTEND_KIND ]]; then
  if (( CEPH_MAJOR <= 16 )); then FRONTEND_KIND=civetweb; else FRONTEND_KIND=beast; fi
fi
case $FRONTEND_KIND in
  beast) ;;
  civetweb)
    (( CEPH_MAJOR < 18 )) \
      || die "RGW_FRONTEND=civetweb: Ceph $CEPH_VERSION has no civetweb frontend (removed in Reef, 18); use beast, its default" ;;
  *) die "RGW_FRONTEND must be civetweb or beast, got '$FRONTEND_KIND'" ;;
esac

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

if ! ceph_run radosgw-admin -n client.admin user info --uid "$S3_USER" >/dev/null 2>&1; then
  ceph_run radosgw-admin -n client.admin user create --uid "$S3_USER" --display-name "$S3_USER" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >/dev/null \
    || die "could not create the S3 user; see $LOGS"
  say "S3 user $S3_USER created"
fi
print_settings
