/* SPDX-License-Identifier: Apache-2.0 */
/* Test helpers: a resource call run to its answer, and the loop run for a while (gw_test_call.h). */
#include "gw_test_call.h"

#include "gw/error.h"

#include <stdio.h>
#include <string.h>

static void on_done(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    struct gw_test_answer *a = arg;
    a->done = true;
    a->rc = rc;
    if (out)
        gw_value_copy(&a->out, out);
    snprintf(a->msg, sizeof a->msg, "%s", msg ? msg : "");
    gw_loop_stop(a->loop);
}

static void stop_loop(void *arg)
{
    gw_loop_stop(arg);
}

struct gw_test_answer gw_test_call(struct gw_loop *loop, struct gw_registry *reg, const char *name,
                                   struct gw_value *input, unsigned timeout_ms)
{
    struct gw_test_answer a = {.out = GW_VALUE_INIT_NULL, .loop = loop};
    struct gw_res *res = gw_registry_find(reg, name, strlen(name));
    if (!res) {
        gw_value_fini(input ? input : &a.out);
        a.rc = GW_ERESOURCE;
        snprintf(a.msg, sizeof a.msg, "resource %s not registered", name);
        return a;
    }
    struct gw_timer *t = gw_timer_new(loop, stop_loop, loop);
    gw_timer_start(t, timeout_ms);
    struct gw_call *c = gw_registry_call(reg, res, input, NULL, on_done, &a);
    gw_loop_run(loop);
    gw_timer_free(t);
    if (!a.done) {
        gw_call_cancel(c);
        a.rc = GW_ETIMEDOUT;
        snprintf(a.msg, sizeof a.msg, "no answer");
    }
    return a;
}

void gw_test_run_for(struct gw_loop *loop, uint64_t ms)
{
    struct gw_timer *t = gw_timer_new(loop, stop_loop, loop);
    gw_timer_start(t, ms);
    gw_loop_run(loop);
    gw_timer_free(t);
}
