/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helpers for driving an adapter through the real registry and loop: call a resource and run
 * the loop until it answers, or run the loop for a while. Used by tests that own a gw_loop and a
 * gw_registry (adapter unit tests, the GPIO VM program). Not part of the daemon.
 */
#ifndef GW_TEST_CALL_H
#define GW_TEST_CALL_H

#include "gw/loop.h"
#include "gw/registry.h"
#include "gw/value.h"

#include <stdbool.h>
#include <stdint.h>

struct gw_test_answer {
    bool done;              /* the resource answered */
    int rc;                 /* its code; GW_ERESOURCE: no such resource; GW_ETIMEDOUT: no answer */
    struct gw_value out;    /* its output (caller finalises) */
    char msg[512];
    struct gw_loop *loop;   /* internal */
};

/*
 * Calls resource name with input (taken; NULL = none) and runs loop until it answers, for at most
 * timeout_ms (a safety net, not a timing check). A call left unanswered is cancelled.
 */
struct gw_test_answer gw_test_call(struct gw_loop *loop, struct gw_registry *reg, const char *name,
                                   struct gw_value *input, unsigned timeout_ms);

/* Runs loop for about ms (lets events and timers fire). */
void gw_test_run_for(struct gw_loop *loop, uint64_t ms);

#endif
