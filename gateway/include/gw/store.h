/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Store-and-forward queue: outbound server calls that ask for delivery (write a bucket, call an
 * endpoint, set a property) are kept in one SQLite file until the broker has answered OK for them.
 * Producers (registry, adapters) call gw_store_put(); the uplink session drains the queue with
 * gw_store_next() and answers each row with gw_store_ack() or gw_store_nack(). The loop calls
 * gw_store_poll() on a timer so that group commit and expiry happen. Relies on SQLite (WAL mode)
 * and gw_base; nothing else touches the sqlite3 handle.
 *
 * Threads: a store is used from ONE thread only, the event loop's. No function here locks; the
 * SQLite connection is opened without mutexes. Worker threads hand their data to the loop first.
 *
 * What "accepted" means. gw_store_put() inserts the row into the current (open) transaction and
 * hands back a ticket (the row id, a 63-bit number that grows with every put and is never reused
 * in a store file). At that point the row is TAKEN, not accepted: a crash loses it. The row is
 * ACCEPTED when the transaction that holds it has committed (group commit: after commit_ms or
 * commit_rows rows, whichever comes first, or on gw_store_flush()/gw_store_close()). The one
 * place that says so is the on_durable callback: it is called after every commit attempt with the
 * range of tickets of that transaction and status 0 (accepted: on disk) or a negative code (lost:
 * the commit failed, those rows never existed). A producer that must confirm to its own source
 * (an MQTT PUBACK, a Modbus write) keeps the ticket and confirms it only from on_durable with
 * status 0; there is no other way to learn of acceptance, so it cannot confirm too early.
 * The durable id (gw_store_flush(), gw_store_poll(), stats) is the highest accepted ticket; after
 * a failed commit it stays below the lost range, but later commits pass it (ids are never reused),
 * so "ticket <= durable id" alone is only a safe test for producers that also honour the lost
 * ranges. The drain side only ever sees committed rows, so nothing reaches the broker that a
 * crash could take back.
 *
 * Durability levels (config.sync). In WAL mode:
 *   GW_STORE_SYNC_FULL   (default) the WAL is fsync'ed at every commit: an accepted row survives
 *                        a process crash AND a power loss or kernel panic. Costs one fsync per
 *                        group commit (a few ms on an SD card), which group commit amortises.
 *   GW_STORE_SYNC_NORMAL no fsync at commit, only at checkpoints: an accepted row survives a crash
 *                        of the process (SIGKILL, abort) because it is in the kernel's page cache,
 *                        but the last commits before a power loss may be lost (the file stays
 *                        consistent; it never becomes corrupt). Use it on hardware whose flash
 *                        would wear out from frequent fsyncs, or with a UPS.
 *
 * Delivery is at-least-once. A row handed out by gw_store_next() is "in flight" in memory only;
 * after a crash or restart everything that was not acked is simply pending again and is sent
 * again. Each row carries a stable unique id (row.uid, "<epoch>-<id>" where epoch is a random
 * 64-bit number drawn when the store file is created) that the session puts into the payload so
 * that the receiver can drop duplicates.
 *
 * Limits: a byte budget (payload bytes + target bytes + GW_STORE_ROW_OVERHEAD per row), a maximum
 * age, and a policy when the budget is reached: drop the oldest rows (default) or refuse new ones.
 * A full file system counts as reaching the budget: after a commit fails with ENOSPC, the size the
 * store had reached (95 % of it) is the budget, with the same policy, until statvfs shows at least
 * 2 MiB free again. Any failed commit (ENOSPC, EIO) loses only the rows of that transaction (never
 * accepted, see on_durable); it is logged once with its cause, then summarised every 10 s, and
 * once a commit works again; stats.fault holds the cause meanwhile. So that a full disk never
 * leaves the store unable to write at all, it keeps "<path>-reserve" (512 KiB, allocated while
 * there is room, deleted when the disk fills) and, with less than 16 MiB free, checkpoints its
 * WAL every 16 pages instead of every 1000.
 *
 * Start-up: the file is opened in WAL mode with an exclusive lock (a second process gets
 * GW_EBUSY), checked with PRAGMA integrity_check (or quick_check), and migrated to the current
 * schema version. A corrupt file is never deleted: it is renamed to "<path>.corrupt-<UTC time>"
 * (its -wal file likewise), the event is logged with the new name, and a fresh store is created.
 * Corruption met while running is returned as GW_ESTORE_CORRUPT; close and reopen the store to
 * move the file aside the same way.
 */
#ifndef GW_STORE_H
#define GW_STORE_H

#include <stddef.h>
#include <stdint.h>

#define GW_STORE_DEFAULT_PATH "/var/lib/iotmp-gateway/store.db"

/* Bytes counted per row on top of payload and target: rowid, record header, index entry and cell
 * pointers as SQLite lays them out (about what a row costs in the file beyond its data). */
#define GW_STORE_ROW_OVERHEAD 64

#define GW_STORE_MAX_NAME 255          /* longest stream name and target, bytes */
#define GW_STORE_SCHEMA_VERSION 2      /* schema version this code writes */

/* The server action a row asks for; the values are the IOTMP action codes (PROTOCOL.md 8). */
enum gw_store_action {
    GW_STORE_SET_PROPERTY = 2,  /* SET_DEVICE_PROPERTY, target = property id */
    GW_STORE_CALL_ENDPOINT = 4, /* CALL_ENDPOINT, target = endpoint name */
    GW_STORE_WRITE_BUCKET = 5,  /* WRITE_BUCKET, target = bucket id */
};

enum gw_store_policy {
    GW_STORE_DROP_OLDEST = 0, /* default: delete the oldest rows until the new one fits */
    GW_STORE_REFUSE_NEW = 1,  /* gw_store_put() returns GW_ESTORE_FULL */
};

enum gw_store_sync {
    GW_STORE_SYNC_FULL = 0, /* default, see the top of this file */
    GW_STORE_SYNC_NORMAL = 1,
};

enum gw_store_check {
    GW_STORE_CHECK_FULL = 0,  /* default: PRAGMA integrity_check */
    GW_STORE_CHECK_QUICK = 1, /* PRAGMA quick_check: O(n), skips index-content checks */
    GW_STORE_CHECK_NONE = 2,  /* for benchmarks and tools */
};

/* Called after each commit attempt for the tickets [first, last] of that transaction, on the loop
 * thread, from inside gw_store_put(), gw_store_poll(), gw_store_flush() or gw_store_close().
 * status 0: they are accepted (durable); status < 0 (GW_E...): the commit failed and they are
 * lost (the producer must not confirm them). The callback must not call gw_store functions. */
typedef void (*gw_store_durable_fn)(void *arg, int status, uint64_t first, uint64_t last);

/* Wall clock in ms since the epoch; replaceable for tests. */
typedef int64_t (*gw_store_clock_fn)(void *arg);

struct gw_store_config {
    const char *path;              /* borrowed; default GW_STORE_DEFAULT_PATH */
    uint64_t budget_bytes;         /* byte budget (see GW_STORE_ROW_OVERHEAD); default 64 MiB */
    int64_t max_age_ms;            /* rows older than this expire; 0 = never; default 7 days */
    enum gw_store_policy policy;   /* when the budget is reached; default GW_STORE_DROP_OLDEST */
    unsigned commit_ms;            /* group commit window; default 250 */
    unsigned commit_rows;          /* commit once this many rows are pending; default 500 */
    enum gw_store_sync sync;       /* default GW_STORE_SYNC_FULL */
    enum gw_store_check check;     /* start-up check; default GW_STORE_CHECK_FULL */
    size_t max_row;                /* largest payload accepted, bytes; default 256 KiB */
    unsigned cache_kib;            /* SQLite page cache, KiB; default 2048 */
    unsigned backlog_ms;           /* oldest row older = "backlog" (logged); default 5000 */
    gw_store_durable_fn on_durable; /* optional */
    void *durable_arg;
    gw_store_clock_fn clock;       /* optional; default CLOCK_REALTIME */
    void *clock_arg;
};

/* What goes in. All pointers are borrowed (copied into the store). */
struct gw_store_msg {
    const char *stream;          /* "bucket:temps"; 1..GW_STORE_MAX_NAME bytes, the ordering unit */
    enum gw_store_action action;
    const char *target;          /* bucket id, endpoint name or property id; 1..GW_STORE_MAX_NAME */
    const void *payload;         /* PSON bytes, may be NULL when payload_len is 0 */
    size_t payload_len;          /* <= config.max_row */
};

/* What gw_store_put() hands back. */
struct gw_store_ticket {
    uint64_t id;  /* row id: global acceptance order; accepted when on_durable says so */
    uint64_t seq; /* sequence number within the stream, 1, 2, 3 ... never reused in a file */
};

/* A row handed to the drain callback. Everything is borrowed for the duration of the callback. */
struct gw_store_row {
    uint64_t id;                 /* pass to gw_store_ack() / gw_store_nack() */
    const char *uid;             /* "<epoch hex>-<id>": unique across files and restarts */
    const char *stream;
    uint64_t seq;
    enum gw_store_action action;
    const char *target;
    const uint8_t *payload;      /* never NULL, even when payload_len is 0 */
    size_t payload_len;
    int64_t accepted_ms;         /* clock time of gw_store_put() */
    int replay;                  /* 1 when this process handed this row out before (after a nack
                                    or gw_store_nack_all()) */
};

/* Return 0 to take the row (it is then in flight), non-zero to stop: the row stays pending and
 * gw_store_next() returns at once. Must not call gw_store functions. */
typedef int (*gw_store_row_fn)(void *arg, const struct gw_store_row *row);

struct gw_store_stats {
    uint64_t depth;          /* rows in the store, accepted or still pending commit */
    uint64_t bytes;          /* counted bytes of those rows (see GW_STORE_ROW_OVERHEAD) */
    uint64_t budget_bytes;
    uint64_t pending;        /* rows taken but not yet committed */
    uint64_t inflight;       /* rows handed out and not yet acked or nacked */
    uint64_t durable_id;     /* highest accepted ticket */
    int64_t oldest_age_ms;   /* age of the oldest row, -1 when empty */
    unsigned streams;        /* streams known to the file */
    /* Counters since gw_store_open() (not persisted) */
    uint64_t accepted;       /* rows committed */
    uint64_t dropped;        /* rows deleted by GW_STORE_DROP_OLDEST */
    uint64_t refused;        /* puts refused: budget (GW_STORE_REFUSE_NEW) or row above budget */
    uint64_t expired;        /* rows deleted for being older than max_age_ms */
    uint64_t delivered;      /* rows acked */
    uint64_t replayed;       /* rows handed out again in this process */
    uint64_t commits;        /* successful group commits */
    uint64_t write_errors;   /* commits (or statements) that failed: disk full, I/O error */
    uint64_t lost;           /* rows taken but never accepted because their commit failed */
    int recovered;           /* 1 when open moved a corrupt file aside */
    int full;                /* 1 while the budget is reached */
    int fault;               /* GW_ENOSPC, GW_EIO ...: the last commit failed; 0 when writing */
    int disk_full;           /* 1 while the file system is full: the store's size when it filled
                                up acts as the budget (the policy applies) until space returns */
};

struct gw_store;

/* Fills cfg (caller storage) with the defaults listed in struct gw_store_config. */
void gw_store_config_init(struct gw_store_config *cfg);

/* Opens (creating, checking, migrating or recovering) the store file named by cfg (borrowed;
 * copied). On success *out is a store to free with gw_store_close(). Returns 0, GW_EINVAL (bad
 * config), GW_EBUSY (another process holds the file), GW_ESTORE_CORRUPT (corrupt and could not be
 * moved aside), GW_ESTORE (SQLite error, unknown schema version, not a store file), GW_EIO. */
int gw_store_open(const struct gw_store_config *cfg, struct gw_store **out);

/* Commits what is pending (calling on_durable), releases everything and the lock. NULL is ok. */
void gw_store_close(struct gw_store *store);

/* Takes one row (msg borrowed; everything copied). On success fills *ticket (may be NULL) and
 * returns 0; the row is accepted only once on_durable reports its ticket with status 0 (see the
 * top of this file).
 * May commit (commit_rows reached or the window has elapsed) and so call on_durable. Returns
 * GW_EINVAL (bad stream, target, action, or payload above max_row), GW_ESTORE_FULL (budget
 * reached with GW_STORE_REFUSE_NEW, or the row alone is larger than the budget), GW_ENOSPC (disk
 * full), GW_ESTORE (SQLite error). */
int gw_store_put(struct gw_store *store, const struct gw_store_msg *msg,
                 struct gw_store_ticket *ticket);

/* Commits now (calling on_durable). *durable_id (may be NULL) gets the highest accepted ticket.
 * Returns 0, GW_ENOSPC, GW_EIO or GW_ESTORE (then on_durable has been told which tickets were
 * lost, the in-memory state has been reloaded from the file, and rows acked since the last
 * commit will be handed out again). */
int gw_store_flush(struct gw_store *store, uint64_t *durable_id);

/* The loop's timer: commits when the oldest pending change is commit_ms old, expires rows older
 * than max_age_ms (at most once a second), logs state changes, and when the queue is empty
 * returns the free pages of a drained backlog to the file system. *durable_id as for flush.
 * Returns 0 or the codes of gw_store_flush(). */
int gw_store_poll(struct gw_store *store, uint64_t *durable_id);

/* Milliseconds until gw_store_poll() has work: a group commit that falls due, or (while rows
 * wait and max_age_ms is set) the once-a-second expiry. -1 when there is neither. */
int gw_store_poll_due_ms(struct gw_store *store);

/* Hands out up to max accepted rows that are not in flight, the oldest first within each stream,
 * round-robin across streams (each stream gets an equal share of max, and the stream that starts
 * the round rotates from call to call), calling cb (on this thread, before returning) for each.
 * Rows cb takes are in flight until acked or nacked. Only accepted (committed) rows are handed
 * out: a session that wants live rows sooner than the commit window calls gw_store_flush() first.
 * While the open transaction drops or expires rows, nothing is handed out until it commits (so a
 * failed commit cannot reorder a stream).
 * Returns the number taken (0 when nothing is ready) or GW_ESTORE. */
int gw_store_next(struct gw_store *store, unsigned max, gw_store_row_fn cb, void *arg);

/* The broker answered OK for row id: it is deleted (durably at the next commit). Returns 0, or
 * GW_ENOENT when id is not in flight (already acked, dropped or expired meanwhile). */
int gw_store_ack(struct gw_store *store, uint64_t id);

/* No OK for row id (ERROR answer, timeout): it is pending again and gw_store_next() hands it out
 * again before newer rows of its stream. Returns 0 or GW_ENOENT. */
int gw_store_nack(struct gw_store *store, uint64_t id);

/* The link went down: every row in flight is pending again (answers that were lost). */
void gw_store_nack_all(struct gw_store *store);

/* Fills *stats (caller storage). */
void gw_store_read_stats(struct gw_store *store, struct gw_store_stats *stats);

/* The random epoch of this store file (the first half of every row uid). */
uint64_t gw_store_epoch(const struct gw_store *store);

#endif
