/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Store-and-forward glue of the daemon: recordings (resources sampled into a server bucket at an
 * interval) go into the SQLite store, and the store is drained to the broker over the uplink session
 * whenever it is ready. A row leaves the store only after the broker's OK for it; a row whose answer
 * was lost is sent again, carrying the same "_id" so the receiver can de-duplicate.
 * Loop thread only.
 */
#ifndef GW_FORWARD_H
#define GW_FORWARD_H

#include "gw/loop.h"
#include "gw/registry.h"
#include "gw/session.h"
#include "gw/store.h"

struct gw_forward;

struct gw_recording {
    const char *bucket;         /* server bucket id (borrowed for gw_forward_new) */
    const char **resources;     /* resource names sampled into each row */
    size_t n_resources;
    unsigned interval_ms;
};

struct gw_forward_config {
    unsigned window;            /* rows in flight at once (default 256) */
    unsigned timeout_ms;        /* per-row answer timeout (default 10000) */
    unsigned max_rate;          /* rows per second sent from the store, 0 = no limit */
};

/*
 * Starts forwarding: registers the "$gateway/store" resource, arms the recordings and the store's
 * commit timer, and drains the store whenever session is ready. store, session and registry are
 * borrowed and must outlive the forwarder. Returns 0 or a GW_E code.
 */
int gw_forward_new(struct gw_loop *loop, struct gw_registry *reg, struct gw_store *store,
                   struct gw_session *session, const struct gw_forward_config *cfg,
                   const struct gw_recording *recs, size_t n_recs, struct gw_forward **out);

/* Stops the recordings and the drain, flushes the store (commits what was taken), frees. */
void gw_forward_free(struct gw_forward *f);

/* To be called from the session's state callback. */
void gw_forward_on_session_state(struct gw_forward *f, enum gw_session_state st);

#endif
