/* cmd_plan.h - what the two files of "kfleetctl plan" share: the what-if
 * verbs of cmd_plan_cluster.c (against the live cluster) that cmd_plan.c's
 * verb table dispatches to, and the bounded file reader. Internal to tools/.
 */
#ifndef KF_CMD_PLAN_H
#define KF_CMD_PLAN_H

#include <stddef.h>

#include "kfleetctl.h"

int kf_plan_verb_drain(int argc, char **argv, const kf_cli_globals *g);
int kf_plan_verb_lose(int argc, char **argv, const kf_cli_globals *g);
int kf_plan_verb_fit(int argc, char **argv, const kf_cli_globals *g);

/* kf_plan_read_file - the whole of `path` (a regular file of at most
 * KF_PLAN_INPUT_MAX bytes), NUL-terminated, into *out (caller frees).
 * Returns 0, or prints why not and returns KF_EXIT_USAGE. */
int kf_plan_read_file(const char *cmd, const char *path, char **out, size_t *len);

#endif
