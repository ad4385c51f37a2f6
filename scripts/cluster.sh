#!/usr/bin/env bash
# A local kfleet cluster on this machine, for trying kfleet out and for the
# demo: one etcd (Debian's etcd-server), one kfleet-scheduler and N
# kfleet-agents (default 2) that register in that etcd, all on 127.0.0.1.
#
#   scripts/cluster.sh up     starts etcd, the agents and the scheduler in the
#                             background and waits until every agent is
#                             registered and the scheduler answers. Running it
#                             again with a cluster up says so and does nothing;
#                             a cluster left half-dead (a crash, kill -9, a
#                             reboot) is cleaned up first and started afresh.
#   scripts/cluster.sh down   stops the scheduler, then the agents, purges
#                             every session and warm sandbox of each agent
#                             (kfleet-agent --purge), stops etcd, removes the
#                             cluster's state and checks that no process,
#                             mount or loop device of it is left. Logs stay.
#   scripts/cluster.sh status what runs, with pids, addresses and logs.
#   scripts/cluster.sh env    prints `export KFLEET_SERVER=...` for eval, so
#                             kfleetctl talks to the cluster's scheduler.
#
# Everything lives under one directory (--dir, default /var/lib/kfleet-local,
# or $KFLEET_CLUSTER_DIR): logs/ (one log per process), pids/, run/ (unix
# sockets), etcd/ (etcd's data), agent-N/ (each agent's state dir, volumes).
# Ports are consecutive from --port (default 23790, or $KFLEET_CLUSTER_PORT):
# etcd clients BASE, etcd peers BASE+1, scheduler BASE+2, agent N BASE+2+N;
# all listen on 127.0.0.1 only. The binaries come from a kfleet build dir
# (--build-dir, default ./build of this checkout, or $KFLEET_BUILD_DIR); this
# script never builds (scripts/build.sh does). Must run as root: agents make
# namespaces, cgroups and loop-mounted volumes.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
prog="scripts/cluster.sh"

usage() {
  cat <<EOF
Usage: $prog up|down|status|env [OPTIONS]
  --dir DIR          cluster directory (default /var/lib/kfleet-local, \$KFLEET_CLUSTER_DIR)
  --build-dir DIR    kfleet build dir with the binaries (default $here/build, \$KFLEET_BUILD_DIR)
  --port BASE        first of the ports (default 23790, \$KFLEET_CLUSTER_PORT):
                     etcd BASE, etcd peer BASE+1, scheduler BASE+2, agent N BASE+2+N
  --agents N         number of agents for 'up' (default 2)
  --pool N           warm sandboxes per agent for 'up' (default 1)
  --uid-base N       first session uid; agent N uses 10000 uids from BASE+(N-1)*10000
                     (default 1500000)
EOF
}

die() {
  echo "$prog: $*" >&2
  exit 1
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  up | down | status | env) ;;
  -h | --help | help)
    usage
    exit 0
    ;;
  *)
    echo "$prog: unknown command '$cmd'" >&2
    usage >&2
    exit 2
    ;;
esac

dir=${KFLEET_CLUSTER_DIR:-/var/lib/kfleet-local}
build=${KFLEET_BUILD_DIR:-$here/build}
port=${KFLEET_CLUSTER_PORT:-23790}
agents=2
pool=1
uid_base=1500000
while [ $# -gt 0 ]; do
  case "$1" in
    --dir | --build-dir | --port | --agents | --pool | --uid-base)
      [ $# -ge 2 ] || die "$1 needs a value (see --help)"
      case "$1" in
        --dir) dir=$2 ;;
        --build-dir) build=$2 ;;
        --port) port=$2 ;;
        --agents) agents=$2 ;;
        --pool) pool=$2 ;;
        --uid-base) uid_base=$2 ;;
      esac
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
for v in port agents pool uid_base; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v/_/-} must be a number, not '${!v}'"
done
{ [ "$agents" -ge 1 ] && [ "$agents" -le 9 ]; } || die "--agents must be 1..9, not $agents"
{ [ "$port" -ge 1024 ] && [ $((port + 2 + agents)) -le 65535 ]; } ||
  die "--port $port: the ports $port..$((port + 2 + agents)) must lie in 1024..65535"
[ "$(id -u)" -eq 0 ] || die "run as root (agents need namespaces, cgroups, loop devices)"
case "$dir" in
  /*) ;;
  *) dir="$(pwd)/$dir" ;;
esac
dir=${dir%/}
{ [ -n "$dir" ] && [ "$dir" != / ]; } || die "--dir must not be /"
# An agent's state dir may be at most 72 characters (its unix sockets live below it).
[ ${#dir} -le 64 ] || die "--dir '$dir' is too long (at most 64 characters): pick a shorter path"

env_file=$dir/cluster.env
logs=$dir/logs
pids=$dir/pids
run=$dir/run

# ---- the cluster's recorded settings ------------------------------------
# 'up' writes them to cluster.env, so status/down act on what was started
# (not on what today's options say).
load_env() {
  [ -f "$env_file" ] || return 1
  # shellcheck source=/dev/null
  . "$env_file"
  port=$KF_PORT agents=$KF_AGENTS pool=$KF_POOL uid_base=$KF_UID_BASE
  # the binaries it was started with, unless that build is gone
  [ -d "$KF_BUILD_DIR" ] && build=$KF_BUILD_DIR
  return 0
}

save_env() {
  {
    printf 'KF_PORT=%q\nKF_AGENTS=%q\nKF_POOL=%q\nKF_UID_BASE=%q\nKF_BUILD_DIR=%q\n' \
      "$port" "$agents" "$pool" "$uid_base" "$build"
  } >"$env_file.tmp"
  mv "$env_file.tmp" "$env_file"
}

etcd_url() { echo "http://127.0.0.1:$port"; }
sched_addr() { echo "127.0.0.1:$((port + 2))"; }
agent_addr() { echo "127.0.0.1:$((port + 2 + $1))"; }
node_name() { echo "local-$1"; }

bin() {
  local p
  case "$1" in
    kfleet-agent) p=$build/agent/kfleet-agent ;;
    kfleet-sandbox) p=$build/agent/sandbox/kfleet-sandbox ;;
    kfleet-scheduler) p=$build/scheduler/src/kfleet-scheduler ;;
    kfleetctl) p=$build/tools/kfleetctl ;;
  esac
  [ -x "$p" ] || die "$1 not found at $p: build first (scripts/build.sh $build) or pass --build-dir"
  echo "$p"
}

agent_args() {
  local i=$1
  echo "$(bin kfleet-agent)" --sandbox "$(bin kfleet-sandbox)" \
    --state-dir "$dir/agent-$i" --listen "$run/agent-$i.sock" \
    --node-name "$(node_name "$i")" --uid-base $((uid_base + (i - 1) * 10000)) \
    --pool "$pool" --etcd "$(etcd_url)" \
    --listen-tcp "$(agent_addr "$i")" --advertise "$(agent_addr "$i")"
}

ctl() { "$(bin kfleetctl)" --server "unix:$run/scheduler.sock" "$@"; }

etcdctl_() { ETCDCTL_API=3 etcdctl --endpoints="$(etcd_url)" --command-timeout=3s "$@"; }

# ---- processes -----------------------------------------------------------
# A pid file names a process of this cluster only while that process is
# alive and has this cluster's directory in its command line (so a pid
# reused by something else after a crash is never signalled).
alive() {
  local name=$1 pid
  [ -s "$pids/$name.pid" ] || return 1
  pid=$(cat "$pids/$name.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  ours "$pid" || return 1
  echo "$pid"
}

# ours PID: the process runs etcd or a kfleet binary with this cluster's
# directory in its command line (a zombie's command line is empty).
ours() {
  local exe cmdline
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  case "${exe##*/}" in
    etcd | kfleet-agent | kfleet-scheduler | kfleet-sandbox) ;;
    *) return 1 ;;
  esac
  cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$dir/"* ]]
}

# start NAME CMD...: runs CMD in its own session (a Ctrl-C in the terminal
# that started it does not reach it), stdin from /dev/null, output appended
# to logs/NAME.log, pid in pids/NAME.pid. fd 9 (our lock) is not inherited.
start() {
  local name=$1
  shift
  rm -f "$pids/$name.pid"
  echo "== $(date -u +%FT%TZ) $prog up: $*" >>"$logs/$name.log"
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner bash
  setsid -f bash -c 'echo $$ >"$0"; exec "$@"' "$pids/$name.pid" "$@" \
    </dev/null >>"$logs/$name.log" 2>&1 9>&-
  local _
  for _ in $(seq 1 50); do
    [ -s "$pids/$name.pid" ] && return 0
    sleep 0.1
  done
  die "$name did not start (see $logs/$name.log)"
}

# wait_for NAME TIMEOUT_S WHAT CMD...: polls CMD until it succeeds; fails
# with the log's tail if NAME dies or the time is up.
wait_for() {
  local name=$1 timeout=$2 what=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name" >/dev/null; then
      tail -n 20 "$logs/$name.log" >&2 || true
      echo "$prog: $name exited before $what (log: $logs/$name.log)" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$logs/$name.log" >&2 || true
      echo "$prog: $name: no $what after ${timeout}s (log: $logs/$name.log)" >&2
      return 1
    fi
    sleep 0.2
  done
}

# stop NAME: SIGTERM, then SIGKILL after 30 s.
stop() {
  local name=$1 pid _
  if pid=$(alive "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      alive "$name" >/dev/null || break
      sleep 0.2
    done
    if alive "$name" >/dev/null; then
      echo "$prog: $name (pid $pid) ignored SIGTERM for 30s: killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$pids/$name.pid"
}

names() {
  local i
  echo etcd
  for i in $(seq 1 "$agents"); do echo "agent-$i"; done
  echo scheduler
}

port_busy() { [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }

# The sandboxes the agents' state dirs hold (sb/<sbid>/), collected before
# a purge removes them, so leftovers() can look for their cgroups.
sbids=()
collect_sbids() {
  local d
  for d in "$dir"/agent-*/sb/sb-*; do
    [ -d "$d" ] && sbids+=("${d##*/}")
  done
  return 0
}

# What of this cluster is still on the machine: its processes (alive()),
# the processes and cgroups of the sandboxes in sbids, mounts below the
# dir, loop devices backed by files below it. One line per leftover;
# empty output means clean.
leftovers() {
  local pid args argv0 sb cg pats=()
  # one ps and one grep over /proc: a fork per process is slow on a busy machine
  while read -r pid args; do
    argv0=${args%% *}
    case "${argv0##*/}" in
      etcd | kfleet-agent | kfleet-scheduler | kfleet-sandbox)
        [[ $args == *"$dir/"* ]] && echo "process $pid: ${args:0:160}"
        ;;
    esac
  done < <(ps -eo pid=,args=)
  for sb in "${sbids[@]}"; do pats+=(-e "/kfleet/$sb"); done
  if [ ${#pats[@]} -gt 0 ]; then
    grep -lF "${pats[@]}" /proc/[0-9]*/cgroup 2>/dev/null | while read -r cg; do
      pid=${cg#/proc/}
      pid=${pid%/cgroup}
      echo "process $pid in a sandbox's cgroup: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-100)"
    done
  fi
  for sb in "${sbids[@]}"; do
    for cg in /sys/fs/cgroup/*/kfleet/"$sb" /sys/fs/cgroup/kfleet/"$sb"; do
      [ -d "$cg" ] && echo "cgroup $cg"
    done
  done
  awk -v d="$dir/" 'index($5, d) == 1 { print "mount " $5 }' /proc/self/mountinfo
  losetup -l -n -O NAME,BACK-FILE 2>/dev/null | awk -v d="$dir/" 'index($2, d) == 1 { print "loop device " $1 " on " $2 }'
  return 0
}

# ---- commands ------------------------------------------------------------
do_down() {
  if ! load_env; then
    echo "no cluster in $dir"
    return 0
  fi
  local i
  stop scheduler
  for i in $(seq 1 "$agents"); do stop "agent-$i"; done
  collect_sbids
  for i in $(seq 1 "$agents"); do
    [ -d "$dir/agent-$i" ] || continue
    # Without the agent running, sandboxes keep going: --purge (same state
    # dir) re-adopts them and tears each one down (kernel, cgroup, volume).
    # It does not touch etcd (the agent's lease went with its clean stop or
    # lapses within its TTL; etcd's data is removed below anyway).
    # shellcheck disable=SC2046
    if ! $(agent_args "$i") --purge >>"$logs/agent-$i.log" 2>&1; then
      echo "$prog: purging agent-$i failed (see $logs/agent-$i.log)" >&2
    fi
  done
  stop etcd
  local left
  left=$(leftovers)
  if [ -n "$left" ]; then
    echo "$left" >&2
    die "down: the above is left of the cluster in $dir; see $logs/ (state kept for inspection)"
  fi
  rm -rf --one-file-system "$dir/etcd" "$run" "$pids" "$env_file" "$dir"/agent-*
  echo "cluster in $dir stopped and cleaned up; logs kept in $logs/"
}

do_status() {
  if ! load_env; then
    echo "no cluster in $dir"
    return 3
  fi
  local name pid where up=0 total=0
  echo "kfleet local cluster in $dir (binaries: $build)"
  for name in $(names); do
    total=$((total + 1))
    case "$name" in
      etcd) where=$(etcd_url) ;;
      scheduler) where="$(sched_addr), unix:$run/scheduler.sock" ;;
      agent-*) where="node $(node_name "${name#agent-}") at $(agent_addr "${name#agent-}"), state $dir/$name" ;;
    esac
    if pid=$(alive "$name"); then
      up=$((up + 1))
      printf '  %-10s running  pid %-8s %s\n' "$name" "$pid" "$where"
    else
      printf '  %-10s STOPPED  %-12s %s\n' "$name" "" "$where"
    fi
  done
  echo "  logs: $logs/{$(names | paste -sd, -)}.log"
  if alive etcd >/dev/null; then
    echo "  registered nodes: $(etcdctl_ get --prefix --keys-only /kfleet/nodes/ 2>/dev/null |
      sed -n 's|^/kfleet/nodes/||p' | paste -sd' ' -)"
  fi
  if alive scheduler >/dev/null; then
    echo "  kfleetctl: export KFLEET_SERVER=$(sched_addr)   (or kfleetctl --server $(sched_addr))"
    ctl session list || true
  fi
  if [ "$up" -eq "$total" ]; then
    return 0
  fi
  echo "some parts are not running: '$prog down' cleans up, '$prog up' starts afresh"
  return 1
}

do_up() {
  if load_env; then
    local name running=0 total=0
    for name in $(names); do
      total=$((total + 1))
      alive "$name" >/dev/null && running=$((running + 1))
    done
    if [ "$running" -eq "$total" ]; then
      echo "a cluster is already running in $dir:"
      do_status
      return 0
    fi
    echo "a stale cluster is in $dir ($running of $total processes running): cleaning it up"
    do_down
    # the options of this call, not the stale cluster's, apply from here
    build=$opt_build port=$opt_port agents=$opt_agents pool=$opt_pool uid_base=$opt_uid_base
  fi
  [ -x /usr/bin/etcd ] || die "etcd is not installed: apt-get install etcd-server etcd-client (scripts/deps.sh does)"
  command -v etcdctl >/dev/null || die "etcdctl is not installed: apt-get install etcd-client"
  local i p
  for i in kfleet-agent kfleet-sandbox kfleet-scheduler kfleetctl; do bin "$i" >/dev/null; done
  for p in $(seq "$port" $((port + 2 + agents))); do
    port_busy "$p" && die "port $p on this machine is in use: pick other ports with --port BASE (BASE..BASE+$((2 + agents)) must be free)"
  done
  local left
  left=$(leftovers)
  if [ -n "$left" ]; then
    echo "$left" >&2
    die "processes, mounts or loop devices of an earlier cluster are still in $dir: stop them first"
  fi
  mkdir -p "$logs" "$pids" "$run"
  chmod 0700 "$dir"
  save_env
  # Whatever fails from here (a die, a timeout), nothing is left half up.
  trap 'echo "$prog: up failed: stopping what was started" >&2; do_down >&2 || true' EXIT

  local peer="http://127.0.0.1:$((port + 1))"
  start etcd /usr/bin/etcd --name local --data-dir "$dir/etcd" \
    --listen-client-urls "$(etcd_url)" --advertise-client-urls "$(etcd_url)" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "local=$peer"
  wait_for etcd 30 "answer on $(etcd_url)" etcdctl_ endpoint health

  for i in $(seq 1 "$agents"); do
    # shellcheck disable=SC2046
    start "agent-$i" $(agent_args "$i")
  done
  # Agents first: the scheduler lists the registered nodes when it starts.
  for i in $(seq 1 "$agents"); do
    # shellcheck disable=SC2016 # $0 and $1 belong to the inner bash
    wait_for "agent-$i" 120 "registration in etcd" \
      bash -c '[ -n "$(ETCDCTL_API=3 etcdctl --endpoints="$0" get --print-value-only "$1")" ]' \
      "$(etcd_url)" "/kfleet/nodes/$(node_name "$i")"
  done

  start scheduler "$(bin kfleet-scheduler)" --etcd "$(etcd_url)" \
    --listen "$run/scheduler.sock" --listen-tcp "$(sched_addr)"
  wait_for scheduler 60 "answer on $(sched_addr)" ctl session list
  trap - EXIT
  echo "cluster up in $dir"
  do_status
}

opt_build=$build opt_port=$port opt_agents=$agents opt_pool=$pool opt_uid_base=$uid_base
if [ ! -d "$dir" ]; then
  case "$cmd" in
    up) mkdir -p "$dir" ;;
    down) echo "no cluster in $dir" && exit 0 ;;
    status) echo "no cluster in $dir" && exit 3 ;;
    env) die "no cluster in $dir: start one with '$prog up'" ;;
  esac
fi
# One command at a time per cluster directory.
exec 9>"$dir/.lock"
flock -n 9 || die "another '$prog' is working on $dir; wait for it to finish"

case "$cmd" in
  up) do_up ;;
  down) do_down ;;
  status) do_status ;;
  env)
    load_env || die "no cluster in $dir: start one with '$prog up'"
    echo "export KFLEET_SERVER=$(sched_addr)"
    ;;
esac
