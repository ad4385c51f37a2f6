#!/usr/bin/env bash
# The main job, end to end on this machine: installs dependencies, builds
# kfleet (./build), brings up a local cluster with scripts/cluster.sh (etcd,
# one kfleet-scheduler, two kfleet-agents registered in etcd; see that
# script for where it lives and its ports) and runs a demo through the
# scheduler with kfleetctl: it creates several sessions, shows which node
# each one landed on (both nodes get some), and on one session of each node
# runs code that prints, draws a matplotlib chart and writes a CSV to
# /mnt/data; both files are downloaded to ./demo-out/<node>/ and checked
# (PNG signature, CSV header and rows), and state is shown to persist
# between executions. The demo deletes its sessions at the end; the cluster
# stays up for you to use (`eval "$(scripts/cluster.sh env)"`, then
# kfleetctl) until `scripts/cluster.sh down`, or give --down to stop it
# at the end. Running the demo again reuses a running cluster.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
down=0
case "${1:-}" in
  "") ;;
  --down) down=1 ;;
  -h | --help)
    echo "Usage: scripts/demo.sh [--down]   (--down: stop the local cluster at the end)"
    exit 0
    ;;
  *)
    echo "scripts/demo.sh: unknown argument '$1' (usage: scripts/demo.sh [--down])" >&2
    exit 2
    ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/demo.sh: run as root (sandboxes need namespaces, cgroups, loop devices)" >&2
  exit 2
fi
"$here/scripts/deps.sh"
"$here/scripts/build.sh" "$here/build"

cluster=("$here/scripts/cluster.sh")
"${cluster[@]}" up --build-dir "$here/build"
eval "$("${cluster[@]}" env)" # KFLEET_SERVER: the scheduler's address
ctl=("$here/build/tools/kfleetctl" --server "$KFLEET_SERVER")
out="$here/demo-out"
rm -rf "$out"
mkdir -p "$out"

sids=()
cleanup() {
  local rc=$? sid
  for sid in "${sids[@]}"; do
    "${ctl[@]}" session delete "$sid" >/dev/null 2>&1 || true
  done
  if [ "$down" = 1 ]; then
    "${cluster[@]}" down || rc=1
  else
    echo "the local cluster keeps running: 'scripts/cluster.sh status' shows it," \
      "'scripts/cluster.sh down' stops it and cleans up"
  fi
  exit "$rc"
}
trap cleanup EXIT
fail() {
  echo "scripts/demo.sh: $*" >&2
  exit 1
}

# The node a session is on, from `kfleetctl session get`.
node_of() { "${ctl[@]}" session get "$1" | awk '$1 == "node:" { print $2 }'; }

echo "== session create x4 (through the scheduler at $KFLEET_SERVER)"
for _ in 1 2 3 4; do
  sid=$("${ctl[@]}" session create --memory 1G --timeout 60s)
  sids+=("$sid")
  echo "$sid -> node $(node_of "$sid")"
done
echo "== session list"
"${ctl[@]}" session list

# One session on each node runs the demo.
declare -A on_node=()
for sid in "${sids[@]}"; do
  n=$(node_of "$sid")
  [ -n "$n" ] || fail "session $sid has no node in 'kfleetctl session get'"
  [ -n "${on_node[$n]:-}" ] || on_node[$n]=$sid
done
[ "${#on_node[@]}" -ge 2 ] ||
  fail "all sessions landed on node(s) ${!on_node[*]}: expected both agents to get some (see scripts/cluster.sh status and its logs)"

for n in $(printf '%s\n' "${!on_node[@]}" | sort); do
  sid=${on_node[$n]}
  dest="$out/$n"
  mkdir -p "$dest"
  echo "== exec on $sid (node $n)"
  "${ctl[@]}" exec --save-dir "$dest" "$sid" - <<'PY'
import numpy as np, pandas as pd, matplotlib.pyplot as plt
x = np.linspace(0, 6.28, 100)
df = pd.DataFrame({"x": x, "sin": np.sin(x)})
print("rows:", len(df), "max:", round(df["sin"].max(), 3))
df.to_csv("/mnt/data/sine.csv", index=False)
plt.plot(df["x"], df["sin"]); plt.title("kfleet demo")
plt.savefig("/mnt/data/sine.png")
plt.show()
PY
  echo "== files of $sid"
  "${ctl[@]}" file list "$sid"
  "${ctl[@]}" file download "$sid" sine.csv "$dest/sine.csv"
  "${ctl[@]}" file download "$sid" sine.png "$dest/sine.png"
  echo "== state persists in $sid"
  "${ctl[@]}" exec "$sid" 'print("df still here:", df.shape)'

  # The checks: every PNG (downloaded and displayed) is a PNG; the CSV has
  # its header and 100 rows.
  pngs=("$dest"/*.png)
  [ "${#pngs[@]}" -ge 2 ] || fail "expected the downloaded and the displayed PNG in $dest, found: ${pngs[*]}"
  for f in "${pngs[@]}"; do
    [ "$(head -c 8 "$f" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
      fail "$f is not a PNG (wrong signature)"
  done
  [ "$(head -n 1 "$dest/sine.csv")" = "x,sin" ] || fail "$dest/sine.csv: header is not 'x,sin'"
  [ "$(wc -l <"$dest/sine.csv")" -eq 101 ] || fail "$dest/sine.csv: expected 101 lines (header + 100 rows)"
done

echo "== session delete"
for sid in "${sids[@]}"; do
  "${ctl[@]}" session delete "$sid"
done
sids=()
summary=""
for n in $(printf '%s\n' "${!on_node[@]}" | sort); do
  summary+=" $n: $(wc -c <"$out/$n/sine.csv") byte CSV, $(wc -c <"$out/$n/sine.png") byte PNG;"
done
echo "demo ok:${summary%;} (in $out)"
