/* self_drain.h - the agent's drain on SIGTERM (--drain-on-stop); see
 * self_drain.c. */
#ifndef KF_AGENT_SELF_DRAIN_H
#define KF_AGENT_SELF_DRAIN_H

#include "session.h"

#include <signal.h>

/* kf_self_drain - with --drain-on-stop and a registry: cordon the node, ask
 * for its drain, and wait (serving) until its sessions are gone, the drain
 * ended, the configured time passed, or another signal of `stop` (blocked
 * in every thread) arrives. Returns at once otherwise. Called from the main
 * thread after SIGTERM, before anything stops. */
void kf_self_drain(kf_agent *a, const sigset_t *stop);

#endif
