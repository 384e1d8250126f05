/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Store-and-forward (forward.h). Three parts, all on the loop thread:
 * - recordings: a timer per recording samples the last known values of its resources into one PSON
 *   map {"ts": wall ms, "<resource>": value|null, ...} and puts it into the store (stream
 *   "bucket:<id>", so order is kept per bucket);
 * - the commit timer: drives the store's group commit (gw_store_poll);
 * - the drain: while the session is ready, up to `window` rows are in flight as WRITE_BUCKET (or
 *   the row's action) calls that want an answer. OK → ack (the row is deleted); any error → nack
 *   (sent again later, with the same "_id"). A link drop fails every call in flight (the session
 *   guarantees it), so nothing waits forever and nothing is acked without the broker's OK.
 */
#include "forward.h"
#include "gw/error.h"
#include "gw/log.h"
#include "gw/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rec {
    struct gw_forward *f;
    char *bucket;
    char *stream;
    char **resources;
    size_t n;
    unsigned interval_ms;
    struct gw_timer *timer;
};

struct gw_forward {
    struct gw_loop *loop;
    struct gw_registry *reg;
    struct gw_store *store;
    struct gw_session *session;
    struct gw_forward_config cfg;
    struct rec *recs;
    size_t n_recs;
    struct gw_timer *commit_timer;
    struct gw_timer *drain_timer;
    unsigned inflight;
    bool ready;
    bool draining;              /* inside gw_store_next: no re-entry */
    uint64_t sent_this_second;
    uint64_t second_start_ms;
    uint64_t refused_logged;    /* store-refused count already reported */
    uint32_t store_res;
    bool full_logged;
    int put_error;              /* last error of gw_store_put (logged once), 0 after a success */
    int commit_error;           /* same for the commit timer */
};

struct sent {
    struct gw_forward *f;
    uint64_t id;
};

/* --- Recording --- */

static void record_tick(void *arg)
{
    struct rec *r = arg;
    struct gw_forward *f = r->f;
    uint8_t stackbuf[1024];
    struct gw_pson_writer w;
    /* Measure first, then write into a buffer of the right size. */
    for (int pass = 0; pass < 2; pass++) {
        uint8_t *buf = pass == 0 ? NULL : stackbuf;
        size_t cap = 0;
        if (pass == 1) {
            if (w.len > sizeof stackbuf)
                buf = gw_malloc(w.len);
            cap = w.len;
        }
        gw_pson_writer_init(&w, buf, cap);
        gw_pson_put_map(&w, 1 + r->n);
        gw_pson_put_cstr(&w, "ts");
        gw_pson_put_uint(&w, gw_loop_wall_ms());
        for (size_t i = 0; i < r->n; i++) {
            gw_pson_put_cstr(&w, r->resources[i]);
            struct gw_res *res = gw_registry_find(f->reg, r->resources[i], strlen(r->resources[i]));
            bool stale = false;
            struct gw_value v;
            if (res && gw_res_last(res, &v, NULL, &stale) && !stale)
                gw_value_encode(&v, &w);
            else
                gw_pson_put_null(&w);
        }
        if (pass == 1) {
            struct gw_store_msg msg = {.stream = r->stream,
                                       .action = GW_STORE_WRITE_BUCKET,
                                       .target = r->bucket,
                                       .payload = buf,
                                       .payload_len = w.len};
            struct gw_store_ticket t;
            int rc = gw_store_put(f->store, &msg, &t);
            if (rc == GW_ESTORE_FULL) {
                if (!f->full_logged)
                    gw_log_warn("store full (budget reached with refuse_new, or nothing left to "
                                "drop on a full disk): samples of bucket %s are refused until "
                                "there is room", r->bucket);
                f->full_logged = true;
            } else if (rc < 0) {
                /* Write failures (disk full, I/O errors) are reported by the store itself, with
                 * their cause, summaries and the recovery; anything else once here. */
                if (rc != f->put_error && rc != GW_ENOSPC && rc != GW_EIO)
                    gw_log_err("store: cannot queue samples of bucket %s: %s (the store says "
                               "when it works again)", r->bucket, gw_strerror(rc));
                f->put_error = rc;
            } else {
                f->full_logged = false;
                f->put_error = 0;
            }
            if (buf != stackbuf)
                free(buf);
        }
    }
    gw_timer_start(r->timer, r->interval_ms);
}

/* --- Drain --- */

static void drain(struct gw_forward *f);

static void schedule_drain(struct gw_forward *f, uint64_t delay_ms)
{
    if (!gw_timer_armed(f->drain_timer))
        gw_timer_start(f->drain_timer, delay_ms);
}

static void on_answer(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    struct sent *s = arg;
    struct gw_forward *f = s->f;
    (void)out;
    f->inflight--;
    if (rc == 0) {
        gw_store_ack(f->store, s->id);
    } else {
        gw_store_nack(f->store, s->id);
        if (rc != GW_ELINK)
            gw_log_warn("store: row %llu not accepted by the broker (%s): it will be sent again",
                        (unsigned long long)s->id, msg && *msg ? msg : gw_strerror(rc));
    }
    free(s);
    schedule_drain(f, rc == 0 || rc == GW_ELINK ? 0 : 1000);
}

/*
 * The row's payload with "_id": uid inserted as the first member when it is a map, else wrapped as
 * {"_id": uid, "value": payload}. Written into a new buffer (caller frees).
 */
static uint8_t *with_id(const struct gw_store_row *row, size_t *len)
{
    struct gw_pson_reader r;
    struct gw_pson_item it;
    gw_pson_reader_init(&r, row->payload, row->payload_len);
    bool is_map = gw_pson_next(&r, &it) == 0 && it.kind == GW_PSON_MAP;
    size_t head = is_map ? (size_t)(r.p - row->payload) : 0; /* the map's own tag */
    struct gw_pson_writer w;
    uint8_t *buf = NULL;
    for (int pass = 0; pass < 2; pass++) {
        gw_pson_writer_init(&w, buf, buf ? w.len : 0);
        gw_pson_put_map(&w, is_map ? it.count + 1 : 2);
        gw_pson_put_cstr(&w, "_id");
        gw_pson_put_cstr(&w, row->uid);
        if (is_map) {
            gw_pson_put_raw(&w, row->payload + head, row->payload_len - head);
        } else {
            gw_pson_put_cstr(&w, "value");
            gw_pson_put_raw(&w, row->payload, row->payload_len);
        }
        if (!buf)
            buf = gw_malloc(w.len ? w.len : 1);
    }
    *len = w.len;
    return buf;
}

static int send_row(void *arg, const struct gw_store_row *row)
{
    struct gw_forward *f = arg;
    size_t len;
    uint8_t *payload = with_id(row, &len);
    struct gw_value target = gw_value_cstr(row->target);
    struct sent *s = gw_malloc(sizeof *s);
    s->f = f;
    s->id = row->id;
    f->inflight++;
    f->sent_this_second++;
    int rc = gw_session_call_pson(f->session, (enum gw_iotmp_action)row->action, &target, payload,
                                  len, true, f->cfg.timeout_ms, on_answer, s);
    gw_value_fini(&target);
    free(payload);
    if (rc < 0) { /* not sent (link went down): the row stays for later */
        f->inflight--;
        free(s);
        gw_store_nack(f->store, row->id);
        return rc;
    }
    return 0;
}

static void drain(struct gw_forward *f)
{
    if (!f->ready || f->draining || f->inflight >= f->cfg.window)
        return;
    uint64_t now = gw_loop_now_ms();
    if (now - f->second_start_ms >= 1000) {
        f->second_start_ms = now;
        f->sent_this_second = 0;
    }
    unsigned room = f->cfg.window - f->inflight;
    if (f->cfg.max_rate) {
        if (f->sent_this_second >= f->cfg.max_rate) {
            schedule_drain(f, 1000 - (now - f->second_start_ms));
            return;
        }
        uint64_t left = f->cfg.max_rate - f->sent_this_second;
        if (left < room)
            room = (unsigned)left;
    }
    f->draining = true;
    int n = gw_store_next(f->store, room, send_row, f);
    f->draining = false;
    if (n < 0 && n != GW_ELINK)
        gw_log_err("store: reading the queue failed: %s", gw_strerror(n));
    /* Nothing committed yet but rows pending: look again after the next commit. */
    if (n == 0 && f->inflight == 0) {
        int due = gw_store_poll_due_ms(f->store);
        if (due >= 0)
            schedule_drain(f, (uint64_t)due + 1);
    }
}

static void drain_tick(void *arg)
{
    drain(arg);
}

static void commit_tick(void *arg)
{
    struct gw_forward *f = arg;
    uint64_t durable;
    int rc = gw_store_poll(f->store, &durable);
    if (rc < 0 && rc != f->commit_error && rc != GW_ENOSPC && rc != GW_EIO)
        gw_log_err("store: commit failed: %s", gw_strerror(rc));
    f->commit_error = rc < 0 ? rc : 0;
    if (f->ready)
        drain(f);
    int due = gw_store_poll_due_ms(f->store);
    gw_timer_start(f->commit_timer, due >= 0 && due < 250 ? (uint64_t)due + 1 : 250);
}

void gw_forward_on_session_state(struct gw_forward *f, enum gw_session_state st)
{
    bool ready = st == GW_SESSION_READY;
    if (ready == f->ready)
        return;
    f->ready = ready;
    if (ready) {
        struct gw_store_stats s;
        gw_store_read_stats(f->store, &s);
        if (s.depth)
            gw_log_notice("uplink ready: sending %llu queued row(s) from the store",
                          (unsigned long long)s.depth);
        schedule_drain(f, 0);
    }
}

/* --- $gateway/store --- */

static int store_run(void *ctx, struct gw_call *call)
{
    struct gw_forward *f = ctx;
    struct gw_store_stats s;
    gw_store_read_stats(f->store, &s);
    struct gw_value m = gw_value_map();
#define PUT(k, v) (*gw_value_map_set(&m, k, strlen(k)) = gw_value_uint(v))
    PUT("depth", s.depth);
    PUT("bytes", s.bytes);
    PUT("budget_bytes", s.budget_bytes);
    PUT("inflight", s.inflight);
    PUT("accepted", s.accepted);
    PUT("delivered", s.delivered);
    PUT("replayed", s.replayed);
    PUT("dropped", s.dropped);
    PUT("refused", s.refused);
    PUT("expired", s.expired);
    PUT("write_errors", s.write_errors);
    PUT("lost", s.lost);
#undef PUT
    *gw_value_map_set(&m, "oldest_age_ms", 13) = gw_value_int(s.oldest_age_ms);
    *gw_value_map_set(&m, "full", 4) = gw_value_bool(s.full);
    *gw_value_map_set(&m, "disk_full", 9) = gw_value_bool(s.disk_full);
    *gw_value_map_set(&m, "fault", 5) = gw_value_cstr(s.fault ? gw_strerror(s.fault) : "");
    gw_call_reply(call, &m);
    return 0;
}

/* --- Lifecycle --- */

int gw_forward_new(struct gw_loop *loop, struct gw_registry *reg, struct gw_store *store,
                   struct gw_session *session, const struct gw_forward_config *cfg,
                   const struct gw_recording *recs, size_t n_recs, struct gw_forward **out)
{
    struct gw_forward *f = gw_calloc(1, sizeof *f);
    f->loop = loop;
    f->reg = reg;
    f->store = store;
    f->session = session;
    f->cfg.window = cfg && cfg->window ? cfg->window : 256;
    f->cfg.timeout_ms = cfg && cfg->timeout_ms ? cfg->timeout_ms : 10000;
    f->cfg.max_rate = cfg ? cfg->max_rate : 0;
    f->commit_timer = gw_timer_new(loop, commit_tick, f);
    f->drain_timer = gw_timer_new(loop, drain_tick, f);
    gw_timer_start(f->commit_timer, 50);

    struct gw_resource_desc d = {.name = "$gateway/store", .fn = GW_FN_OUTPUT, .run = store_run,
                                 .ctx = f, .owner = f};
    int rc = gw_registry_add(reg, &d, &f->store_res);
    if (rc < 0)
        gw_log_warn("cannot register $gateway/store: %s", gw_strerror(rc));

    f->recs = gw_calloc(n_recs + 1, sizeof *f->recs);
    for (size_t i = 0; i < n_recs; i++) {
        struct rec *r = &f->recs[i];
        r->f = f;
        r->bucket = gw_strdup(recs[i].bucket);
        size_t n = strlen(recs[i].bucket) + 8;
        r->stream = gw_malloc(n);
        snprintf(r->stream, n, "bucket:%s", recs[i].bucket);
        r->n = recs[i].n_resources;
        r->resources = gw_calloc(r->n + 1, sizeof *r->resources);
        for (size_t k = 0; k < r->n; k++)
            r->resources[k] = gw_strdup(recs[i].resources[k]);
        r->interval_ms = recs[i].interval_ms ? recs[i].interval_ms : 1000;
        r->timer = gw_timer_new(loop, record_tick, r);
        gw_timer_start(r->timer, r->interval_ms);
    }
    f->n_recs = n_recs;
    *out = f;
    return 0;
}

void gw_forward_free(struct gw_forward *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_recs; i++) {
        struct rec *r = &f->recs[i];
        gw_timer_free(r->timer);
        for (size_t k = 0; k < r->n; k++)
            free(r->resources[k]);
        free(r->resources);
        free(r->bucket);
        free(r->stream);
    }
    free(f->recs);
    gw_timer_free(f->commit_timer);
    gw_timer_free(f->drain_timer);
    gw_registry_remove_owner(f->reg, f);
    uint64_t durable;
    gw_store_flush(f->store, &durable); /* commit what was taken: accepted before exit */
    free(f);
}
