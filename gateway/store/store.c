/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SQLite store-and-forward queue (see gw/store.h for the contract: what "accepted" means,
 * durability levels, at-least-once delivery). Called by producers (gw_store_put), by the uplink
 * session (gw_store_next/ack/nack) and by the loop's timer (gw_store_poll), all on the loop thread.
 * Relies on SQLite 3.35+ and gw_base. Schema migrations are the SQL files in store_sql/, compiled
 * into store_sql.h by CMake.
 *
 * Design in short: one connection, exclusive lock, WAL. Every change (insert, delete) goes into
 * the one open transaction, which is committed by group commit. The drain side reads only rows
 * with id <= durable id. What is in flight lives in a hash set in memory, never on disk, so a
 * crash makes every unacked row pending again. Depth and bytes are kept in memory (loaded from the
 * file at open) so that the budget check costs no query. A failed commit (disk full, I/O error)
 * rolls back, reports the lost tickets and reloads that state from the file; a full file system
 * becomes a reduced budget, helped by a small reserve file and a short WAL when space is low.
 */
#include "gw/store.h"
#include "gw/error.h"
#include "gw/log.h"
#include "gw/mem.h"

#include "store_sql.h"

#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

_Static_assert(STORE_SQL_COUNT == GW_STORE_SCHEMA_VERSION,
               "store_sql/ must hold exactly GW_STORE_SCHEMA_VERSION migrations");

#define EXPIRE_EVERY_MS 1000
#define SHRINK_PAGES 256 /* 1 MiB of 4 KiB pages */
#define SPACE_PROBE_MS 1000           /* free-space check (statvfs) at most this often */
#define SPACE_RETURNED (2ull << 20)   /* free bytes that end the "file system full" state */
#define SPACE_LOW (16ull << 20)       /* below: low-space mode (small WAL) ... */
#define SPACE_OK (32ull << 20)        /* ... until this much is free again */
#define WAL_PAGES 1000                /* SQLite's default auto-checkpoint */
#define WAL_PAGES_LOW 16              /* in low-space mode: the WAL stays about 64 KiB */
#define RESERVE_BYTES (512 << 10)     /* "<path>-reserve": room freed when the disk fills */
#define FAULT_LOG_MS 10000            /* repeated write failures: a summary this often */

struct stream {
    int64_t sid;          /* streams.sid */
    char *name;
    uint64_t next_seq;    /* the seq the next put gets */
    uint64_t depth;       /* rows of this stream in the file (incl. uncommitted) */
    uint64_t cursor;      /* gw_store_next() has looked at every row up to this id */
    uint64_t high_water;  /* highest id this process ever handed out for this stream */
    uint64_t done_call;   /* == store->call: nothing more to hand out in this gw_store_next() */
    int dirty;            /* next_seq changed in the open transaction */
};

struct flight {
    uint64_t id;     /* 0 = empty slot */
    uint64_t size;   /* counted bytes */
    unsigned stream; /* index into store->streams */
};

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_INSERT,
    ST_DELETE,
    ST_OLDEST,
    ST_OLDEST_TS,
    ST_NEXT,
    ST_STREAM_ADD,
    ST_STREAM_SEQ,
    ST_META_SET,
    ST_COUNT_
};

static const char *const stmt_sql[ST_COUNT_] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_INSERT] = "INSERT INTO queue (id, sid, seq, action, ts, target, payload) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)",
    [ST_DELETE] = "DELETE FROM queue WHERE id = ?",
    [ST_OLDEST] = "SELECT id, sid, ts, length(payload) + length(CAST(target AS BLOB)) FROM queue "
                  "ORDER BY id LIMIT 1",
    [ST_OLDEST_TS] = "SELECT ts FROM queue ORDER BY id LIMIT 1",
    [ST_NEXT] = "SELECT id, seq, action, ts, target, payload FROM queue "
                "WHERE sid = ? AND id > ? AND id <= ? ORDER BY id",
    [ST_STREAM_ADD] = "INSERT INTO streams (name, next_seq) VALUES (?, 1)",
    [ST_STREAM_SEQ] = "UPDATE streams SET next_seq = ? WHERE sid = ?",
    [ST_META_SET] = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
};

struct gw_store {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT_];
    struct gw_store_config cfg; /* cfg.path points to path */
    char *path;
    uint64_t epoch;

    struct stream *streams;
    unsigned nstreams, streams_cap;
    unsigned last_stream; /* lookup cache */
    unsigned rr;          /* stream that starts the next round of gw_store_next() */
    uint64_t call;        /* gw_store_next() calls, for stream.done_call */

    struct flight *flight;
    size_t flight_cap, flight_count;

    uint64_t next_id;    /* the ticket the next put gets */
    uint64_t durable_id; /* highest committed ticket */
    int in_txn;
    uint64_t txn_first;  /* first ticket of the open transaction */
    int64_t txn_start;   /* ms, clock time of its first change */
    /* Deletions in the open transaction, by cause: a failed commit takes them back from the
     * counters. Drops and expiries also make the drain wait for the commit (gw_store_next()). */
    uint64_t txn_dropped, txn_expired, txn_delivered;

    uint64_t depth, bytes;
    int64_t last_expire;
    int backlog, full, recovered;
    struct gw_store_stats c; /* only the counters are used */

    /* Write failures (disk full, I/O errors). fault: the code of the last failed commit, 0 once
     * a commit works again. disk_cap: while the file system is full, the byte count at which it
     * filled up (a little less) acts as the budget, so the configured policy applies; 0 = none. */
    int fault;
    int64_t fault_since, fault_logged;
    uint64_t fault_commits, fault_lost;
    uint64_t disk_cap;
    int64_t space_probe;
    int low_space;
    int reserve; /* 1 while "<path>-reserve" holds RESERVE_BYTES */
    char uid[48];
};

/* --- Small helpers --- */

static int64_t clock_default(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms(const struct gw_store *s)
{
    return s->cfg.clock(s->cfg.clock_arg);
}

static int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return 0;
    case SQLITE_FULL:
        return GW_ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return GW_EBUSY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return GW_ESTORE_CORRUPT;
    case SQLITE_IOERR:
        return GW_EIO;
    case SQLITE_NOMEM:
        return GW_ENOMEM;
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
        return GW_EACCES;
    default:
        return GW_ESTORE;
    }
}

/* Logs the SQLite error once, where the decision is made, and returns the GW_E code. */
static int sql_error(const struct gw_store *s, int rc, const char *what)
{
    int err = map_rc(rc);
    if (s->fault && (err == GW_ENOSPC || err == GW_EIO)) { /* already reported, see txn_lost */
        gw_log_debug("store %s: %s failed: %s (sqlite %d)", s->path, what,
                     s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc), rc);
        return err;
    }
    gw_log_err("store %s: %s failed: %s (sqlite %d)", s->path, what,
               s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc), rc);
    return map_rc(rc);
}

static int exec_sql(struct gw_store *s, const char *sql, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        gw_log_err("store %s: %s failed: %s (sqlite %d)", s->path, what,
                   msg ? msg : sqlite3_errstr(rc), rc);
        sqlite3_free(msg);
        return map_rc(rc);
    }
    return 0;
}

/* Runs a statement that returns no rows (or whose rows do not matter). */
static int step_done(struct gw_store *s, enum stmt_id id, const char *what)
{
    sqlite3_stmt *st = s->st[id];
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return sql_error(s, rc, what);
    return 0;
}

/* First column of the first row of sql as an integer; *found says whether there was a row. */
static int query_int(struct gw_store *s, const char *sql, int64_t *value, int *found)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sql_error(s, rc, sql);
    rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW) {
        *value = sqlite3_column_int64(st, 0);
        rc = SQLITE_DONE;
    }
    if (rc != SQLITE_DONE)
        rc = sql_error(s, rc, sql);
    else
        rc = 0;
    sqlite3_finalize(st);
    return rc;
}

static uint64_t row_size(uint64_t payload_and_target)
{
    return payload_and_target + GW_STORE_ROW_OVERHEAD;
}

/* --- In-flight set: open addressing, linear probing, backward-shift deletion --- */

static size_t flight_home(uint64_t id, size_t cap)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

static struct flight *flight_find(struct gw_store *s, uint64_t id)
{
    if (!s->flight_count)
        return NULL;
    for (size_t i = flight_home(id, s->flight_cap);; i = (i + 1) & (s->flight_cap - 1)) {
        if (s->flight[i].id == id)
            return &s->flight[i];
        if (!s->flight[i].id)
            return NULL;
    }
}

static void flight_put_slot(struct flight *tab, size_t cap, const struct flight *f)
{
    size_t i = flight_home(f->id, cap);
    while (tab[i].id)
        i = (i + 1) & (cap - 1);
    tab[i] = *f;
}

static void flight_add(struct gw_store *s, uint64_t id, uint64_t size, unsigned stream)
{
    if ((s->flight_count + 1) * 2 > s->flight_cap) {
        size_t cap = s->flight_cap ? s->flight_cap * 2 : 64;
        struct flight *tab = gw_calloc(cap, sizeof *tab);
        for (size_t i = 0; i < s->flight_cap; i++)
            if (s->flight[i].id)
                flight_put_slot(tab, cap, &s->flight[i]);
        free(s->flight);
        s->flight = tab;
        s->flight_cap = cap;
    }
    struct flight f = {.id = id, .size = size, .stream = stream};
    flight_put_slot(s->flight, s->flight_cap, &f);
    s->flight_count++;
}

static void flight_remove(struct gw_store *s, struct flight *f)
{
    size_t mask = s->flight_cap - 1;
    size_t i = (size_t)(f - s->flight);
    s->flight[i].id = 0;
    s->flight_count--;
    for (size_t j = (i + 1) & mask; s->flight[j].id; j = (j + 1) & mask) {
        size_t k = flight_home(s->flight[j].id, s->flight_cap);
        /* The entry at j may move to the hole at i unless its home lies cyclically in (i, j]. */
        int home_between = i <= j ? (i < k && k <= j) : (k > i || k <= j);
        if (!home_between) {
            s->flight[i] = s->flight[j];
            s->flight[j].id = 0;
            i = j;
        }
    }
}

static void flight_clear(struct gw_store *s)
{
    if (s->flight)
        memset(s->flight, 0, s->flight_cap * sizeof *s->flight);
    s->flight_count = 0;
}

/* --- Streams --- */

static void streams_free(struct gw_store *s)
{
    for (unsigned i = 0; i < s->nstreams; i++)
        free(s->streams[i].name);
    free(s->streams);
    s->streams = NULL;
    s->nstreams = s->streams_cap = 0;
    s->last_stream = s->rr = 0;
}

static struct stream *stream_append(struct gw_store *s, int64_t sid, const char *name)
{
    if (s->nstreams == s->streams_cap) {
        s->streams_cap = s->streams_cap ? s->streams_cap * 2 : 8;
        s->streams = gw_realloc(s->streams, s->streams_cap * sizeof *s->streams);
    }
    struct stream *st = &s->streams[s->nstreams++];
    memset(st, 0, sizeof *st);
    st->sid = sid;
    st->name = gw_strdup(name);
    st->next_seq = 1;
    return st;
}

static struct stream *stream_by_sid(struct gw_store *s, int64_t sid)
{
    for (unsigned i = 0; i < s->nstreams; i++)
        if (s->streams[i].sid == sid)
            return &s->streams[i];
    return NULL;
}

/* Streams are few (one per bucket, endpoint or property), so a scan with a one-entry cache. */
static struct stream *stream_by_name(struct gw_store *s, const char *name)
{
    if (s->last_stream < s->nstreams && strcmp(s->streams[s->last_stream].name, name) == 0)
        return &s->streams[s->last_stream];
    for (unsigned i = 0; i < s->nstreams; i++)
        if (strcmp(s->streams[i].name, name) == 0) {
            s->last_stream = i;
            return &s->streams[i];
        }
    return NULL;
}

/* --- Loading the in-memory state from the file --- */

static int load_state(struct gw_store *s)
{
    sqlite3_stmt *st = NULL;
    int rc;
    uint64_t keep_next = s->next_id;

    streams_free(s);
    flight_clear(s);
    s->depth = s->bytes = 0;

    rc = sqlite3_prepare_v2(s->db, "SELECT sid, name, next_seq FROM streams ORDER BY sid", -1, &st,
                            NULL);
    if (rc != SQLITE_OK)
        return sql_error(s, rc, "reading streams");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 1);
        struct stream *str = stream_append(s, sqlite3_column_int64(st, 0), name ? name : "");
        int64_t seq = sqlite3_column_int64(st, 2);
        str->next_seq = seq > 0 ? (uint64_t)seq : 1;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_error(s, rc, "reading streams");

    rc = sqlite3_prepare_v2(s->db,
                            "SELECT sid, count(*), "
                            "coalesce(sum(length(payload) + length(CAST(target AS BLOB))), 0), "
                            "max(seq), max(id) FROM queue GROUP BY sid",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sql_error(s, rc, "counting rows");
    uint64_t max_id = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct stream *str = stream_by_sid(s, sqlite3_column_int64(st, 0));
        uint64_t n = (uint64_t)sqlite3_column_int64(st, 1);
        uint64_t sum = (uint64_t)sqlite3_column_int64(st, 2);
        uint64_t maxseq = (uint64_t)sqlite3_column_int64(st, 3);
        uint64_t mid = (uint64_t)sqlite3_column_int64(st, 4);
        if (!str) {
            gw_log_err("store %s: %" PRIu64 " rows belong to unknown stream %lld", s->path, n,
                       (long long)sqlite3_column_int64(st, 0));
            sqlite3_finalize(st);
            return GW_ESTORE_CORRUPT;
        }
        str->depth = n;
        if (str->next_seq <= maxseq)
            str->next_seq = maxseq + 1;
        s->depth += n;
        s->bytes += sum + n * GW_STORE_ROW_OVERHEAD;
        if (mid > max_id)
            max_id = mid;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_error(s, rc, "counting rows");

    int64_t last = 0;
    int found = 0;
    rc = query_int(s, "SELECT value FROM meta WHERE key = 'last_id'", &last, &found);
    if (rc)
        return rc;
    if (found && (uint64_t)last > max_id)
        max_id = (uint64_t)last;
    s->next_id = max_id + 1;
    s->durable_id = max_id;
    if (keep_next > s->next_id) /* ids of a rolled-back transaction are never given out again */
        s->next_id = keep_next;
    return 0;
}

/* --- Transactions and group commit --- */

static void notify(struct gw_store *s, int status, uint64_t first, uint64_t last)
{
    if (s->cfg.on_durable && first <= last)
        s->cfg.on_durable(s->cfg.durable_arg, status, first, last);
}

/* The group-commit window of the open transaction is over (a clock stepped back counts too). */
static int window_over(const struct gw_store *s, int64_t now)
{
    int64_t age = now - s->txn_start;
    return age < 0 || age >= (int64_t)s->cfg.commit_ms;
}

static int ensure_txn(struct gw_store *s)
{
    if (s->in_txn)
        return 0;
    int rc = step_done(s, ST_BEGIN, "BEGIN");
    if (rc)
        return rc;
    s->in_txn = 1;
    s->txn_first = s->next_id;
    s->txn_start = now_ms(s);
    return 0;
}

/* The directory of the store file, for statvfs. */
static void store_dir(const struct gw_store *s, char *dir, size_t len)
{
    const char *slash = strrchr(s->path, '/');
    if (!slash)
        snprintf(dir, len, ".");
    else if (slash == s->path)
        snprintf(dir, len, "/");
    else
        snprintf(dir, len, "%.*s", (int)(slash - s->path), s->path);
}

/*
 * The reserve: a file of RESERVE_BYTES beside the store, allocated while there is room. When the
 * file system fills up, deleting it gives SQLite the space to checkpoint the WAL and to commit the
 * deletions that make room (drop_oldest), which themselves need a few pages of WAL. Without it a
 * full disk could leave nothing writable at all. Made again once space returns.
 */
static void reserve_make(struct gw_store *s)
{
    char name[PATH_MAX + 16];
    snprintf(name, sizeof name, "%s-reserve", s->path);
    int fd = open(name, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    int rc = fd < 0 ? errno : posix_fallocate(fd, 0, RESERVE_BYTES);
    if (fd >= 0)
        close(fd);
    s->reserve = rc == 0;
    if (rc) {
        unlink(name);
        gw_log_info("store %s: no reserve file %s (%s): a full disk may block writes until "
                    "space returns", s->path, name, strerror(rc));
    }
}

static int reserve_release(struct gw_store *s)
{
    if (!s->reserve)
        return 0;
    char name[PATH_MAX + 16];
    snprintf(name, sizeof name, "%s-reserve", s->path);
    s->reserve = 0;
    return unlink(name) == 0;
}

/* The budget in force: the configured one, or less while the file system is full. */
static uint64_t budget_now(const struct gw_store *s)
{
    return s->disk_cap && s->disk_cap < s->cfg.budget_bytes ? s->disk_cap : s->cfg.budget_bytes;
}

/*
 * The file system is full (a commit failed with ENOSPC). What the file holds now, a little less,
 * becomes the budget, so the configured policy applies: drop_oldest makes room by deleting the
 * oldest rows (their pages are reused), refuse_new refuses new rows. The reserve file is given
 * up, the WAL is checkpointed and truncated now and checkpointed after every commit while this
 * lasts, so that it is reused from its start instead of growing. probe_space() ends it once the
 * file system has room again.
 */
static void disk_full(struct gw_store *s, int64_t now)
{
    uint64_t cap = s->bytes / 20 * 19;
    if (cap == 0)
        cap = 1;
    if (!s->disk_cap || cap < s->disk_cap) {
        gw_log_warn("store %s: file system full at %" PRIu64 " rows (%" PRIu64 " bytes): "
                    "using %" PRIu64 " bytes as the budget until space returns (%s)",
                    s->path, s->depth, s->bytes, cap,
                    s->cfg.policy == GW_STORE_REFUSE_NEW ? "refusing new rows"
                                                          : "dropping the oldest rows");
        s->disk_cap = cap;
    }
    if (reserve_release(s))
        gw_log_notice("store %s: released its reserve file (%d KiB) to make room", s->path,
                      RESERVE_BYTES >> 10);
    s->space_probe = now;
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc != SQLITE_OK)
        gw_log_debug("store %s: checkpoint on a full file system failed: %s", s->path,
                     sqlite3_errmsg(s->db));
}

/*
 * Free space on the store's file system, at most once per SPACE_PROBE_MS. Below SPACE_LOW the WAL
 * is checkpointed every WAL_PAGES_LOW pages instead of SQLite's 1000 (4 MiB): a WAL that holds
 * megabytes of pages not yet in the main file when the disk fills could never be checkpointed
 * (the main file would have to grow), and nothing could be written again until space returns.
 * While the file system is full (disk_cap): once it has room again, back to the configured budget.
 */
static void probe_space(struct gw_store *s, int64_t now)
{
    if (now - s->space_probe < SPACE_PROBE_MS && now >= s->space_probe && s->space_probe)
        return;
    s->space_probe = now;
    char dir[PATH_MAX];
    store_dir(s, dir, sizeof dir);
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0)
        return;
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    int low = avail < SPACE_LOW || (s->low_space && avail < SPACE_OK) || s->disk_cap;
    if (low != s->low_space) {
        s->low_space = low;
        sqlite3_wal_autocheckpoint(s->db, low ? WAL_PAGES_LOW : WAL_PAGES);
        if (low)
            gw_log_notice("store %s: %" PRIu64 " KiB free on its file system: low-space mode "
                          "(the WAL is checkpointed every %d pages)",
                          s->path, avail / 1024, WAL_PAGES_LOW);
        else
            gw_log_notice("store %s: %" PRIu64 " KiB free on its file system: low-space mode "
                          "ended", s->path, avail / 1024);
    }
    if (!s->disk_cap || avail < SPACE_RETURNED)
        return;
    gw_log_notice("store %s: the file system has room again (%" PRIu64 " KiB free): back to the "
                  "configured budget of %" PRIu64 " bytes",
                  s->path, avail / 1024, s->cfg.budget_bytes);
    s->disk_cap = 0;
    reserve_make(s);
}

/* The open transaction is gone (failed commit, or SQLite rolled it back on an I/O error): tell
 * the producers, then rebuild the in-memory state from what the file really holds. */
static int txn_lost(struct gw_store *s, int err)
{
    if (!sqlite3_get_autocommit(s->db)) {
        int rc = sqlite3_step(s->st[ST_ROLLBACK]);
        sqlite3_reset(s->st[ST_ROLLBACK]);
        if (rc != SQLITE_DONE)
            sql_error(s, rc, "ROLLBACK");
    }
    uint64_t first = s->txn_first, last = s->next_id - 1;
    uint64_t n = last >= first ? last - first + 1 : 0;
    s->in_txn = 0;
    s->c.dropped -= s->txn_dropped;
    s->c.expired -= s->txn_expired;
    s->c.delivered -= s->txn_delivered;
    s->txn_dropped = s->txn_expired = s->txn_delivered = 0;
    s->c.write_errors++;
    s->c.lost += n;
    int64_t now = now_ms(s);
    if (!s->fault) {
        s->fault_since = s->fault_logged = now;
        s->fault_commits = s->fault_lost = 0;
        gw_log_err("store %s: cannot write (%s): transaction lost, tickets %" PRIu64 "..%" PRIu64
                   " (%" PRIu64 " rows) were not stored, acks since the last commit will be "
                   "replayed; trying again at every commit",
                   s->path, gw_strerror(err), first, last, n);
    } else {
        gw_log_info("store %s: cannot write (%s): tickets %" PRIu64 "..%" PRIu64 " (%" PRIu64
                    " rows) were not stored",
                    s->path, gw_strerror(err), first, last, n);
        if (now - s->fault_logged >= FAULT_LOG_MS || now < s->fault_logged) {
            s->fault_logged = now;
            gw_log_warn("store %s: still cannot write (%s) after %" PRId64 " s: %" PRIu64
                        " failed commits, %" PRIu64 " rows lost so far",
                        s->path, gw_strerror(err), (now - s->fault_since) / 1000,
                        s->fault_commits + 1, s->fault_lost + n);
        }
    }
    s->fault = err;
    s->fault_commits++;
    s->fault_lost += n;
    notify(s, err, first, last);
    int rc = load_state(s);
    if (rc)
        gw_log_err("store %s: reloading state after the failure failed (%s)", s->path,
                   gw_strerror(rc));
    if (err == GW_ENOSPC)
        disk_full(s, now);
    return err;
}

/* After a statement failed: if SQLite has rolled the whole transaction back, handle that. */
static int stmt_failed(struct gw_store *s, int rc, const char *what)
{
    int err = sql_error(s, rc, what);
    if (s->in_txn && sqlite3_get_autocommit(s->db))
        return txn_lost(s, err);
    return err;
}

static int commit(struct gw_store *s)
{
    if (!s->in_txn)
        return 0;
    int rc = 0;
    for (unsigned i = 0; i < s->nstreams && !rc; i++) {
        struct stream *st = &s->streams[i];
        if (!st->dirty)
            continue;
        sqlite3_bind_int64(s->st[ST_STREAM_SEQ], 1, (int64_t)st->next_seq);
        sqlite3_bind_int64(s->st[ST_STREAM_SEQ], 2, st->sid);
        rc = step_done(s, ST_STREAM_SEQ, "saving stream sequence");
        st->dirty = 0;
    }
    if (!rc && s->next_id > s->txn_first) {
        sqlite3_bind_text(s->st[ST_META_SET], 1, "last_id", -1, SQLITE_STATIC);
        sqlite3_bind_int64(s->st[ST_META_SET], 2, (int64_t)(s->next_id - 1));
        rc = step_done(s, ST_META_SET, "saving last id");
    }
    if (!rc)
        rc = step_done(s, ST_COMMIT, "COMMIT");
    if (rc)
        return txn_lost(s, rc);
    s->in_txn = 0;
    s->txn_dropped = s->txn_expired = s->txn_delivered = 0;
    uint64_t first = s->txn_first, last = s->next_id - 1;
    s->durable_id = last;
    s->c.commits++;
    if (s->fault) {
        gw_log_notice("store %s: writing again after %" PRIu64 " failed commit(s) in %" PRId64
                      " s (%s); %" PRIu64 " row(s) taken meanwhile were lost",
                      s->path, s->fault_commits, (now_ms(s) - s->fault_since) / 1000,
                      gw_strerror(s->fault), s->fault_lost);
        s->fault = 0;
    }
    if (s->disk_cap)
        sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    if (last >= first) {
        s->c.accepted += last - first + 1;
        notify(s, 0, first, last);
    }
    return 0;
}

/* --- Deleting rows --- */

static int delete_row(struct gw_store *s, uint64_t id, struct stream *st, uint64_t size)
{
    int rc = ensure_txn(s);
    if (rc)
        return rc;
    sqlite3_bind_int64(s->st[ST_DELETE], 1, (int64_t)id);
    rc = sqlite3_step(s->st[ST_DELETE]);
    sqlite3_reset(s->st[ST_DELETE]);
    if (rc != SQLITE_DONE)
        return stmt_failed(s, rc, "deleting a row");
    if (sqlite3_changes(s->db) == 0)
        return GW_ENOENT;
    struct flight *f = flight_find(s, id);
    if (f)
        flight_remove(s, f);
    if (st && st->depth)
        st->depth--;
    if (s->depth)
        s->depth--;
    s->bytes = s->bytes >= size ? s->bytes - size : 0;
    return 0;
}

/* Reads the oldest row. Returns 1 with the fields filled, 0 when empty, or a GW_E code. */
static int oldest_row(struct gw_store *s, uint64_t *id, int64_t *sid, int64_t *ts, uint64_t *size)
{
    /* Always set, so that callers (and the compiler) never see an unset output. */
    *id = *size = 0;
    *sid = *ts = 0;
    sqlite3_stmt *q = s->st[ST_OLDEST];
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *id = (uint64_t)sqlite3_column_int64(q, 0);
        *sid = sqlite3_column_int64(q, 1);
        *ts = sqlite3_column_int64(q, 2);
        *size = row_size((uint64_t)sqlite3_column_int64(q, 3));
    }
    sqlite3_reset(q);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return stmt_failed(s, rc, "reading the oldest row");
}

/* Drop-oldest: deletes the oldest row. A row is only dropped once it is accepted, so the counters
 * add up (accepted = delivered + dropped + expired + what is left): commit first if needed. */
static int drop_oldest(struct gw_store *s)
{
    uint64_t id, size;
    int64_t sid, ts;
    int rc = oldest_row(s, &id, &sid, &ts, &size);
    if (rc <= 0)
        return rc ? rc : GW_ENOENT;
    if (id > s->durable_id && (rc = commit(s)) != 0)
        return rc;
    rc = delete_row(s, id, stream_by_sid(s, sid), size);
    if (rc)
        return rc;
    s->txn_dropped++;
    s->c.dropped++;
    return 0;
}

static int expire(struct gw_store *s, int64_t now)
{
    if (s->cfg.max_age_ms <= 0)
        return 0;
    int64_t cutoff = now - s->cfg.max_age_ms;
    uint64_t n = 0;
    for (;;) {
        uint64_t id, size;
        int64_t sid, ts;
        int rc = oldest_row(s, &id, &sid, &ts, &size);
        if (rc < 0)
            return rc;
        /* Rows are in acceptance order, so the first young row ends the scan (a wall clock
         * stepped back can delay expiry of a few rows; it never expires young ones). */
        if (rc == 0 || ts >= cutoff || id > s->durable_id)
            break;
        if ((rc = delete_row(s, id, stream_by_sid(s, sid), size)) != 0)
            return rc;
        n++;
    }
    if (n) {
        s->c.expired += n;
        s->txn_expired += n;
        gw_log_warn("store %s: %" PRIu64 " rows expired (older than %" PRId64
                    " s), %" PRIu64 " rows left",
                    s->path, n, s->cfg.max_age_ms / 1000, s->depth);
    }
    return 0;
}

/* --- State changes that are logged --- */

static void set_full(struct gw_store *s)
{
    if (s->full)
        return;
    s->full = 1;
    gw_log_warn("store %s: %s of %" PRIu64 " bytes reached (%" PRIu64 " rows), %s",
                s->path, s->disk_cap ? "file system full: reduced budget" : "byte budget",
                budget_now(s), s->depth,
                s->cfg.policy == GW_STORE_REFUSE_NEW ? "refusing new rows"
                                                      : "dropping the oldest rows");
}

static void check_state(struct gw_store *s, int64_t now)
{
    if (s->full && s->bytes < budget_now(s) / 10 * 9) {
        s->full = 0;
        gw_log_notice("store %s: below 90%% of the byte budget again (%" PRIu64 " bytes); "
                      "dropped %" PRIu64 ", refused %" PRIu64 " so far",
                      s->path, s->bytes, s->c.dropped, s->c.refused);
    }
    if (s->depth == 0) {
        if (s->backlog) {
            s->backlog = 0;
            gw_log_notice("store %s: backlog delivered, queue empty", s->path);
        }
        return;
    }
    if (s->backlog)
        return;
    sqlite3_stmt *q = s->st[ST_OLDEST_TS];
    if (sqlite3_step(q) == SQLITE_ROW) {
        int64_t age = now - sqlite3_column_int64(q, 0);
        if (age >= (int64_t)s->cfg.backlog_ms) {
            s->backlog = 1;
            gw_log_notice("store %s: backlog of %" PRIu64 " rows (%" PRIu64
                          " bytes), oldest %" PRId64 " s old",
                          s->path, s->depth, s->bytes, age / 1000);
        }
    }
    sqlite3_reset(q);
}

/* --- Opening, checking, migrating, recovering --- */

void gw_store_config_init(struct gw_store_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->path = GW_STORE_DEFAULT_PATH;
    cfg->budget_bytes = 64ull << 20;
    cfg->max_age_ms = 7ll * 24 * 3600 * 1000;
    cfg->policy = GW_STORE_DROP_OLDEST;
    cfg->commit_ms = 250;
    cfg->commit_rows = 500;
    cfg->sync = GW_STORE_SYNC_FULL;
    cfg->check = GW_STORE_CHECK_FULL;
    cfg->max_row = 256 * 1024;
    cfg->cache_kib = 2048;
    cfg->backlog_ms = 5000;
}

static int check_config(const struct gw_store_config *cfg)
{
    const char *bad = NULL;
    if (!cfg->path || !*cfg->path)
        bad = "path is empty";
    else if (!cfg->budget_bytes)
        bad = "budget_bytes is 0";
    else if (!cfg->commit_rows)
        bad = "commit_rows is 0";
    else if (cfg->max_age_ms < 0)
        bad = "max_age_ms is negative";
    else if (cfg->policy != GW_STORE_DROP_OLDEST && cfg->policy != GW_STORE_REFUSE_NEW)
        bad = "policy is unknown";
    else if (cfg->sync != GW_STORE_SYNC_FULL && cfg->sync != GW_STORE_SYNC_NORMAL)
        bad = "sync is unknown";
    else if ((unsigned)cfg->check > GW_STORE_CHECK_NONE)
        bad = "check is unknown";
    else if (!cfg->max_row || cfg->max_row > (size_t)INT_MAX - 2 * GW_STORE_MAX_NAME)
        bad = "max_row is 0 or above 2 GiB";
    if (bad) {
        gw_log_err("store: invalid configuration: %s", bad);
        return GW_EINVAL;
    }
    return 0;
}

static void close_db(struct gw_store *s)
{
    for (int i = 0; i < ST_COUNT_; i++) {
        sqlite3_finalize(s->st[i]);
        s->st[i] = NULL;
    }
    if (s->db) {
        int rc = sqlite3_close(s->db);
        if (rc != SQLITE_OK)
            gw_log_err("store %s: close failed: %s", s->path, sqlite3_errstr(rc));
    }
    s->db = NULL;
    s->in_txn = 0;
}

static int integrity_check(struct gw_store *s)
{
    if (s->cfg.check == GW_STORE_CHECK_NONE)
        return 0;
    const char *sql = s->cfg.check == GW_STORE_CHECK_QUICK ? "PRAGMA quick_check(5)"
                                                           : "PRAGMA integrity_check(5)";
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sql_error(s, rc, "integrity check");
    int ok = 0, rows = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *msg = (const char *)sqlite3_column_text(st, 0);
        if (rows++ == 0 && msg && strcmp(msg, "ok") == 0)
            ok = 1;
        else
            gw_log_err("store %s: integrity check: %s", s->path, msg ? msg : "?");
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_error(s, rc, "integrity check");
    return ok && rows == 1 ? 0 : GW_ESTORE_CORRUPT;
}

static int schema_version(struct gw_store *s, int *version)
{
    int64_t n = 0, v = 0;
    int found;
    int rc = query_int(s,
                       "SELECT count(*) FROM sqlite_schema WHERE type = 'table' "
                       "AND name = 'schema_version'",
                       &n, &found);
    if (rc)
        return rc;
    if (n == 0) {
        rc = query_int(s,
                       "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite%'", &n,
                       &found);
        if (rc)
            return rc;
        if (n > 0) {
            gw_log_err("store %s: not a gateway store (it has tables but no schema_version); "
                       "leaving it alone, point store.path elsewhere or move it away",
                       s->path);
            return GW_ESTORE_SCHEMA;
        }
        rc = exec_sql(s,
                      "BEGIN; CREATE TABLE schema_version (version INTEGER NOT NULL); "
                      "INSERT INTO schema_version VALUES (0); COMMIT",
                      "creating the schema");
        *version = 0;
        return rc;
    }
    rc = query_int(s, "SELECT version FROM schema_version", &v, &found);
    if (rc)
        return rc;
    if (!found || v < 0) {
        gw_log_err("store %s: schema_version table is empty or negative", s->path);
        return GW_ESTORE_SCHEMA;
    }
    if (v > GW_STORE_SCHEMA_VERSION) {
        gw_log_err("store %s: schema version %lld was written by a newer gateway (this one "
                   "knows up to %d); refusing to touch it, upgrade the gateway or move the file",
                   s->path, (long long)v, GW_STORE_SCHEMA_VERSION);
        return GW_ESTORE_SCHEMA;
    }
    *version = (int)v;
    return 0;
}

static int migrate(struct gw_store *s)
{
    int version;
    int rc = schema_version(s, &version);
    if (rc)
        return rc;
    for (int i = version; i < STORE_SQL_COUNT; i++) {
        char setv[64];
        snprintf(setv, sizeof setv, "UPDATE schema_version SET version = %d", store_sql[i].version);
        if ((rc = exec_sql(s, "BEGIN", "starting a migration")) != 0)
            return rc;
        if ((rc = exec_sql(s, store_sql[i].sql, store_sql[i].name)) != 0 ||
            (rc = exec_sql(s, setv, "setting the schema version")) != 0 ||
            (rc = exec_sql(s, "COMMIT", "committing a migration")) != 0) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            gw_log_err("store %s: migration %s failed, the file stays at schema version %d",
                       s->path, store_sql[i].name, store_sql[i].version - 1);
            return rc;
        }
        if (version > 0)
            gw_log_notice("store %s: migrated to schema version %d (%s)", s->path,
                          store_sql[i].version, store_sql[i].name);
    }

    int64_t epoch = 0;
    int found;
    if ((rc = query_int(s, "SELECT value FROM meta WHERE key = 'epoch'", &epoch, &found)) != 0)
        return rc;
    if (!found) {
        uint64_t r = 0;
        while (r == 0) {
            if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) {
                gw_log_err("store %s: getrandom failed, cannot draw the store epoch", s->path);
                return GW_EIO;
            }
        }
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO meta (key, value) VALUES ('epoch', %lld)",
                 (long long)(int64_t)r);
        if ((rc = exec_sql(s, sql, "saving the epoch")) != 0)
            return rc;
        epoch = (int64_t)r;
    }
    s->epoch = (uint64_t)epoch;
    return 0;
}

/* A failure while opening: "locked" and "not a database" get their own clear message. */
static int open_failed(struct gw_store *s, int rc, const char *what)
{
    int err = map_rc(rc);
    if (err == GW_EBUSY)
        gw_log_err("store %s: in use by another process (locked); is another gateway running "
                   "with the same store.path?",
                   s->path);
    else if (err == GW_ESTORE_CORRUPT)
        gw_log_err("store %s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
    else
        sql_error(s, rc, what);
    return err;
}

/* Opens path, takes the lock, checks and migrates it, loads the state. GW_ESTORE_CORRUPT means
 * the caller should move the file aside. */
static int open_file(struct gw_store *s)
{
    struct stat sb;
    int fresh = stat(s->path, &sb) != 0 || sb.st_size == 0;
    int rc = sqlite3_open_v2(s->path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        gw_log_err("store %s: cannot open: %s (does the directory exist and is it writable?)",
                   s->path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        return map_rc(rc) == GW_ESTORE ? GW_EIO : map_rc(rc);
    }
    sqlite3_extended_result_codes(s->db, 1);

    char pragmas[256];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA locking_mode = EXCLUSIVE; %s"
             "PRAGMA synchronous = %s; PRAGMA cache_size = -%u; "
             "PRAGMA journal_size_limit = 8388608",
             fresh ? "PRAGMA auto_vacuum = INCREMENTAL; " : "",
             s->cfg.sync == GW_STORE_SYNC_NORMAL ? "NORMAL" : "FULL", s->cfg.cache_kib);
    char *msg = NULL;
    rc = sqlite3_exec(s->db, pragmas, NULL, NULL, &msg);
    sqlite3_free(msg);
    if (rc != SQLITE_OK)
        return open_failed(s, rc, "setting pragmas");

    /* journal_mode reads the header: a file that is not a database fails here (NOTADB). */
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const char *mode = (const char *)sqlite3_column_text(st, 0);
            rc = mode && strcmp(mode, "wal") == 0 ? SQLITE_OK : SQLITE_BUSY;
        }
        sqlite3_finalize(st);
    }
    if (rc != SQLITE_OK)
        return open_failed(s, rc, "switching to WAL");
    /* Take the exclusive lock now, so a second gateway fails at start, not at its first write. */
    if ((rc = sqlite3_exec(s->db, "BEGIN EXCLUSIVE; COMMIT", NULL, NULL, NULL)) != SQLITE_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return open_failed(s, rc, "locking");
    }
    if ((rc = integrity_check(s)) != 0)
        return rc;
    if ((rc = migrate(s)) != 0)
        return rc;
    for (int i = 0; i < ST_COUNT_; i++) {
        rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                                NULL);
        if (rc != SQLITE_OK)
            return sql_error(s, rc, stmt_sql[i]);
    }
    return load_state(s);
}

/* Renames path (and its -wal/-shm) to path.corrupt-<UTC time>[-n]. Never deletes anything. */
static int move_aside(struct gw_store *s, char *moved, size_t len)
{
    char stamp[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    struct stat sb;
    for (int n = 0; n < 1000; n++) {
        if (n == 0)
            snprintf(moved, len, "%s.corrupt-%s", s->path, stamp);
        else
            snprintf(moved, len, "%s.corrupt-%s-%d", s->path, stamp, n);
        if (lstat(moved, &sb) != 0)
            break;
    }
    if (rename(s->path, moved) != 0) {
        gw_log_err("store %s: is corrupt and cannot be moved aside to %s: %m; not starting over "
                   "it, move or repair it by hand",
                   s->path, moved);
        return GW_ESTORE_CORRUPT;
    }
    static const char *const suffix[] = {"-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        char from[PATH_MAX], to[PATH_MAX + 64];
        snprintf(from, sizeof from, "%s%s", s->path, suffix[i]);
        snprintf(to, sizeof to, "%s%s", moved, suffix[i]);
        if (lstat(from, &sb) == 0 && rename(from, to) != 0)
            gw_log_err("store %s: cannot move %s aside to %s: %m", s->path, from, to);
    }
    return 0;
}

int gw_store_open(const struct gw_store_config *cfg, struct gw_store **out)
{
    *out = NULL;
    int rc = check_config(cfg);
    if (rc)
        return rc;
    if (strlen(cfg->path) > PATH_MAX - 64) {
        gw_log_err("store: path too long: %s", cfg->path);
        return GW_EINVAL;
    }
    struct gw_store *s = gw_calloc(1, sizeof *s);
    s->cfg = *cfg;
    s->path = gw_strdup(cfg->path);
    s->cfg.path = s->path;
    if (!s->cfg.clock)
        s->cfg.clock = clock_default;
    if (!s->cfg.cache_kib)
        s->cfg.cache_kib = 2048;

    rc = open_file(s);
    if (rc == GW_ESTORE_CORRUPT) {
        close_db(s);
        char moved[PATH_MAX + 64];
        rc = move_aside(s, moved, sizeof moved);
        if (rc == 0) {
            gw_log_err("store %s: file is corrupt; moved it to %s and started an empty store "
                       "(rows in the old file were not sent; salvage with: sqlite3 %s .recover)",
                       s->path, moved, moved);
            s->recovered = 1;
            rc = open_file(s);
        }
    }
    if (rc)
        goto fail;
    if ((rc = expire(s, now_ms(s))) != 0 || (rc = commit(s)) != 0)
        goto fail;
    s->last_expire = now_ms(s);
    probe_space(s, s->last_expire);
    reserve_make(s);
    gw_log_info("store %s: open, %" PRIu64 " rows (%" PRIu64 " bytes) waiting in %u streams, "
                "epoch %016" PRIx64,
                s->path, s->depth, s->bytes, s->nstreams, s->epoch);
    *out = s;
    return 0;

fail:
    close_db(s);
    streams_free(s);
    free(s->flight);
    free(s->path);
    free(s);
    return rc;
}

void gw_store_close(struct gw_store *s)
{
    if (!s)
        return;
    commit(s);
    close_db(s);
    streams_free(s);
    free(s->flight);
    free(s->path);
    free(s);
}

/* --- Producers --- */

static int valid_name(const char *name)
{
    if (!name)
        return 0;
    size_t n = strnlen(name, GW_STORE_MAX_NAME + 1);
    return n > 0 && n <= GW_STORE_MAX_NAME;
}

static struct stream *stream_get(struct gw_store *s, const char *name, int *err)
{
    struct stream *st = stream_by_name(s, name);
    if (st)
        return st;
    if ((*err = ensure_txn(s)) != 0)
        return NULL;
    sqlite3_bind_text(s->st[ST_STREAM_ADD], 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s->st[ST_STREAM_ADD]);
    sqlite3_reset(s->st[ST_STREAM_ADD]);
    sqlite3_clear_bindings(s->st[ST_STREAM_ADD]);
    if (rc != SQLITE_DONE) {
        *err = stmt_failed(s, rc, "adding a stream");
        return NULL;
    }
    st = stream_append(s, sqlite3_last_insert_rowid(s->db), name);
    s->last_stream = s->nstreams - 1;
    return st;
}

int gw_store_put(struct gw_store *s, const struct gw_store_msg *msg,
                 struct gw_store_ticket *ticket)
{
    if (!msg || !valid_name(msg->stream) || !valid_name(msg->target) ||
        (msg->action != GW_STORE_SET_PROPERTY && msg->action != GW_STORE_CALL_ENDPOINT &&
         msg->action != GW_STORE_WRITE_BUCKET) ||
        (!msg->payload && msg->payload_len) || msg->payload_len > s->cfg.max_row) {
        gw_log_warn("store %s: put refused: invalid stream, target, action or payload size "
                    "(stream %.64s)",
                    s->path, msg && msg->stream ? msg->stream : "(null)");
        return GW_EINVAL;
    }
    size_t tlen = strlen(msg->target);
    uint64_t size = row_size(msg->payload_len + tlen);
    int rc;

    if (size > s->cfg.budget_bytes) {
        s->c.refused++;
        gw_log_warn("store %s: row of %" PRIu64 " bytes on %s is larger than the whole budget "
                    "(%" PRIu64 " bytes), refused",
                    s->path, size, msg->stream, s->cfg.budget_bytes);
        return GW_ESTORE_FULL;
    }
    if (s->disk_cap && s->bytes + size > s->disk_cap)
        probe_space(s, now_ms(s));
    while (s->bytes + size > budget_now(s)) {
        if (s->cfg.policy == GW_STORE_REFUSE_NEW || s->depth == 0) {
            s->c.refused++;
            set_full(s);
            return GW_ESTORE_FULL;
        }
        set_full(s);
        if ((rc = drop_oldest(s)) != 0)
            return rc;
    }

    int err = 0;
    struct stream *st = stream_get(s, msg->stream, &err);
    if (!st)
        return err;
    if ((rc = ensure_txn(s)) != 0)
        return rc;

    sqlite3_stmt *q = s->st[ST_INSERT];
    int64_t now = now_ms(s);
    uint64_t id = s->next_id;
    sqlite3_bind_int64(q, 1, (int64_t)id);
    sqlite3_bind_int64(q, 2, st->sid);
    sqlite3_bind_int64(q, 3, (int64_t)st->next_seq);
    sqlite3_bind_int(q, 4, (int)msg->action);
    sqlite3_bind_int64(q, 5, now);
    sqlite3_bind_text(q, 6, msg->target, (int)tlen, SQLITE_STATIC);
    if (msg->payload_len)
        sqlite3_bind_blob(q, 7, msg->payload, (int)msg->payload_len, SQLITE_STATIC);
    else
        sqlite3_bind_zeroblob(q, 7, 0);
    rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return stmt_failed(s, rc, "inserting a row");

    if (ticket) {
        ticket->id = id;
        ticket->seq = st->next_seq;
    }
    s->next_id++;
    st->next_seq++;
    st->dirty = 1;
    st->depth++;
    s->depth++;
    s->bytes += size;

    if (s->next_id - s->txn_first >= s->cfg.commit_rows || window_over(s, now))
        return commit(s);
    return 0;
}

int gw_store_flush(struct gw_store *s, uint64_t *durable_id)
{
    int rc = commit(s);
    if (durable_id)
        *durable_id = s->durable_id;
    return rc;
}

/* The queue is empty: give the free pages of a drained backlog back to the file system (the file
 * was created with auto_vacuum=INCREMENTAL). Only when at least SHRINK_PAGES are free, so an
 * online gateway whose queue empties every few hundred ms does not pay for it each time. */
static int shrink(struct gw_store *s)
{
    int64_t free_pages = 0;
    int found = 0;
    int rc = query_int(s, "PRAGMA freelist_count", &free_pages, &found);
    if (rc || free_pages < SHRINK_PAGES)
        return rc;
    rc = exec_sql(s, "PRAGMA incremental_vacuum", "shrinking the file");
    if (rc == 0)
        gw_log_info("store %s: queue empty, returned %lld free pages to the file system", s->path,
                    (long long)free_pages);
    return rc;
}

int gw_store_poll(struct gw_store *s, uint64_t *durable_id)
{
    int64_t now = now_ms(s);
    int rc = 0;
    if (s->in_txn && window_over(s, now))
        rc = commit(s);
    probe_space(s, now);
    if (now < s->last_expire) /* the wall clock was stepped back */
        s->last_expire = now;
    if (!rc && s->cfg.max_age_ms > 0 && now - s->last_expire >= EXPIRE_EVERY_MS) {
        s->last_expire = now;
        rc = expire(s, now);
    }
    check_state(s, now);
    if (!rc && s->depth == 0 && !s->in_txn)
        rc = shrink(s);
    if (durable_id)
        *durable_id = s->durable_id;
    return rc;
}

int gw_store_poll_due_ms(struct gw_store *s)
{
    int64_t now = now_ms(s);
    int64_t due = -1;
    if (s->in_txn) {
        due = s->txn_start + (int64_t)s->cfg.commit_ms - now;
        if (due < 0 || window_over(s, now))
            due = 0;
    }
    if (s->depth && s->cfg.max_age_ms > 0) {
        int64_t e = s->last_expire + EXPIRE_EVERY_MS - now;
        if (e < 0)
            e = 0;
        if (due < 0 || e < due)
            due = e;
    }
    return due > INT_MAX ? INT_MAX : (int)due;
}

/* --- The drain side --- */

/* Hands out up to want rows of one stream. Sets *stop when cb declined a row. */
static int take_from(struct gw_store *s, unsigned idx, unsigned want, gw_store_row_fn cb,
                     void *arg, int *stop)
{
    struct stream *st = &s->streams[idx];
    sqlite3_stmt *q = s->st[ST_NEXT];
    unsigned got = 0;
    int rc = SQLITE_DONE;
    sqlite3_bind_int64(q, 1, st->sid);
    sqlite3_bind_int64(q, 2, (int64_t)st->cursor);
    sqlite3_bind_int64(q, 3, (int64_t)s->durable_id);
    while (got < want && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        uint64_t id = (uint64_t)sqlite3_column_int64(q, 0);
        if (flight_find(s, id)) { /* still waiting for its answer */
            st->cursor = id;
            continue;
        }
        struct gw_store_row row = {
            .id = id,
            .uid = s->uid,
            .stream = st->name,
            .seq = (uint64_t)sqlite3_column_int64(q, 1),
            .action = (enum gw_store_action)sqlite3_column_int(q, 2),
            .accepted_ms = sqlite3_column_int64(q, 3),
            .target = (const char *)sqlite3_column_text(q, 4),
            .payload = sqlite3_column_blob(q, 5),
            .payload_len = (size_t)sqlite3_column_bytes(q, 5),
            .replay = id <= st->high_water,
        };
        size_t tlen = (size_t)sqlite3_column_bytes(q, 4);
        if (!row.target)
            row.target = "";
        if (!row.payload)
            row.payload = (const uint8_t *)"";
        snprintf(s->uid, sizeof s->uid, "%016" PRIx64 "-%" PRIu64, s->epoch, id);
        if (cb(arg, &row) != 0) {
            *stop = 1;
            break;
        }
        flight_add(s, id, row_size(row.payload_len + tlen), idx);
        st->cursor = id;
        if (row.replay)
            s->c.replayed++;
        else
            st->high_water = id;
        got++;
    }
    if (got < want && !*stop) {
        if (rc != SQLITE_DONE) {
            sqlite3_reset(q);
            return stmt_failed(s, rc, "reading rows to send");
        }
        st->done_call = s->call;
    }
    sqlite3_reset(q);
    return (int)got;
}

int gw_store_next(struct gw_store *s, unsigned max, gw_store_row_fn cb, void *arg)
{
    if (!cb || !s->nstreams || !max)
        return 0;
    /* Rows dropped or expired in the open transaction are already invisible here; were the drain
     * to go past them and the commit then fail, they would come back and be sent after newer
     * rows of their stream. So nothing is handed out until that transaction has committed. */
    if (s->in_txn && (s->txn_dropped || s->txn_expired))
        return 0;
    s->call++;
    unsigned n = s->nstreams, start = s->rr % n, remaining = max;
    int taken = 0, stop = 0;
    s->rr = (start + 1) % n;
    while (remaining > 0 && !stop) {
        unsigned active = 0;
        for (unsigned i = 0; i < n; i++)
            if (s->streams[i].depth && s->streams[i].done_call != s->call)
                active++;
        if (!active)
            break;
        unsigned quantum = remaining / active ? remaining / active : 1;
        for (unsigned k = 0; k < n && remaining > 0 && !stop; k++) {
            unsigned i = (start + k) % n;
            struct stream *st = &s->streams[i];
            if (!st->depth || st->done_call == s->call)
                continue;
            int r = take_from(s, i, quantum < remaining ? quantum : remaining, cb, arg, &stop);
            if (r < 0)
                return r;
            remaining -= (unsigned)r;
            taken += r;
        }
    }
    return taken;
}

int gw_store_ack(struct gw_store *s, uint64_t id)
{
    struct flight *f = flight_find(s, id);
    if (!f)
        return GW_ENOENT;
    struct stream *st = &s->streams[f->stream];
    int rc = delete_row(s, id, st, f->size);
    if (rc == GW_ENOENT) { /* gone meanwhile: nothing to delete */
        if ((f = flight_find(s, id)) != NULL)
            flight_remove(s, f);
        return rc;
    }
    if (rc)
        return rc;
    s->c.delivered++;
    s->txn_delivered++;
    return 0;
}

int gw_store_nack(struct gw_store *s, uint64_t id)
{
    struct flight *f = flight_find(s, id);
    if (!f)
        return GW_ENOENT;
    struct stream *st = &s->streams[f->stream];
    if (st->cursor >= id)
        st->cursor = id - 1;
    flight_remove(s, f);
    return 0;
}

void gw_store_nack_all(struct gw_store *s)
{
    flight_clear(s);
    for (unsigned i = 0; i < s->nstreams; i++)
        s->streams[i].cursor = 0;
}

/* --- State --- */

void gw_store_read_stats(struct gw_store *s, struct gw_store_stats *out)
{
    *out = s->c;
    out->depth = s->depth;
    out->bytes = s->bytes;
    out->budget_bytes = s->cfg.budget_bytes;
    out->pending = s->in_txn ? s->next_id - s->txn_first : 0;
    out->inflight = s->flight_count;
    out->durable_id = s->durable_id;
    out->streams = s->nstreams;
    out->recovered = s->recovered;
    out->full = s->full;
    out->fault = s->fault;
    out->disk_full = s->disk_cap != 0;
    out->oldest_age_ms = -1;
    if (s->depth) {
        sqlite3_stmt *q = s->st[ST_OLDEST_TS];
        if (sqlite3_step(q) == SQLITE_ROW)
            out->oldest_age_ms = now_ms(s) - sqlite3_column_int64(q, 0);
        sqlite3_reset(q);
    }
}

uint64_t gw_store_epoch(const struct gw_store *s)
{
    return s->epoch;
}
