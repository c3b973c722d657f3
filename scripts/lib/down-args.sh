# Sourced by rgw-down.sh and rabbitmq-down.sh: their one command line, `NAME DATA_DIR [--purge]`.
# `--help` prints the script's opening comment; otherwise sets DATA_DIR, PURGE and RUN, or says
# what is wrong (through the script's `die`).
parse_down_args() {  # parse_down_args SCRIPT ARGS...
  local script=$1 name; shift
  name=$(basename "$script")
  if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$script"
    exit 0
  fi
  [[ $# -ge 1 && $# -le 2 ]] || die "usage: $name DATA_DIR [--purge]  ($name --help explains)"
  [[ $1 != -* ]] || die "unknown option '$1' ($name --help explains)"
  DATA_DIR=$1
  PURGE=false
  if [[ $# -eq 2 ]]; then
    [[ $2 == --purge ]] || die "unknown option '$2'"
    PURGE=true
  fi
  RUN=$DATA_DIR/run
}
