/* bench_plan.c - kf-bench-plan: how fast the planner simulates. Runs
 * SESSIONS simulated sessions (default 1,000,000) over NODES nodes (default
 * 1,000) at about 90 % load with the real placement library, then the same
 * workload with the naive placement (placement_naive.c: filter and sort
 * every node per decision) on a smaller number of sessions, since it is
 * O(N log N) per decision, and prints both as figures. No pass/fail.
 *
 *   kf-bench-plan [SESSIONS [NODES [BASELINE_SESSIONS]]]
 *
 * Output lines are "name value unit", read by scripts/bench.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "plan.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs c and prints its figures; *seconds = the wall time. */
static int run(const kf_plan_config *c, uint32_t nodes, kf_plan_engine engine, const char *name, double *seconds) {
    kf_plan_result r;
    kf_error err = {0};
    double t0 = now_s();
    if (kf_plan_run(c, nodes, engine, &r, &err) < 0) {
        fprintf(stderr, "kf-bench-plan: %s\n", err.msg);
        return 1;
    }
    double dt = now_s() - t0;
    *seconds = dt;
    printf("%s.sessions %llu\n", name, (unsigned long long)r.arrived);
    printf("%s.events %llu\n", name, (unsigned long long)r.events);
    printf("%s.seconds %.3f s\n", name, dt);
    printf("%s.sessions_per_s %.0f\n", name, (double)r.arrived / dt);
    printf("%s.rejection %.4f\n", name, r.rejection_rate);
    printf("%s.peak_util %.3f\n", name, r.peak_util);
    kf_plan_result_done(&r);
    return 0;
}

int main(int argc, char **argv) {
    unsigned long sessions = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    unsigned long nodes = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000;
    unsigned long base = argc > 3 ? strtoul(argv[3], NULL, 10) : 20000;
    if (sessions < 1 || sessions > KF_PLAN_SESSIONS_MAX || nodes < 1 || nodes > KF_PLAN_NODES_MAX || base < 1 ||
        base > sessions) {
        fprintf(stderr, "usage: kf-bench-plan [SESSIONS (1..%u) [NODES (1..%u) [BASELINE_SESSIONS <= SESSIONS]]]\n",
                KF_PLAN_SESSIONS_MAX, KF_PLAN_NODES_MAX);
        return 2;
    }
    /* Nodes of 128 GiB, 64 cpu, 100 slots (the slots bind); sessions 512 MiB or 2 GiB, 0.5 or
     * 1 cpu, held 10 min on average (exponential) plus a 20 min idle expiry
     * for a third of them. The rate is set for ~90 % of the slots. */
    kf_plan_config c;
    kf_plan_config_defaults(&c);
    c.seed = 7;
    c.ngroups = 1;
    c.groups[0] = (kf_plan_group){.name = "n", .count = (uint32_t)nodes, .memory = 128ull << 30, .cpu = 64000,
                                  .slots = 100};
    c.nshapes = 2;
    c.shapes[0] = (kf_plan_shape){.memory = 512ull << 20, .cpu = 500, .weight = 3};
    c.shapes[1] = (kf_plan_shape){.memory = 2ull << 30, .cpu = 1000, .weight = 1};
    c.duration = (kf_plan_dist){KF_PLAN_EXPONENTIAL, 600, 0};
    c.idle = (kf_plan_dist){KF_PLAN_FIXED, 1200, 0};
    c.abandon = 1.0 / 3;
    double hold = kf_plan_mean_hold(&c);
    c.npoints = 1;
    c.curve[0].rate = 0.9 * 100.0 * (double)nodes / hold;
    c.duration_s = KF_PLAN_DURATION_MAX_S;
    c.step_s = 3600;
    c.max_sessions = (uint32_t)sessions;
    printf("config: %lu nodes, rate %.1f/s, mean hold %.0f s, %lu sessions (baseline %lu)\n", nodes, c.curve[0].rate,
           hold, sessions, base);
    double plan_s, naive_s;
    if (run(&c, 0, KF_PLAN_ENGINE_INDEX, "plan", &plan_s))
        return 1;
    c.max_sessions = (uint32_t)base;
    if (run(&c, 0, KF_PLAN_ENGINE_NAIVE, "naive", &naive_s))
        return 1;
    /* The naive pick costs the same whatever the load (it scores every
     * node), so its rate scales to the full run. */
    printf("naive.extrapolated_seconds %.1f s\n", naive_s * (double)sessions / (double)base);
    printf("speedup %.1fx\n", naive_s * (double)sessions / (double)base / plan_s);
    return 0;
}
