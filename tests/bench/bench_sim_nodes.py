#!/usr/bin/python3
"""The control plane at 1,000 nodes, with simulated nodes.

A load generator for benchmarks only: it registers SIMULATED nodes in a
private etcd (loopback) - node records named sim-NNNN, labelled
kfleet.io/simulated=true, with usage records, pointing at an address where
nothing listens - so that one kfleet-scheduler can be measured with a
cluster of 1,000 nodes on one machine. No session is ever placed on them
here; never point this at a real cluster's etcd.

Measured at 10 nodes (the baseline, same run) and at --nodes (default
1,000): the time until the scheduler's view has every node (registration
to visible in GetClusterSummary), GetClusterSummary p50, listing every node
with ListNodes (all pages) p50, and a CreateSession that no node can take
(1 TiB of memory, more than any node has: placement filters every node
and answers RESOURCE_EXHAUSTED) p50. Figures, not pass/fail.

Usage: tests/bench/bench_sim_nodes.py [--nodes N] [--calls N]   (KF_BUILD_DIR: the build)
"""
import argparse
import json
import os
import statistics
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kfleet_harness as h  # noqa: E402

GiB = 1 << 30


def register(etcd, first, last):
    """Simulated nodes first..last-1: node, usage records (no lease)."""
    now = int(time.time() * 1000)
    for i in range(first, last):
        name = "sim-%04d" % i
        etcd.put("/kfleet/nodes/" + name, json.dumps({
            "id": name, "address": "127.0.0.1:1", "tls": False, "version": "simulated",
            "capacity": {"memory_bytes": 64 * GiB, "cpu_millis": 16000, "session_slots": 100},
            "labels": {"kfleet.io/simulated": "true"}, "started_unix_ms": now}))
        etcd.put("/kfleet/usage/" + name, json.dumps({
            "sessions": i % 50, "pool_ready": 2, "pool_target": 2, "memory_reserved_bytes": (i % 50) * GiB,
            "cpu_reserved_millis": (i % 50) * 1000, "creates": i, "updated_unix_ms": now}))


def p50_ms(fn, calls):
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(cpb, cluster, sessions, spb, n, calls):
    def summary():
        return cluster.GetClusterSummary(cpb.GetClusterSummaryRequest(), timeout=30)

    def list_all():
        token, seen = "", 0
        while True:
            r = cluster.ListNodes(cpb.ListNodesRequest(page_size=1000, page_token=token), timeout=30)
            seen += len(r.nodes)
            token = r.next_page_token
            if not token:
                return seen

    def no_fit():
        try:
            sessions.CreateSession(spb.CreateSessionRequest(limits=spb.Limits(memory_bytes=1 << 40)), timeout=30)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
    assert list_all() == n
    return {"summary": p50_ms(summary, calls), "list": p50_ms(list_all, max(calls // 4, 5)),
            "nofit": p50_ms(no_fit, calls)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    h.require_root()
    etcd = h.Etcd().start()
    sched = None
    try:
        sched = h.Scheduler(etcd.url).start()
        cpb, cgrpc = h.cluster_stubs()
        spb, sgrpc = h.stubs()
        ch = grpc.insecure_channel("unix:" + sched.sock)
        cluster, sessions = cgrpc.ClusterStub(ch), sgrpc.SessionsStub(ch)

        def seen():
            return cluster.GetClusterSummary(cpb.GetClusterSummaryRequest(), timeout=30).nodes
        figures = {}
        have = 0
        for n in (10, args.nodes):
            t0 = time.perf_counter()
            register(etcd, have, n)
            t_put = time.perf_counter()
            assert h.wait_for(lambda: seen() == n, timeout=120), seen()
            have = n
            figures[n] = measure(cpb, cluster, sessions, spb, n, args.calls)
            figures[n]["visible"] = (time.perf_counter() - t_put) * 1000
            figures[n]["register"] = (t_put - t0) * 1000
            print(f"simulated nodes {n}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in figures[n].items()))
        base, big = figures[10], figures[args.nodes]
        print()
        print(f"{'measurement (simulated nodes)':<52} {args.nodes:>9} {10:>9} {'ratio':>7}")
        for k, what in (("summary", "GetClusterSummary p50"), ("list", "ListNodes, every page, p50"),
                        ("nofit", "CreateSession no node fits (all filtered) p50"),
                        ("visible", "last registration -> visible in the view")):
            print(f"{what:<52} {big[k]:>6.2f} ms {base[k]:>6.2f} ms {big[k] / base[k]:>6.1f}x")
    finally:
        if sched:
            sched.close()
        etcd.close()


if __name__ == "__main__":
    main()
