/* cmd_bench.h - "kfleetctl bench": the load generator's entry point. */
#ifndef KF_CMD_BENCH_H
#define KF_CMD_BENCH_H

#include "kfleetctl.h"

/* kf_cmd_bench - run "kfleetctl bench ...". argv[0] is "bench"; g holds
 * the global options (server, token, output format). Returns the process
 * exit code. */
int kf_cmd_bench(int argc, char **argv, const kf_cli_globals *g);

#endif
