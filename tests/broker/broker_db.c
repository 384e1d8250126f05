/* SPDX-License-Identifier: Apache-2.0 */
/*
 * iotmp-broker state in a real SQLite file: bucket rows, endpoint calls and device properties.
 * Every row keeps user, device, bucket/endpoint, the server-action layout it arrived in, its
 * payload as JSON text and a global arrival number (seq, shared by the three tables), so tests can
 * check exactly-once delivery and order. WAL mode; the prepared statements live here and are
 * finalised by gw_broker_db_close().
 */
#include "broker.h"

#include "gw/error.h"

#include <stdlib.h>
#include <string.h>

static sqlite3 *db;
static int64_t last_seq;

enum {
    ST_ADD_BUCKET,
    ST_ADD_CALL,
    ST_LIST_BUCKET,
    ST_LIST_CALL,
    ST_SET_PROP,
    ST_GET_PROP,
    ST_COUNT
};
static sqlite3_stmt *st[ST_COUNT];

static const char *const schema =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS bucket_rows(seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL,"
    " user TEXT NOT NULL, device TEXT NOT NULL, bucket TEXT NOT NULL, layout TEXT NOT NULL,"
    " data TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS bucket_rows_by_name ON bucket_rows(user, bucket, seq);"
    "CREATE TABLE IF NOT EXISTS endpoint_calls(seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL,"
    " user TEXT NOT NULL, device TEXT NOT NULL, endpoint TEXT NOT NULL, layout TEXT NOT NULL,"
    " data TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS endpoint_calls_by_name ON endpoint_calls(user, endpoint, seq);"
    "CREATE TABLE IF NOT EXISTS properties(user TEXT NOT NULL, device TEXT NOT NULL,"
    " property TEXT NOT NULL, value TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,"
    " layout TEXT NOT NULL, PRIMARY KEY(user, device, property));";

static const char *const sql[ST_COUNT] = {
    [ST_ADD_BUCKET] = "INSERT INTO bucket_rows(seq, ts, user, device, bucket, layout, data)"
                      " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_ADD_CALL] = "INSERT INTO endpoint_calls(seq, ts, user, device, endpoint, layout, data)"
                    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_LIST_BUCKET] = "SELECT seq, ts, device, layout, data FROM bucket_rows WHERE user = ?1"
                       " AND bucket = ?2 AND (?3 IS NULL OR device = ?3) AND seq > ?4"
                       " ORDER BY seq LIMIT ?5",
    [ST_LIST_CALL] = "SELECT seq, ts, device, layout, data FROM endpoint_calls WHERE user = ?1"
                     " AND endpoint = ?2 AND (?3 IS NULL OR device = ?3) AND seq > ?4"
                     " ORDER BY seq LIMIT ?5",
    [ST_SET_PROP] = "INSERT INTO properties(user, device, property, value, seq, ts, layout)"
                    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(user, device, property)"
                    " DO UPDATE SET value = excluded.value, seq = excluded.seq, ts = excluded.ts,"
                    " layout = excluded.layout",
    [ST_GET_PROP] = "SELECT value FROM properties WHERE user = ?1 AND device = ?2"
                    " AND property = ?3",
};

static int fail(const char *what)
{
    gw_broker_log(GW_BROKER_ERR, "sqlite error", "{s:s,s:s}", "what", what, "sqlite",
                  db ? sqlite3_errmsg(db) : "no handle");
    gw_broker_count_error("sqlite");
    return GW_ESTORE;
}

int gw_broker_db_open(const char *path)
{
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
        goto fail_close;
    sqlite3_busy_timeout(db, 2000);
    if (sqlite3_exec(db, schema, NULL, NULL, NULL) != SQLITE_OK)
        goto fail_close;
    for (int i = 0; i < ST_COUNT; i++)
        if (sqlite3_prepare_v2(db, sql[i], -1, &st[i], NULL) != SQLITE_OK)
            goto fail_close;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT max(coalesce((SELECT max(seq) FROM bucket_rows), 0),"
                           " coalesce((SELECT max(seq) FROM endpoint_calls), 0),"
                           " coalesce((SELECT max(seq) FROM properties), 0))",
                           -1, &q, NULL) != SQLITE_OK)
        goto fail_close;
    if (sqlite3_step(q) == SQLITE_ROW)
        last_seq = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return 0;

fail_close:
    fail(path);
    gw_broker_db_close();
    return GW_ESTORE;
}

void gw_broker_db_close(void)
{
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(st[i]);
        st[i] = NULL;
    }
    if (db)
        sqlite3_close(db);
    db = NULL;
}

int64_t gw_broker_db_append(enum gw_broker_table t, const char *user, const char *device,
                            const char *name, const char *layout, const char *data)
{
    sqlite3_stmt *s = st[t == GW_BROKER_BUCKETS ? ST_ADD_BUCKET : ST_ADD_CALL];
    int64_t seq = last_seq + 1;
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, seq);
    sqlite3_bind_int64(s, 2, gw_broker_now_ms());
    sqlite3_bind_text(s, 3, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, device, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, layout, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, data, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return fail(t == GW_BROKER_BUCKETS ? "insert bucket row" : "insert endpoint call");
    last_seq = seq;
    return seq;
}

json_t *gw_broker_db_list(enum gw_broker_table t, const char *user, const char *name,
                          const char *device, int64_t after, int64_t limit)
{
    sqlite3_stmt *s = st[t == GW_BROKER_BUCKETS ? ST_LIST_BUCKET : ST_LIST_CALL];
    json_t *arr = json_array();
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
    if (device)
        sqlite3_bind_text(s, 3, device, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 3);
    sqlite3_bind_int64(s, 4, after);
    sqlite3_bind_int64(s, 5, limit);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *data = (const char *)sqlite3_column_text(s, 4);
        json_t *d = json_loads(data ? data : "null", JSON_DECODE_ANY, NULL);
        json_array_append_new(
            arr, json_pack("{s:I,s:I,s:s,s:s,s:o}", "seq", (json_int_t)sqlite3_column_int64(s, 0),
                           "ts", (json_int_t)sqlite3_column_int64(s, 1), "device",
                           (const char *)sqlite3_column_text(s, 2), "layout",
                           (const char *)sqlite3_column_text(s, 3), "data",
                           d ? d : json_null()));
    }
    if (rc != SQLITE_DONE)
        fail("list rows");
    sqlite3_reset(s);
    return arr;
}

int gw_broker_db_set_property(const char *user, const char *device, const char *prop,
                              const char *layout, const char *value)
{
    sqlite3_stmt *s = st[ST_SET_PROP];
    int64_t seq = last_seq + 1;
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, device, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, prop, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, value, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, seq);
    sqlite3_bind_int64(s, 6, gw_broker_now_ms());
    sqlite3_bind_text(s, 7, layout, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return fail("set property");
    last_seq = seq;
    return 0;
}

json_t *gw_broker_db_get_property(const char *user, const char *device, const char *prop)
{
    sqlite3_stmt *s = st[ST_GET_PROP];
    json_t *v = NULL;
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, device, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, prop, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *txt = (const char *)sqlite3_column_text(s, 0);
        v = json_loads(txt ? txt : "null", JSON_DECODE_ANY, NULL);
        if (!v)
            v = json_null();
    } else if (rc != SQLITE_DONE) {
        fail("get property");
    }
    sqlite3_reset(s);
    return v;
}

int gw_broker_db_reset(void)
{
    if (sqlite3_exec(db,
                     "DELETE FROM bucket_rows; DELETE FROM endpoint_calls; DELETE FROM properties;",
                     NULL, NULL, NULL) != SQLITE_OK)
        return fail("reset");
    return 0;
}
