/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of gw_store (gateway/store/store.c) against real SQLite files in a fresh temporary
 * directory per test: ordering across reopen, ack/nack, crash safety (children killed with
 * SIGKILL, then PRAGMA integrity_check on an independent connection), byte budget and expiry with
 * exact counters, recovery from a corrupt file, migration from schema version 1, and the SIGKILL
 * torture run (20 kills at random moments of a child that inserts as fast as it can).
 */
#include "gw/error.h"
#include "gw/log.h"
#include "gw/store.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[128];
static char dbpath[192];
static int64_t fake_now;

static int64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gw_store_test.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(dbpath, sizeof dbpath, "%s/store.db", tmpdir);
    fake_now = 1700000000000;
    gw_log_set_level(GW_LOG_ERR);
}

static void teardown(void)
{
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A config on dbpath with the fake clock and no time-based commits unless a test wants them. */
static void test_config(struct gw_store_config *cfg)
{
    gw_store_config_init(cfg);
    cfg->path = dbpath;
    cfg->clock = fake_clock;
    cfg->commit_ms = 1000;
    cfg->commit_rows = 100;
}

static struct gw_store *open_ok(const struct gw_store_config *cfg)
{
    struct gw_store *s = NULL;
    int rc = gw_store_open(cfg, &s);
    ck_assert_msg(rc == 0, "gw_store_open: %s", gw_strerror_name(rc));
    ck_assert_ptr_nonnull(s);
    return s;
}

static int put(struct gw_store *s, const char *stream, const char *payload,
               struct gw_store_ticket *t)
{
    const char *colon = strchr(stream, ':');
    struct gw_store_msg m = {.stream = stream,
                             .action = GW_STORE_WRITE_BUCKET,
                             .target = colon ? colon + 1 : stream,
                             .payload = payload,
                             .payload_len = strlen(payload)};
    return gw_store_put(s, &m, t);
}

/* --- Collecting what gw_store_next hands out --- */

#define MAX_GOT 4096
struct got_row {
    uint64_t id, seq;
    char stream[64], target[64], payload[128], uid[48];
    int action, replay;
};
struct got {
    struct got_row rows[MAX_GOT];
    int n;
    int stop_after; /* decline rows after this many (0 = never) */
};

static int collect(void *arg, const struct gw_store_row *row)
{
    struct got *g = arg;
    if (g->n >= MAX_GOT || (g->stop_after && g->n >= g->stop_after))
        return 1;
    struct got_row *r = &g->rows[g->n++];
    r->id = row->id;
    r->seq = row->seq;
    r->action = (int)row->action;
    r->replay = row->replay;
    snprintf(r->stream, sizeof r->stream, "%s", row->stream);
    snprintf(r->target, sizeof r->target, "%s", row->target);
    snprintf(r->uid, sizeof r->uid, "%s", row->uid);
    ck_assert_ptr_nonnull(row->payload);
    size_t n = row->payload_len < sizeof r->payload - 1 ? row->payload_len : sizeof r->payload - 1;
    memcpy(r->payload, row->payload, n);
    r->payload[n] = '\0';
    return 0;
}

static struct got *got_new(void)
{
    struct got *g = calloc(1, sizeof *g);
    ck_assert_ptr_nonnull(g);
    return g;
}

static struct gw_store_stats stats_of(struct gw_store *s)
{
    struct gw_store_stats st;
    gw_store_read_stats(s, &st);
    return st;
}

/* PRAGMA integrity_check on an independent connection; returns 1 when "ok", else 0 with the
 * reason in integrity_msg. */
static char integrity_msg[256];

static int integrity_ok(const char *path)
{
    sqlite3 *db;
    int ok = 0;
    snprintf(integrity_msg, sizeof integrity_msg, "?");
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_stmt *st;
        rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *msg = (const char *)sqlite3_column_text(st, 0);
                ok = strcmp(msg, "ok") == 0;
                snprintf(integrity_msg, sizeof integrity_msg, "%s", msg);
            }
            sqlite3_finalize(st);
        }
    }
    if (!ok && rc != SQLITE_ROW)
        snprintf(integrity_msg, sizeof integrity_msg, "sqlite %d: %s", rc, sqlite3_errmsg(db));
    sqlite3_close(db);
    return ok;
}

static int64_t sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    int64_t v = -1;
    ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
                  sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    ck_assert_msg(rc == SQLITE_OK, "%s", err ? err : "?");
    sqlite3_close(db);
}

/* --- Ordering --- */

START_TEST(test_store_replays_in_insert_order_across_reopen)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    struct gw_store *s = open_ok(&cfg);
    const char *streams[3] = {"bucket:a", "bucket:b", "endpoint:c"};
    char payload[64];
    uint64_t last_id = 0;
    for (int i = 0; i < 60; i++) {
        struct gw_store_ticket t;
        snprintf(payload, sizeof payload, "%s#%d", streams[i % 3], i / 3 + 1);
        ck_assert_int_eq(put(s, streams[i % 3], payload, &t), 0);
        ck_assert_uint_eq(t.seq, (uint64_t)(i / 3 + 1));
        ck_assert_uint_gt(t.id, last_id);
        last_id = t.id;
    }
    gw_store_close(s);

    s = open_ok(&cfg);
    ck_assert_uint_eq(stats_of(s).depth, 60);
    struct got *g = got_new();
    ck_assert_int_eq(gw_store_next(s, 1000, collect, g), 60);
    uint64_t next_seq[3] = {1, 1, 1}, prev_id[3] = {0, 0, 0};
    for (int i = 0; i < g->n; i++) {
        int k = -1;
        for (int j = 0; j < 3; j++)
            if (strcmp(g->rows[i].stream, streams[j]) == 0)
                k = j;
        ck_assert_int_ge(k, 0);
        ck_assert_uint_eq(g->rows[i].seq, next_seq[k]);
        ck_assert_uint_gt(g->rows[i].id, prev_id[k]);
        snprintf(payload, sizeof payload, "%s#%" PRIu64, streams[k], next_seq[k]);
        ck_assert_str_eq(g->rows[i].payload, payload);
        ck_assert_int_eq(g->rows[i].action, GW_STORE_WRITE_BUCKET);
        ck_assert_int_eq(g->rows[i].replay, 0);
        prev_id[k] = g->rows[i].id;
        next_seq[k]++;
    }
    ck_assert_uint_eq(next_seq[0], 21);
    ck_assert_uint_eq(next_seq[1], 21);
    ck_assert_uint_eq(next_seq[2], 21);
    /* sequence numbers and ids continue after the reopen */
    struct gw_store_ticket t;
    ck_assert_int_eq(put(s, "bucket:b", "more", &t), 0);
    ck_assert_uint_eq(t.seq, 21);
    ck_assert_uint_eq(t.id, last_id + 1);
    gw_store_close(s);
    free(g);
}
END_TEST

START_TEST(test_store_ids_and_seqs_not_reused_after_drain)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    struct gw_store *s = open_ok(&cfg);
    struct gw_store_ticket t;
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(put(s, "bucket:a", "x", &t), 0);
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    struct got *g = got_new();
    ck_assert_int_eq(gw_store_next(s, 10, collect, g), 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(gw_store_ack(s, g->rows[i].id), 0);
    char uid[48];
    snprintf(uid, sizeof uid, "%s", g->rows[4].uid);
    gw_store_close(s);

    s = open_ok(&cfg);
    ck_assert_uint_eq(stats_of(s).depth, 0);
    ck_assert_int_eq(put(s, "bucket:a", "y", &t), 0);
    ck_assert_uint_eq(t.id, 6);
    ck_assert_uint_eq(t.seq, 6);
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    g->n = 0;
    ck_assert_int_eq(gw_store_next(s, 10, collect, g), 1);
    /* uid = "<epoch>-<id>", same epoch in the same file */
    char want[48];
    snprintf(want, sizeof want, "%016" PRIx64 "-6", gw_store_epoch(s));
    ck_assert_str_eq(g->rows[0].uid, want);
    ck_assert_int_eq(strncmp(uid, want, 17), 0);
    gw_store_close(s);
    free(g);
}
END_TEST

START_TEST(test_store_round_robin_across_streams)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    cfg.commit_rows = 1000;
    struct gw_store *s = open_ok(&cfg);
    for (int i = 0; i < 300; i++)
        ck_assert_int_eq(put(s, "bucket:big", "b", NULL), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(put(s, "bucket:small", "s", NULL), 0);
        ck_assert_int_eq(put(s, "endpoint:tiny", "t", NULL), 0);
    }
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    struct got *g = got_new();
    /* 6 slots over 3 streams: 2 each, although the big stream's 300 rows are all older */
    ck_assert_int_eq(gw_store_next(s, 6, collect, g), 6);
    int per[3] = {0, 0, 0};
    for (int i = 0; i < g->n; i++) {
        const char *name = g->rows[i].stream;
        per[strcmp(name, "bucket:big") == 0 ? 0 : strcmp(name, "bucket:small") == 0 ? 1 : 2]++;
    }
    ck_assert_int_eq(per[0], 2);
    ck_assert_int_eq(per[1], 2);
    ck_assert_int_eq(per[2], 2);
    /* Small streams are drained now: the next batch goes to the big one entirely */
    g->n = 0;
    ck_assert_int_eq(gw_store_next(s, 10, collect, g), 10);
    for (int i = 0; i < g->n; i++)
        ck_assert_str_eq(g->rows[i].stream, "bucket:big");
    /* max smaller than the number of streams: the starting stream rotates */
    gw_store_nack_all(s);
    int seen_small = 0;
    for (int round = 0; round < 3; round++) {
        g->n = 0;
        ck_assert_int_eq(gw_store_next(s, 1, collect, g), 1);
        if (strcmp(g->rows[0].stream, "bucket:big") != 0)
            seen_small++;
        ck_assert_int_eq(gw_store_ack(s, g->rows[0].id), 0);
    }
    ck_assert_int_ge(seen_small, 1);
    gw_store_close(s);
    free(g);
}
END_TEST

/* --- Ack, nack, in flight --- */

START_TEST(test_store_ack_deletes_nack_resends)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    struct gw_store *s = open_ok(&cfg);
    char p[16];
    for (int i = 1; i <= 5; i++) {
        snprintf(p, sizeof p, "%d", i);
        ck_assert_int_eq(put(s, "bucket:a", p, NULL), 0);
    }
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    struct got *g = got_new();
    ck_assert_int_eq(gw_store_next(s, 5, collect, g), 5);
    ck_assert_int_eq(gw_store_next(s, 5, collect, g), 0); /* all in flight */
    ck_assert_int_eq(gw_store_ack(s, g->rows[0].id), 0);
    ck_assert_int_eq(gw_store_ack(s, g->rows[1].id), 0);
    ck_assert_int_eq(gw_store_ack(s, g->rows[1].id), GW_ENOENT);
    ck_assert_int_eq(gw_store_nack(s, g->rows[2].id), 0);
    ck_assert_int_eq(gw_store_nack(s, 999), GW_ENOENT);
    g->n = 0;
    ck_assert_int_eq(gw_store_next(s, 10, collect, g), 1); /* only the nacked one: 4, 5 in flight */
    ck_assert_str_eq(g->rows[0].payload, "3");
    ck_assert_int_eq(g->rows[0].replay, 1);
    struct gw_store_stats st = stats_of(s);
    ck_assert_uint_eq(st.delivered, 2);
    ck_assert_uint_eq(st.replayed, 1);
    ck_assert_uint_eq(st.inflight, 3);
    ck_assert_uint_eq(st.depth, 3);
    ck_assert_uint_eq(st.bytes, 3 * (1 + 1 + GW_STORE_ROW_OVERHEAD));
    /* the link drops: everything in flight comes back, in order */
    gw_store_nack_all(s);
    g->n = 0;
    ck_assert_int_eq(gw_store_next(s, 10, collect, g), 3);
    ck_assert_str_eq(g->rows[0].payload, "3");
    ck_assert_str_eq(g->rows[1].payload, "4");
    ck_assert_str_eq(g->rows[2].payload, "5");
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(g->rows[i].replay, 1);
        ck_assert_int_eq(gw_store_ack(s, g->rows[i].id), 0);
    }
    st = stats_of(s);
    ck_assert_uint_eq(st.depth, 0);
    ck_assert_uint_eq(st.bytes, 0);
    ck_assert_uint_eq(st.delivered, 5);
    ck_assert_uint_eq(st.accepted, 5);
    gw_store_close(s);
    s = open_ok(&cfg);
    ck_assert_uint_eq(stats_of(s).depth, 0);
    gw_store_close(s);
    ck_assert_int_eq(sql_int(dbpath, "SELECT count(*) FROM queue"), 0);
    free(g);
}
END_TEST

START_TEST(test_store_callback_can_decline)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    struct gw_store *s = open_ok(&cfg);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(put(s, "bucket:a", "p", NULL), 0);
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    struct got *g = got_new();
    g->stop_after = 4;
    ck_assert_int_eq(gw_store_next(s, 10, collect, g), 4);
    ck_assert_uint_eq(stats_of(s).inflight, 4);
    g->stop_after = 0;
    ck_assert_int_eq(gw_store_next(s, 10, collect, g), 6);
    for (int i = 0; i < 10; i++)
        ck_assert_uint_eq(g->rows[i].seq, (uint64_t)i + 1);
    gw_store_close(s);
    free(g);
}
END_TEST

START_TEST(test_store_inflight_rows_return_after_reopen)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    struct gw_store *s = open_ok(&cfg);
    char p[16];
    for (int i = 1; i <= 10; i++) {
        snprintf(p, sizeof p, "%d", i);
        ck_assert_int_eq(put(s, "bucket:a", p, NULL), 0);
    }
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    struct got *g = got_new();
    ck_assert_int_eq(gw_store_next(s, 10, collect, g), 10);
    ck_assert_int_eq(gw_store_ack(s, g->rows[0].id), 0);
    ck_assert_int_eq(gw_store_ack(s, g->rows[4].id), 0);
    ck_assert_int_eq(gw_store_ack(s, g->rows[9].id), 0);
    gw_store_close(s); /* 7 rows still in flight: their answers never came */

    s = open_ok(&cfg);
    g->n = 0;
    ck_assert_int_eq(gw_store_next(s, 100, collect, g), 7);
    const char *want[7] = {"2", "3", "4", "6", "7", "8", "9"};
    for (int i = 0; i < 7; i++)
        ck_assert_str_eq(g->rows[i].payload, want[i]);
    gw_store_close(s);
    free(g);
}
END_TEST

/* --- Durability --- */

static uint64_t cb_first, cb_last;
static int cb_calls, cb_status;

static void on_durable(void *arg, int status, uint64_t first, uint64_t last)
{
    (void)arg;
    cb_calls++;
    cb_status = status;
    cb_first = first;
    cb_last = last;
}

START_TEST(test_store_hands_out_only_durable_rows)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    cfg.on_durable = on_durable;
    cb_calls = 0;
    struct gw_store *s = open_ok(&cfg);
    struct gw_store_ticket t;
    uint64_t durable = 99;
    ck_assert_int_eq(gw_store_poll_due_ms(s), -1);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(put(s, "bucket:a", "x", &t), 0);
    ck_assert_uint_eq(t.id, 3);
    ck_assert_int_eq(gw_store_poll(s, &durable), 0);
    ck_assert_uint_eq(durable, 0);
    ck_assert_int_eq(cb_calls, 0);
    ck_assert_uint_eq(stats_of(s).pending, 3);
    ck_assert_int_eq(gw_store_poll_due_ms(s), 1000);
    struct got *g = got_new();
    ck_assert_int_eq(gw_store_next(s, 10, collect, g), 0); /* taken, not accepted: not sent */
    fake_now += 999;
    ck_assert_int_eq(gw_store_poll_due_ms(s), 1);
    ck_assert_int_eq(gw_store_poll(s, &durable), 0);
    ck_assert_uint_eq(durable, 0);
    fake_now += 1;
    ck_assert_int_eq(gw_store_poll_due_ms(s), 0);
    ck_assert_int_eq(gw_store_poll(s, &durable), 0);
    ck_assert_uint_eq(durable, 3);
    ck_assert_int_eq(cb_calls, 1);
    ck_assert_int_eq(cb_status, 0);
    ck_assert_uint_eq(cb_first, 1);
    ck_assert_uint_eq(cb_last, 3);
    ck_assert_int_eq(gw_store_next(s, 10, collect, g), 3);
    /* commit_rows: the 100th row commits inside gw_store_put */
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(put(s, "bucket:a", "x", &t), 0);
    ck_assert_int_eq(cb_calls, 2);
    ck_assert_uint_eq(cb_first, 4);
    ck_assert_uint_eq(cb_last, 103);
    ck_assert_uint_eq(stats_of(s).durable_id, 103);
    ck_assert_uint_eq(stats_of(s).accepted, 103);
    /* close commits what is pending */
    ck_assert_int_eq(put(s, "bucket:a", "x", &t), 0);
    gw_store_close(s);
    ck_assert_int_eq(cb_calls, 3);
    ck_assert_uint_eq(cb_last, 104);
    free(g);
}
END_TEST

/* The child takes 1000 rows in 10 commits, takes 50 more, reports its durable id over the pipe
 * and is killed before committing them. */
/* A commit that fails for real (the file size limit makes SQLite's write fail with EFBIG):
 * the producers hear which tickets were lost, the durable id never covers them, ids are not
 * reused, and the store works again once the disk does. */
static uint64_t fail_lost, fail_ok_rows, fail_max_durable, fail_first_lost;

static void on_durable_fail(void *arg, int status, uint64_t first, uint64_t last)
{
    (void)arg;
    if (status == 0) {
        fail_ok_rows += last - first + 1;
        fail_max_durable = last;
    } else {
        if (!fail_first_lost)
            fail_first_lost = first;
        fail_lost += last - first + 1;
    }
}

START_TEST(test_store_failed_commit_reports_lost_tickets)
{
    signal(SIGXFSZ, SIG_IGN);
    struct gw_store_config cfg;
    test_config(&cfg);
    cfg.on_durable = on_durable_fail;
    struct gw_store *s = open_ok(&cfg);
    char big[1001];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(put(s, "bucket:a", big, NULL), 0);
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    ck_assert_uint_eq(fail_ok_rows, 50);

    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 300 * 1024;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = 0;
    for (int i = 0; i < 2000 && rc == 0; i++)
        rc = put(s, "bucket:a", big, NULL);
    if (rc == 0)
        rc = gw_store_flush(s, NULL);
    ck_assert_msg(rc == GW_EIO || rc == GW_ENOSPC, "got %s", gw_strerror_name(rc));
    ck_assert_uint_gt(fail_lost, 0);
    struct gw_store_stats st = stats_of(s);
    ck_assert_uint_lt(st.durable_id, fail_first_lost);
    ck_assert_uint_eq(st.durable_id, fail_max_durable);
    ck_assert_uint_eq(st.depth, fail_ok_rows); /* state reloaded from the file */
    ck_assert_uint_eq(st.pending, 0);

    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    struct gw_store_ticket t;
    ck_assert_int_eq(put(s, "bucket:a", "after", &t), 0);
    ck_assert_uint_gt(t.id, fail_first_lost + fail_lost - 1); /* lost ids are not reused */
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    uint64_t accepted = fail_ok_rows;
    gw_store_close(s);
    ck_assert(integrity_ok(dbpath));
    ck_assert_int_eq(sql_int(dbpath, "SELECT count(*) FROM queue"), (int64_t)accepted);
    /* the rows' seqs have no gaps: the lost ones gave theirs back */
    ck_assert_int_eq(sql_int(dbpath, "SELECT max(seq) - count(*) FROM queue"), 0);
}
END_TEST

START_TEST(test_store_sigkill_mid_batch_keeps_committed_rows)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        struct gw_store_config cfg;
        test_config(&cfg);
        struct gw_store *s = NULL;
        if (gw_store_open(&cfg, &s) != 0)
            _exit(2);
        char p[32];
        for (int i = 1; i <= 1050; i++) {
            snprintf(p, sizeof p, "row %d", i);
            if (put(s, i % 2 ? "bucket:odd" : "bucket:even", p, NULL) != 0)
                _exit(3);
        }
        struct gw_store_stats st;
        gw_store_read_stats(s, &st);
        if (write(fds[1], &st.durable_id, sizeof st.durable_id) != sizeof st.durable_id)
            _exit(4);
        raise(SIGKILL);
        _exit(5);
    }
    close(fds[1]);
    uint64_t durable = 0;
    ck_assert_int_eq(read(fds[0], &durable, sizeof durable), sizeof durable);
    close(fds[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ck_assert_uint_eq(durable, 1000);

    ck_assert(integrity_ok(dbpath));
    ck_assert_int_eq(sql_int(dbpath, "SELECT count(*) FROM queue"), 1000);
    ck_assert_int_eq(sql_int(dbpath, "SELECT max(id) FROM queue"), 1000);

    struct gw_store_config cfg;
    test_config(&cfg);
    struct gw_store *s = open_ok(&cfg);
    ck_assert_uint_eq(stats_of(s).depth, 1000);
    struct got *g = got_new();
    ck_assert_int_eq(gw_store_next(s, 2000, collect, g), 1000);
    int ids[1001] = {0};
    for (int i = 0; i < g->n; i++) {
        ck_assert_uint_le(g->rows[i].id, 1000);
        ids[g->rows[i].id]++;
        char want[32];
        snprintf(want, sizeof want, "row %" PRIu64, g->rows[i].id);
        ck_assert_str_eq(g->rows[i].payload, want);
        ck_assert_uint_eq(g->rows[i].seq, (g->rows[i].id + 1) / 2);
    }
    for (int i = 1; i <= 1000; i++)
        ck_assert_int_eq(ids[i], 1);
    gw_store_close(s);
    free(g);
}
END_TEST

START_TEST(test_store_second_process_gets_busy)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    struct gw_store *s = open_ok(&cfg);
    ck_assert_int_eq(put(s, "bucket:a", "x", NULL), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct gw_store *s2 = NULL;
        int rc = gw_store_open(&cfg, &s2);
        _exit(rc == GW_EBUSY && s2 == NULL ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    gw_store_close(s);
    /* released on close */
    s = open_ok(&cfg);
    ck_assert_uint_eq(stats_of(s).depth, 1);
    gw_store_close(s);
}
END_TEST

/* --- Limits --- */

/* Rows of exactly 100 counted bytes: target "a" (1) + payload 35 + overhead 64. */
static const char payload35[] = "0123456789abcdefghijklmnopqrstuvwxy";

START_TEST(test_store_budget_drop_oldest_exact_counts)
{
    ck_assert_int_eq((int)strlen(payload35) + 1 + GW_STORE_ROW_OVERHEAD, 100);
    struct gw_store_config cfg;
    test_config(&cfg);
    cfg.budget_bytes = 1000; /* 10 rows */
    cfg.commit_rows = 4;
    struct gw_store *s = open_ok(&cfg);
    struct gw_store_ticket t;
    for (int i = 0; i < 15; i++) {
        ck_assert_int_eq(put(s, "bucket:a", payload35, &t), 0);
        ck_assert_uint_le(stats_of(s).bytes, 1000);
    }
    struct gw_store_stats st = stats_of(s);
    ck_assert_uint_eq(st.dropped, 5);
    ck_assert_uint_eq(st.refused, 0);
    ck_assert_uint_eq(st.depth, 10);
    ck_assert_uint_eq(st.bytes, 1000);
    ck_assert_int_eq(st.full, 1);
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    st = stats_of(s);
    ck_assert_uint_eq(st.accepted, 15);
    ck_assert_uint_eq(st.accepted, st.depth + st.dropped);
    struct got *g = got_new();
    ck_assert_int_eq(gw_store_next(s, 100, collect, g), 10);
    for (int i = 0; i < 10; i++)
        ck_assert_uint_eq(g->rows[i].seq, (uint64_t)i + 6);
    /* a row larger than the whole budget is refused even with drop-oldest */
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ck_assert_int_eq(put(s, "bucket:a", big, NULL), GW_ESTORE_FULL);
    st = stats_of(s);
    ck_assert_uint_eq(st.refused, 1);
    ck_assert_uint_eq(st.depth, 10);
    /* acks bring it below 90 %: no longer full */
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(gw_store_ack(s, g->rows[i].id), 0);
    ck_assert_int_eq(gw_store_poll(s, NULL), 0);
    ck_assert_int_eq(stats_of(s).full, 0);
    gw_store_close(s);
    /* the file agrees */
    ck_assert_int_eq(sql_int(dbpath, "SELECT count(*) FROM queue"), 7);
    ck_assert_int_eq(sql_int(dbpath, "SELECT min(seq) FROM queue"), 9);
    free(g);
}
END_TEST

START_TEST(test_store_budget_refuse_new_exact_counts)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    cfg.budget_bytes = 1050; /* 10 rows of 100, not 11 */
    cfg.policy = GW_STORE_REFUSE_NEW;
    struct gw_store *s = open_ok(&cfg);
    int ok = 0, full = 0;
    for (int i = 0; i < 15; i++) {
        int rc = put(s, "bucket:a", payload35, NULL);
        if (rc == 0)
            ok++;
        else if (rc == GW_ESTORE_FULL)
            full++;
        else
            ck_abort_msg("put: %s", gw_strerror_name(rc));
    }
    ck_assert_int_eq(ok, 10);
    ck_assert_int_eq(full, 5);
    struct gw_store_stats st = stats_of(s);
    ck_assert_uint_eq(st.refused, 5);
    ck_assert_uint_eq(st.dropped, 0);
    ck_assert_uint_eq(st.depth, 10);
    ck_assert_uint_eq(st.bytes, 1000);
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    struct got *g = got_new();
    ck_assert_int_eq(gw_store_next(s, 1, collect, g), 1);
    ck_assert_uint_eq(g->rows[0].seq, 1);
    ck_assert_int_eq(gw_store_ack(s, g->rows[0].id), 0);
    struct gw_store_ticket t;
    ck_assert_int_eq(put(s, "bucket:a", payload35, &t), 0);
    ck_assert_uint_eq(t.seq, 11); /* refused puts used no sequence number */
    ck_assert_int_eq(put(s, "bucket:a", payload35, NULL), GW_ESTORE_FULL);
    ck_assert_uint_eq(stats_of(s).refused, 6);
    gw_store_close(s);
    /* the budget holds across reopen: bytes are recounted from the file */
    s = open_ok(&cfg);
    ck_assert_uint_eq(stats_of(s).bytes, 1000);
    ck_assert_int_eq(put(s, "bucket:a", payload35, NULL), GW_ESTORE_FULL);
    gw_store_close(s);
    free(g);
}
END_TEST

START_TEST(test_store_expires_old_rows)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    cfg.max_age_ms = 60000;
    struct gw_store *s = open_ok(&cfg);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(put(s, "bucket:a", "old", NULL), 0);
    fake_now += 30000;
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(put(s, "bucket:b", "new", NULL), 0);
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    ck_assert_int_eq(stats_of(s).oldest_age_ms, 30000);
    fake_now += 29999; /* oldest is 59.999 s old */
    ck_assert_int_eq(gw_store_poll(s, NULL), 0);
    ck_assert_uint_eq(stats_of(s).expired, 0);
    fake_now += 1001;
    ck_assert_int_eq(gw_store_poll(s, NULL), 0);
    struct gw_store_stats st = stats_of(s);
    ck_assert_uint_eq(st.expired, 5);
    ck_assert_uint_eq(st.depth, 3);
    ck_assert_uint_eq(st.bytes, 3 * (1 + 3 + GW_STORE_ROW_OVERHEAD));
    ck_assert_int_eq(st.oldest_age_ms, 31000);
    gw_store_close(s);
    /* expiry at start-up */
    fake_now += 30000;
    s = open_ok(&cfg);
    st = stats_of(s);
    ck_assert_uint_eq(st.expired, 3);
    ck_assert_uint_eq(st.depth, 0);
    ck_assert_int_eq(st.oldest_age_ms, -1);
    gw_store_close(s);
    ck_assert_int_eq(sql_int(dbpath, "SELECT count(*) FROM queue"), 0);
}
END_TEST

START_TEST(test_store_shrinks_file_when_drained)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    cfg.commit_rows = 500;
    struct gw_store *s = open_ok(&cfg);
    char big[1000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    for (int i = 0; i < 2000; i++)
        ck_assert_int_eq(put(s, "bucket:a", big, NULL), 0);
    ck_assert_int_eq(gw_store_flush(s, NULL), 0);
    struct got *g = got_new();
    int n;
    while ((n = gw_store_next(s, 500, collect, g)) > 0) {
        for (int i = 0; i < g->n; i++)
            ck_assert_int_eq(gw_store_ack(s, g->rows[i].id), 0);
        g->n = 0;
    }
    ck_assert_int_eq(n, 0);
    ck_assert_uint_eq(stats_of(s).depth, 0);
    fake_now += 1000; /* the acks' commit falls due, then the empty queue shrinks the file */
    ck_assert_int_eq(gw_store_poll(s, NULL), 0);
    gw_store_close(s);
    ck_assert_int_eq(sql_int(dbpath, "PRAGMA auto_vacuum"), 2);
    ck_assert_int_eq(sql_int(dbpath, "PRAGMA freelist_count"), 0);
    ck_assert_int_lt(sql_int(dbpath, "PRAGMA page_count"), 64);
    free(g);
}
END_TEST

/* --- Start-up: corruption, migration, schema --- */

static int count_moved(char *name, size_t len)
{
    DIR *d = opendir(tmpdir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "store.db.corrupt-", 17) == 0 && !strstr(e->d_name, "-wal")) {
            n++;
            snprintf(name, len, "%s/%s", tmpdir, e->d_name);
        }
    closedir(d);
    return n;
}

START_TEST(test_store_moves_corrupt_file_aside)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    struct gw_store *s = open_ok(&cfg);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(put(s, "bucket:a", payload35, NULL), 0);
    uint64_t epoch = gw_store_epoch(s);
    gw_store_close(s);

    struct stat before;
    ck_assert_int_eq(stat(dbpath, &before), 0);
    int fd = open(dbpath, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    char garbage[100];
    memset(garbage, 0xA5, sizeof garbage);
    ck_assert_int_eq(pwrite(fd, garbage, sizeof garbage, 0), sizeof garbage);
    close(fd);

    s = open_ok(&cfg);
    struct gw_store_stats st = stats_of(s);
    ck_assert_int_eq(st.recovered, 1);
    ck_assert_uint_eq(st.depth, 0);
    ck_assert_uint_ne(gw_store_epoch(s), epoch);
    struct gw_store_ticket t;
    ck_assert_int_eq(put(s, "bucket:a", "fresh", &t), 0);
    ck_assert_uint_eq(t.id, 1);
    gw_store_close(s);

    char moved[512];
    ck_assert_int_eq(count_moved(moved, sizeof moved), 1);
    struct stat after;
    ck_assert_int_eq(stat(moved, &after), 0);
    ck_assert_int_eq(after.st_size, before.st_size);
    fd = open(moved, O_RDONLY);
    char head[100];
    ck_assert_int_eq(read(fd, head, sizeof head), sizeof head);
    close(fd);
    ck_assert_int_eq(memcmp(head, garbage, sizeof head), 0);
    ck_assert(integrity_ok(dbpath));
    ck_assert_int_eq(sql_int(dbpath, "SELECT count(*) FROM queue"), 1);
}
END_TEST

START_TEST(test_store_moves_file_with_damaged_page_aside)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    cfg.commit_rows = 1000;
    struct gw_store *s = open_ok(&cfg);
    for (int i = 0; i < 500; i++)
        ck_assert_int_eq(put(s, "bucket:a", payload35, NULL), 0);
    gw_store_close(s);
    ck_assert(integrity_ok(dbpath));
    /* garble the middle of every page from the 3rd on: b-tree pages fail the check */
    int fd = open(dbpath, O_RDWR);
    ck_assert_int_ge(fd, 0);
    struct stat sb;
    ck_assert_int_eq(fstat(fd, &sb), 0);
    char junk[64];
    memset(junk, 0xFF, sizeof junk);
    for (off_t off = 2 * 4096; off + 4096 <= sb.st_size; off += 4096)
        ck_assert_int_eq(pwrite(fd, junk, sizeof junk, off + 8), sizeof junk);
    close(fd);
    ck_assert(!integrity_ok(dbpath));

    s = open_ok(&cfg);
    ck_assert_int_eq(stats_of(s).recovered, 1);
    ck_assert_uint_eq(stats_of(s).depth, 0);
    gw_store_close(s);
    char moved[512];
    ck_assert_int_eq(count_moved(moved, sizeof moved), 1);
}
END_TEST

START_TEST(test_store_migrates_v1_file)
{
    /* A schema-1 file as gateway 0.1 development builds wrote it, made by hand. */
    sql_exec(dbpath,
             "CREATE TABLE schema_version (version INTEGER NOT NULL);"
             "INSERT INTO schema_version VALUES (1);"
             "CREATE TABLE queue (id INTEGER PRIMARY KEY, stream TEXT NOT NULL,"
             " seq INTEGER NOT NULL, action INTEGER NOT NULL, target TEXT NOT NULL,"
             " ts INTEGER NOT NULL, payload BLOB NOT NULL);"
             "CREATE INDEX queue_stream ON queue (stream, id);"
             "INSERT INTO queue VALUES (3, 'bucket:temps', 7, 5, 'temps', 1700000000000, x'8301');"
             "INSERT INTO queue VALUES (4, 'property:cfg', 1, 2, 'cfg', 1700000000001, x'');"
             "INSERT INTO queue VALUES (5, 'bucket:temps', 8, 5, 'temps', 1700000000002, x'8302');"
             "INSERT INTO queue VALUES (9, 'bucket:temps', 9, 5, 'temps', 1700000000003, "
             "x'8303');");
    struct gw_store_config cfg;
    test_config(&cfg);
    struct gw_store *s = open_ok(&cfg);
    struct gw_store_stats st = stats_of(s);
    ck_assert_uint_eq(st.depth, 4);
    ck_assert_uint_eq(st.streams, 2);
    ck_assert_uint_eq(st.bytes, 2 + 5 + 0 + 3 + 2 + 5 + 2 + 5 + 4 * GW_STORE_ROW_OVERHEAD);
    ck_assert_uint_eq(st.durable_id, 9);
    struct got *g = got_new();
    ck_assert_int_eq(gw_store_next(s, 10, collect, g), 4);
    int temps = 0;
    for (int i = 0; i < g->n; i++) {
        struct got_row *r = &g->rows[i];
        if (strcmp(r->stream, "bucket:temps") == 0) {
            ck_assert_uint_eq(r->seq, 7 + (uint64_t)temps);
            ck_assert_str_eq(r->target, "temps");
            ck_assert_int_eq(r->action, GW_STORE_WRITE_BUCKET);
            ck_assert_int_eq((unsigned char)r->payload[0], 0x83);
            ck_assert_int_eq((unsigned char)r->payload[1], 1 + temps);
            temps++;
        } else {
            ck_assert_str_eq(r->stream, "property:cfg");
            ck_assert_uint_eq(r->id, 4);
            ck_assert_int_eq(r->action, GW_STORE_SET_PROPERTY);
            ck_assert_str_eq(r->payload, "");
        }
    }
    ck_assert_int_eq(temps, 3);
    struct gw_store_ticket t;
    ck_assert_int_eq(put(s, "bucket:temps", "x", &t), 0);
    ck_assert_uint_eq(t.seq, 10);
    ck_assert_uint_eq(t.id, 10);
    gw_store_close(s);
    ck_assert_int_eq(sql_int(dbpath, "SELECT version FROM schema_version"), 2);
    ck_assert_int_eq(sql_int(dbpath, "SELECT count(*) FROM streams"), 2);
    ck_assert(integrity_ok(dbpath));
    free(g);
}
END_TEST

START_TEST(test_store_refuses_newer_schema_and_foreign_files)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    struct gw_store *s = NULL;
    sql_exec(dbpath, "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                     "INSERT INTO schema_version VALUES (99);");
    ck_assert_int_eq(gw_store_open(&cfg, &s), GW_ESTORE_SCHEMA);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(sql_int(dbpath, "SELECT version FROM schema_version"), 99);

    snprintf(dbpath, sizeof dbpath, "%s/other.db", tmpdir);
    sql_exec(dbpath, "CREATE TABLE photos (x);");
    ck_assert_int_eq(gw_store_open(&cfg, &s), GW_ESTORE_SCHEMA);
    ck_assert_int_eq(sql_int(dbpath, "SELECT count(*) FROM sqlite_schema"), 1);
    char moved[512];
    ck_assert_int_eq(count_moved(moved, sizeof moved), 0);
}
END_TEST

START_TEST(test_store_rejects_bad_input)
{
    struct gw_store_config cfg;
    test_config(&cfg);
    struct gw_store *s = NULL;
    cfg.commit_rows = 0;
    ck_assert_int_eq(gw_store_open(&cfg, &s), GW_EINVAL);
    test_config(&cfg);
    cfg.path = "/nonexistent-dir-gw/store.db";
    int rc = gw_store_open(&cfg, &s);
    ck_assert_int_lt(rc, 0);
    ck_assert_ptr_null(s);

    test_config(&cfg);
    cfg.max_row = 100;
    s = open_ok(&cfg);
    char name[300];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    struct gw_store_msg m = {.stream = "bucket:a", .action = GW_STORE_WRITE_BUCKET,
                             .target = "a", .payload = "x", .payload_len = 1};
    ck_assert_int_eq(gw_store_put(s, &m, NULL), 0);
    m.stream = "";
    ck_assert_int_eq(gw_store_put(s, &m, NULL), GW_EINVAL);
    m.stream = name;
    ck_assert_int_eq(gw_store_put(s, &m, NULL), GW_EINVAL);
    m.stream = "bucket:a";
    m.target = NULL;
    ck_assert_int_eq(gw_store_put(s, &m, NULL), GW_EINVAL);
    m.target = "a";
    m.action = (enum gw_store_action)1;
    ck_assert_int_eq(gw_store_put(s, &m, NULL), GW_EINVAL);
    m.action = GW_STORE_CALL_ENDPOINT;
    m.payload = NULL;
    ck_assert_int_eq(gw_store_put(s, &m, NULL), GW_EINVAL);
    m.payload_len = 0;
    ck_assert_int_eq(gw_store_put(s, &m, NULL), 0);
    char big[101] = {0};
    m.payload = big;
    m.payload_len = sizeof big;
    ck_assert_int_eq(gw_store_put(s, &m, NULL), GW_EINVAL);
    ck_assert_int_eq(gw_store_put(s, NULL, NULL), GW_EINVAL);
    ck_assert_uint_eq(stats_of(s).depth, 2);
    ck_assert_uint_eq(stats_of(s).refused, 0);
    gw_store_close(s);
    gw_store_close(NULL);
}
END_TEST

/* --- SIGKILL torture --- */

#define TORTURE_STREAMS 3

static void torture_durable(void *arg, int status, uint64_t first, uint64_t last)
{
    (void)first;
    int fd = *(int *)arg;
    if (status == 0 && write(fd, &last, sizeof last) != sizeof last)
        _exit(6);
}

static void torture_child(int fd)
{
    struct gw_store_config cfg;
    gw_store_config_init(&cfg);
    cfg.path = dbpath;
    cfg.check = GW_STORE_CHECK_NONE; /* the parent checks */
    cfg.budget_bytes = 1ull << 40;
    cfg.on_durable = torture_durable;
    cfg.durable_arg = &fd;
    struct gw_store *s = NULL;
    if (gw_store_open(&cfg, &s) != 0)
        _exit(2);
    /* Ids continue from the highest one in the file, so the child can write into each payload
     * the id and stream it expects the row to get; the parent checks that every row agrees. */
    struct gw_store_stats st;
    gw_store_read_stats(s, &st);
    uint64_t id = st.durable_id + 1;
    static const char *const names[TORTURE_STREAMS] = {"bucket:t0", "bucket:t1", "endpoint:t2"};
    char payload[64];
    for (uint64_t i = 0;; i++, id++) {
        unsigned k = (unsigned)(i % TORTURE_STREAMS);
        struct gw_store_msg m = {.stream = names[k], .action = GW_STORE_WRITE_BUCKET,
                                 .target = strchr(names[k], ':') + 1, .payload = payload};
        m.payload_len = (size_t)snprintf(payload, sizeof payload, "%u|%" PRIu64, k, id);
        struct gw_store_ticket t;
        if (gw_store_put(s, &m, &t) != 0 || t.id != id)
            _exit(3);
        if ((i & 255) == 0 && gw_store_poll(s, NULL) != 0)
            _exit(4);
    }
}

START_TEST(test_store_survives_20_sigkills)
{
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    fprintf(stderr, "torture seed %u\n", seed);
    uint64_t reported_total = 0;
    for (int run = 0; run < 20; run++) {
        int fds[2];
        ck_assert_int_eq(pipe(fds), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            torture_child(fds[1]);
            _exit(7);
        }
        close(fds[1]);
        /* kill at a random moment between 1 and 150 ms after start */
        struct timespec ts = {0, (long)(1 + rand_r(&seed) % 150) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                      "run %d: child ended on its own (status %d)", run, status);
        uint64_t v, reported = 0;
        while (read(fds[0], &v, sizeof v) == sizeof v)
            if (v > reported)
                reported = v;
        close(fds[0]);
        if (reported > reported_total)
            reported_total = reported;

        /* integrity first, on an independent connection; then through the store */
        if (access(dbpath, F_OK) != 0) { /* killed before SQLite created the file */
            ck_assert_uint_eq(reported_total, 0);
            continue;
        }
        ck_assert_msg(integrity_ok(dbpath), "run %d: integrity_check failed: %s", run,
                      integrity_msg);
        if (sql_int(dbpath, "SELECT count(*) FROM sqlite_schema WHERE name = 'meta'") == 0) {
            /* killed while creating or migrating the schema (each migration is one
             * transaction, meta comes with the last): nothing can have been reported durable */
            ck_assert_uint_eq(reported_total, 0);
            continue;
        }
        int64_t rows = sql_int(dbpath, "SELECT count(*) FROM queue");
        int64_t max_id = sql_int(dbpath, "SELECT coalesce(max(id), 0) FROM queue");
        ck_assert_msg(rows == max_id, "run %d: ids not contiguous (%" PRId64 " rows, max %" PRId64
                      ")", run, rows, max_id);
        ck_assert_msg((uint64_t)max_id >= reported_total,
                      "run %d: reported durable %" PRIu64 " but only %" PRId64 " rows", run,
                      reported_total, max_id);
        ck_assert_int_eq(sql_int(dbpath, "SELECT count(*) FROM (SELECT sid, seq FROM queue "
                                         "GROUP BY sid, seq HAVING count(*) > 1)"),
                         0);
        /* per stream: seqs are exactly 1..count */
        ck_assert_int_eq(sql_int(dbpath, "SELECT count(*) FROM (SELECT sid FROM queue GROUP BY "
                                         "sid HAVING min(seq) != 1 OR max(seq) != count(*))"),
                         0);
        /* every payload names the row's own stream and id */
        ck_assert_int_eq(
            sql_int(dbpath, "SELECT count(*) FROM queue q JOIN streams s ON s.sid = q.sid "
                            "WHERE CAST(q.payload AS TEXT) != (CASE s.name WHEN 'bucket:t0' "
                            "THEN '0' WHEN 'bucket:t1' THEN '1' WHEN 'endpoint:t2' THEN '2' "
                            "ELSE 'x' END) || '|' || q.id"),
            0);
    }
    ck_assert_uint_gt(reported_total, 0);
    /* the store opens on the result with its own full check, and hands out every row once */
    struct gw_store_config cfg;
    gw_store_config_init(&cfg);
    cfg.path = dbpath;
    cfg.budget_bytes = 1ull << 40;
    struct gw_store *s = open_ok(&cfg);
    struct gw_store_stats st = stats_of(s);
    ck_assert_uint_ge(st.depth, reported_total);
    ck_assert_uint_eq(st.durable_id, st.depth);
    gw_store_close(s);
    fprintf(stderr, "torture: 20 kills, %" PRIu64 " rows stored, highest reported durable %" PRIu64
                    "\n",
            st.depth, reported_total);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("queue");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_store_replays_in_insert_order_across_reopen);
    tcase_add_test(tc, test_store_ids_and_seqs_not_reused_after_drain);
    tcase_add_test(tc, test_store_round_robin_across_streams);
    tcase_add_test(tc, test_store_ack_deletes_nack_resends);
    tcase_add_test(tc, test_store_callback_can_decline);
    tcase_add_test(tc, test_store_inflight_rows_return_after_reopen);
    suite_add_tcase(s, tc);

    tc = tcase_create("durability");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_store_hands_out_only_durable_rows);
    tcase_add_test(tc, test_store_sigkill_mid_batch_keeps_committed_rows);
    tcase_add_test(tc, test_store_second_process_gets_busy);
    tcase_add_test(tc, test_store_failed_commit_reports_lost_tickets);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_store_budget_drop_oldest_exact_counts);
    tcase_add_test(tc, test_store_budget_refuse_new_exact_counts);
    tcase_add_test(tc, test_store_expires_old_rows);
    tcase_add_test(tc, test_store_rejects_bad_input);
    tcase_add_test(tc, test_store_shrinks_file_when_drained);
    suite_add_tcase(s, tc);

    tc = tcase_create("startup");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_store_moves_corrupt_file_aside);
    tcase_add_test(tc, test_store_moves_file_with_damaged_page_aside);
    tcase_add_test(tc, test_store_migrates_v1_file);
    tcase_add_test(tc, test_store_refuses_newer_schema_and_foreign_files);
    suite_add_tcase(s, tc);

    tc = tcase_create("torture");
    tcase_set_tags(tc, "torture"); /* CK_EXCLUDE_TAGS=torture skips it (scripts/package, qemu) */
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_store_survives_20_sigkills);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(store_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
