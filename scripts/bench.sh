#!/usr/bin/env bash
# Benchmarks of the node agent, each beside its baseline measured in the
# same run (figures, not pass/fail):
#  (a) cold session start (agent with no pool) vs a bare ipykernel started
#      and made ready by jupyter_client;
#  (b) warm-pool create p50/p99;
#  (c) `1+1` Execute round trip through the agent vs a C ZMQ client talking
#      straight to a bare local ipykernel;
#  (d) agent memory per idle session (and each session's own kernel memory);
#  (e) kfleetctl plan's simulation: 1,000,000 sessions over 1,000 nodes with
#      the real placement library vs the naive placement (placement_naive.c),
#      the baseline run on fewer sessions and scaled (its cost per decision
#      does not depend on the load);
# then the cluster's figures: scripts/bench-scheduler.sh: (g) creates/s
# through kfleet-scheduler with etcd and warm pools, (h) `1+1` through the
# scheduler vs the agent; and (f) scheduler leader failover time vs the
# leader lease TTL (tests/bench/bench_failover.py; FAILOVER_TTL, FAILOVER_N);
# (i) the scheduler's cluster view and calls with 1,000 simulated nodes
# (a load generator for benchmarks only) vs 10 (tests/bench/bench_sim_nodes.py).
# Placement decisions/s (in-process, 100/1,000/10,000 nodes) are printed by
# build/scheduler/placement/kf-bench-placement (README).
# Usage: [PARTS=agent,scheduler] scripts/bench.sh [BUILD_DIR]   (root; builds if needed)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
[ -x "$build/agent/kfleet-agent" ] || "$here/scripts/build.sh" "$build"
PARTS=${PARTS:-agent,scheduler}
if [[ ",$PARTS," != *,agent,* ]]; then
  if [[ ",$PARTS," == *,scheduler,* ]]; then
    "$here/scripts/bench-scheduler.sh" "$build"
    KF_BUILD_DIR="$build" /usr/bin/python3 "$here/tests/bench/bench_failover.py"
    KF_BUILD_DIR="$build" /usr/bin/python3 "$here/tests/bench/bench_sim_nodes.py"
  fi
  exit 0
fi
COLD_N=${COLD_N:-8} WARM_N=${WARM_N:-30} RTT_N=${RTT_N:-400} MEM_N=${MEM_N:-10}
work=$(mktemp -d /var/tmp/kfbench-XXXXXX)
ctl="$build/tools/kfleetctl"
agent_pid=
stop_agent() {
  if [ -n "$agent_pid" ]; then
    kill "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
    "$build/agent/kfleet-agent" --state-dir "$work/s" --listen "$work/a.sock" --purge >/dev/null 2>&1 || true
    agent_pid=
  fi
}
trap 'stop_agent; rm -rf "$work"' EXIT
start_agent() { # POOL
  "$build/agent/kfleet-agent" --state-dir "$work/s" --listen "$work/a.sock" --pool "$1" \
    --uid-base 500000 >>"$work/agent.log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 1 600); do "$ctl" -s "unix:$work/a.sock" session list >/dev/null 2>&1 && return; sleep 0.1; done
  echo "agent did not start" >&2; cat "$work/agent.log" >&2; exit 1
}
wait_pool() { # N: warm sandboxes recorded on disk with no session id yet
  for _ in $(seq 1 1200); do
    n=$( (grep -l '"id":""' "$work"/s/sb/*/session.json 2>/dev/null || true) | wc -l)
    [ "$n" -ge "$1" ] && return
    sleep 0.25
  done
}
get() { awk -v k="$1" '$1 == k {print $2; exit}' "$work/results"; }
# The median of a figure that appears on several lines.
median() { awk -v k="$1" '$1 == k {print $2}' "$work/results" | sort -g | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}'; }
: >"$work/results"

echo "== (a) baseline: bare ipykernel started and made ready by jupyter_client ($COLD_N runs)"
PYDEVD_DISABLE_FILE_VALIDATION=1 /usr/bin/python3 - "$COLD_N" >>"$work/results" 2>>"$work/baseline.log" <<'PY'
import statistics, sys, time
from jupyter_client.manager import KernelManager
runs = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    km = KernelManager(kernel_name="python3")
    km.kernel_cmd = ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    km.start_kernel()
    kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=60)
    runs.append((time.perf_counter() - t0) * 1000)
    kc.stop_channels(); km.shutdown_kernel(now=True)
print("bare_start.p50 %.3f ms" % statistics.median(runs))
PY
echo "== (a) second baseline: bare ipykernel started and made ready by a C ZMQ client"
for _ in $(seq 1 "$COLD_N"); do "$ctl" bench direct --count 1 | grep start_ready; done >>"$work/results"
echo "== (a) cold create through the agent (no pool, $COLD_N runs)"
start_agent 0
"$ctl" -s "unix:$work/a.sock" bench create --count "$COLD_N" | sed 's/^create/cold/' >>"$work/results"
stop_agent

echo "== (b) warm-pool create ($WARM_N runs, pool $WARM_N)"
start_agent "$WARM_N"
wait_pool "$WARM_N"
"$ctl" -s "unix:$work/a.sock" bench create --count "$WARM_N" | sed 's/^create/warm/' >>"$work/results"
# (c) alternates every round trip through the agent with one straight to a
# bare kernel, so both see the same machine at the same moments (a shared
# 2-core box drifts more between phases than within one).
echo "== (c) 1+1 round trip through the agent, alternating with its baseline ($RTT_N runs each)"
"$ctl" -s "unix:$work/a.sock" bench exec --with-direct --count "$RTT_N" >>"$work/results"
echo "== (d) memory per idle session ($MEM_N sessions)"
"$ctl" -s "unix:$work/a.sock" bench memory --count "$MEM_N" --agent-pid "$agent_pid" >>"$work/results"
stop_agent

echo "== (e) plan: 1,000,000 simulated sessions over 1,000 nodes, vs the naive placement"
[ -x "$build/tools/plan/kf-bench-plan" ] || cmake --build "$build" --target kf-bench-plan >/dev/null
"$build/tools/plan/kf-bench-plan" 1000000 1000 20000 | tee -a "$work/results"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
echo
printf '%-44s %12s %12s %8s %s\n' "measurement" "kfleet" "baseline" "ratio" "target"
printf '%-44s %9s ms %9s ms %8s %s\n' "(a) cold start p50" "$(get cold.p50)" "$(get bare_start.p50)" \
  "$(ratio "$(get cold.p50)" "$(get bare_start.p50)")" "<= 1.10x"
printf '%-44s %9s ms %9s ms %8s %s\n' "(a) cold start p50 vs bare kernel + C client" "$(get cold.p50)" \
  "$(median direct.start_ready)" "$(ratio "$(get cold.p50)" "$(median direct.start_ready)")" "(stricter)"
printf '%-44s %9s ms %12s %8s %s\n' "(b) warm create p50" "$(get warm.p50)" "-" "-" "<= 2 ms"
printf '%-44s %9s ms %12s %8s %s\n' "(b) warm create p99" "$(get warm.p99)" "-" "-" "<= 10 ms"
printf '%-44s %9s ms %9s ms %8s %s\n' "(c) 1+1 round trip p50" "$(get exec.p50)" "$(get direct.p50)" \
  "$(ratio "$(get exec.p50)" "$(get direct.p50)")" "<= 1.25x"
printf '%-44s %9s ms %9s ms %8s\n' "(c) 1+1 round trip p99" "$(get exec.p99)" "$(get direct.p99)" \
  "$(ratio "$(get exec.p99)" "$(get direct.p99)")"
printf '%-44s %8s KiB\n' "(d) agent memory per idle session" "$(get memory.agent_per_session)"
printf '%-44s %8s MiB\n' "(d) kernel (cgroup) memory per idle session" "$(get memory.session_cgroup_mean)"
printf '%-44s %10s s %10s s %8s %s\n' "(e) plan: 1M sessions, 1000 nodes" "$(get plan.seconds)" \
  "$(get naive.extrapolated_seconds)" "$(ratio "$(get plan.seconds)" "$(get naive.extrapolated_seconds)")" "<= 5 s"
echo "warm hits: $(awk '$1=="warm.warm_hits"{print $2" of "$4}' "$work/results"); raw figures:"
sed 's/^/  /' "$work/results"

if [[ ",$PARTS," == *,scheduler,* ]]; then
  echo
  "$here/scripts/bench-scheduler.sh" "$build"
  echo
  echo "== (f) scheduler leader failover: kill -9 the leader, time until the other replica leads"
  KF_BUILD_DIR="$build" /usr/bin/python3 "$here/tests/bench/bench_failover.py"
  echo
  echo "== (i) the scheduler with 1,000 simulated nodes vs 10 (tests/bench/bench_sim_nodes.py)"
  KF_BUILD_DIR="$build" /usr/bin/python3 "$here/tests/bench/bench_sim_nodes.py"
fi
