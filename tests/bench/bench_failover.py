#!/usr/bin/python3
"""Scheduler leader failover time against the leader lease TTL.

Starts a private etcd (loopback) and two kfleet-scheduler replicas with
--leader-ttl TTL, then ROUNDS times: kill -9 the leader, and measure the
time until the other replica holds the leader key ("leader") and until it
has answered a call after that ("serving"; every replica serves calls all
the time, so this is the leader time plus one round trip). The killed
replica is started again (same --id) before the next round, as a follower.
Prints p50 / max next to the TTL and their ratio (target: <= 2x TTL).
Figures, not pass/fail.

Usage: tests/bench/bench_failover.py [--ttl S] [--rounds N]   (KF_BUILD_DIR: the build)
"""
import argparse
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kfleet_harness as h  # noqa: E402

KEY = "/kfleet/scheduler/leader"


def leader(etcd):
    kv = etcd.get(KEY)
    return kv["value"] if kv else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ttl", type=int, default=int(os.environ.get("FAILOVER_TTL", 3)))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("FAILOVER_N", 8)))
    o = ap.parse_args()
    etcd = h.Etcd().start()
    ids = ("bench-a", "bench-b")
    scheds = {i: h.Scheduler(etcd.url, extra=["--id", i, "--leader-ttl", str(o.ttl)]) for i in ids}
    lead, serve = [], []
    try:
        for s in scheds.values():
            s.start()
        if not h.wait_for(lambda: leader(etcd) in ids, timeout=30, step=0.02):
            sys.exit("no leader elected")
        for r in range(o.rounds):
            old = leader(etcd)
            new = ids[1 - ids.index(old)]
            # let the follower settle (its own lease granted, watch running)
            time.sleep(0.5)
            t0 = time.monotonic()
            scheds[old].proc.send_signal(signal.SIGKILL)
            scheds[old].proc.wait()
            if not h.wait_for(lambda: leader(etcd) == new, timeout=o.ttl * 10, step=0.01):
                sys.exit(f"round {r}: {new} did not take over")
            t1 = time.monotonic()
            scheds[new].client().list()
            t2 = time.monotonic()
            lead.append(t1 - t0)
            serve.append(t2 - t0)
            print(f"round {r}: {old} killed, {new} leader after {lead[-1]:.3f} s, serving after {serve[-1]:.3f} s",
                  flush=True)
            scheds[old].start()
    finally:
        for s in scheds.values():
            s.close()
        etcd.close()
    for name, v in (("leader", lead), ("serving", serve)):
        p50, mx = statistics.median(v), max(v)
        print(f"failover.{name}.p50 {p50:.3f} s  ({p50 / o.ttl:.2f}x TTL)")
        print(f"failover.{name}.max {mx:.3f} s  ({mx / o.ttl:.2f}x TTL)")
    print(f"failover.ttl {o.ttl} s  rounds {o.rounds}  target <= 2.00x TTL")


if __name__ == "__main__":
    main()
