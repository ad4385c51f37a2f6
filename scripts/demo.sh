#!/usr/bin/env bash
# The main job, end to end on this machine: installs dependencies, builds
# kfleet, starts a local kfleet-agent, and runs a demo session through
# kfleetctl: code that prints, draws a matplotlib chart and writes a CSV to
# /mnt/data; both files are downloaded to ./demo-out/. The agent is stopped
# and its sessions removed at the end unless --keep is given.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
keep=0
[ "${1:-}" = "--keep" ] && keep=1
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/demo.sh: run as root (sandboxes need namespaces, cgroups, loop devices)" >&2
  exit 2
fi
"$here/scripts/deps.sh"
"$here/scripts/build.sh" "$here/build"

state=/var/lib/kfleet-demo
sock=/run/kfleet/demo.sock
agent=("$here/build/agent/kfleet-agent" --state-dir "$state" --listen "$sock" --pool 1)
ctl=("$here/build/tools/kfleetctl" --server "unix:$sock")
out="$here/demo-out"
mkdir -p "$out"

"${agent[@]}" >"$out/agent.log" 2>&1 &
agent_pid=$!
cleanup() {
  if [ "$keep" = 0 ]; then
    kill "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
    "${agent[@]}" --purge >>"$out/agent.log" 2>&1 || true
  else
    echo "agent left running (pid $agent_pid); stop it with: kill $agent_pid && ${agent[*]} --purge"
  fi
}
trap cleanup EXIT
for _ in $(seq 1 300); do
  "${ctl[@]}" session list >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== session create"
sid=$("${ctl[@]}" session create --memory 1G --timeout 60s)
echo "$sid"
echo "== exec"
"${ctl[@]}" exec --save-dir "$out" "$sid" - <<'PY'
import numpy as np, pandas as pd, matplotlib.pyplot as plt
x = np.linspace(0, 6.28, 100)
df = pd.DataFrame({"x": x, "sin": np.sin(x)})
print("rows:", len(df), "max:", round(df["sin"].max(), 3))
df.to_csv("/mnt/data/sine.csv", index=False)
plt.plot(df["x"], df["sin"]); plt.title("kfleet demo")
plt.savefig("/mnt/data/sine.png")
plt.show()
PY
echo "== files"
"${ctl[@]}" file list "$sid"
"${ctl[@]}" file download "$sid" sine.csv "$out/sine.csv"
"${ctl[@]}" file download "$sid" sine.png "$out/sine.png"
echo "== state persists"
"${ctl[@]}" exec "$sid" 'print("df still here:", df.shape)'
"${ctl[@]}" session delete "$sid"
echo "demo ok: $(wc -c <"$out/sine.csv") byte CSV and $(wc -c <"$out/sine.png") byte PNG in $out"
