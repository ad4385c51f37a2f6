/* cmd_bench.c - "kfleetctl bench": placeholder until the load generator
 * lands; the noun is registered so the command line is stable. */
#include <stdio.h>

#include "cmd_bench.h"

int kf_cmd_bench(int argc, char **argv, const kf_cli_globals *g) {
    (void)argc;
    (void)argv;
    (void)g;
    fprintf(stderr, "bench: not built yet\n");
    return KF_EXIT_USAGE;
}
