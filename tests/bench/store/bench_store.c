/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_store: figures for the SQLite store-and-forward queue (gateway/store), printed, never
 * asserted. In one run, on files in a fresh directory (default under /var/tmp, a real disk):
 *   1. floor: raw SQLite, the same table and pragmas, plain prepared INSERT in transactions of
 *      100 and of 500 rows;
 *   2. durable ingest through gw_store_put with group commit (defaults: 500 rows / 250 ms), for a
 *      60-byte PSON sample, synchronous=FULL (and NORMAL for comparison);
 *   3. bytes written per sample: file growth after the final checkpoint, and every byte the
 *      process handed to write(2) (/proc/self/io wchar: WAL frames + checkpoint copies);
 *   4. drain rate (gw_store_next + gw_store_ack + commits) from the store alone;
 *   5. RSS (/proc/self/statm) with 10,000 and with 1,000,000 samples queued, and the time to
 *      reopen (integrity check + counting) a store that holds 1,000,000 rows.
 * Usage: bench_store [--quick] [--dir DIR]. --quick runs 1/10 of the rows in a few seconds.
 * With GW_BENCH_DATA set to a directory, also writes store_rates.tsv there (each rate beside the
 * raw SQLite floor it is compared with).
 */
#include "bench_tsv.h"
#include "gw/error.h"
#include "gw/log.h"
#include "gw/store.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t proc_wchar(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    uint64_t v = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "wchar: %" SCNu64, &v) == 1)
            break;
    fclose(f);
    return v;
}

static double rss_mib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, rss = 0;
    if (!f)
        return -1;
    if (fscanf(f, "%lu %lu", &size, &rss) != 2)
        rss = 0;
    fclose(f);
    return (double)rss * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

static long long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, gw_strerror(rc));
    exit(1);
}

/* A 60-byte PSON v2 sample as an adapter would publish it:
 * {"ts": <uint64>, "temp": <double>, "hum": <double>, "dev": "plc1/t01", "ok": true}. */
#define SAMPLE_LEN 60
static void make_sample(uint8_t *out, uint64_t i)
{
    static const uint8_t head[] = {0xc5, 0x62, 't', 's', 0x1f};
    size_t n = 0;
    memcpy(out, head, sizeof head);
    n = sizeof head;
    uint64_t ts = 1700000000000ull + i * 100;
    while (ts >= 0x80) { /* varint */
        out[n++] = (uint8_t)(ts | 0x80);
        ts >>= 7;
    }
    out[n++] = (uint8_t)ts;
    static const uint8_t temp[] = {0x64, 't', 'e', 'm', 'p', 0xa1};
    memcpy(out + n, temp, sizeof temp);
    n += sizeof temp;
    double t = 21.5 + (double)(i % 100) / 10.0;
    memcpy(out + n, &t, 8);
    n += 8;
    static const uint8_t hum[] = {0x63, 'h', 'u', 'm', 0xa1};
    memcpy(out + n, hum, sizeof hum);
    n += sizeof hum;
    double h = 40.0 + (double)(i % 37);
    memcpy(out + n, &h, 8);
    n += 8;
    static const uint8_t dev[] = {0x63, 'd', 'e', 'v', 0x68, 'p', 'l', 'c',
                                  '1',  '/', 't', '0', '1'};
    memcpy(out + n, dev, sizeof dev);
    n += sizeof dev;
    static const uint8_t ok[] = {0x62, 'o', 'k', 0xe1};
    memcpy(out + n, ok, sizeof ok);
    n += sizeof ok;
    while (n < SAMPLE_LEN) /* padding key so every sample is exactly 60 bytes */
        out[n++] = 0x00;
}

/* --- 1. The floor: raw SQLite --- */

static double raw_sqlite(const char *path, unsigned rows, unsigned batch, const char *sync)
{
    sqlite3 *db;
    char *err = NULL;
    unlink(path);
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die("raw open", GW_ESTORE);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;"
             "CREATE TABLE queue (id INTEGER PRIMARY KEY, sid INTEGER NOT NULL, seq INTEGER "
             "NOT NULL, action INTEGER NOT NULL, ts INTEGER NOT NULL, target TEXT NOT NULL, "
             "payload BLOB NOT NULL); CREATE INDEX queue_by_stream ON queue (sid, id);",
             sync);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "raw: %s\n", err);
        exit(1);
    }
    sqlite3_stmt *ins, *begin, *commit;
    sqlite3_prepare_v2(db, "INSERT INTO queue VALUES (?, 1, ?, 5, ?, 'temps', ?)", -1, &ins,
                       NULL);
    sqlite3_prepare_v2(db, "BEGIN", -1, &begin, NULL);
    sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL);
    uint8_t sample[SAMPLE_LEN];
    double t0 = now_s();
    for (unsigned i = 0; i < rows; i++) {
        if (i % batch == 0) {
            sqlite3_step(begin);
            sqlite3_reset(begin);
        }
        make_sample(sample, i);
        sqlite3_bind_int64(ins, 1, i + 1);
        sqlite3_bind_int64(ins, 2, i + 1);
        sqlite3_bind_int64(ins, 3, 1700000000000ll + i);
        sqlite3_bind_blob(ins, 4, sample, SAMPLE_LEN, SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE)
            die("raw insert", GW_ESTORE);
        sqlite3_reset(ins);
        if (i % batch == batch - 1 || i == rows - 1) {
            if (sqlite3_step(commit) != SQLITE_DONE)
                die("raw commit", GW_ESTORE);
            sqlite3_reset(commit);
        }
    }
    double dt = now_s() - t0;
    sqlite3_finalize(ins);
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    sqlite3_close(db);
    return rows / dt;
}

/* --- 2..5. The store --- */

struct drain {
    uint64_t ids[1000];
    unsigned n;
};

static int take(void *arg, const struct gw_store_row *row)
{
    struct drain *d = arg;
    d->ids[d->n++] = row->id;
    return 0;
}

static struct gw_store *open_store(const char *path, enum gw_store_sync sync,
                                   enum gw_store_check check, double *secs)
{
    struct gw_store_config cfg;
    gw_store_config_init(&cfg);
    cfg.path = path;
    cfg.sync = sync;
    cfg.check = check;
    cfg.budget_bytes = 4ull << 30; /* hold the 1,000,000 rows */
    struct gw_store *s;
    double t0 = now_s();
    int rc = gw_store_open(&cfg, &s);
    if (rc)
        die("gw_store_open", rc);
    if (secs)
        *secs = now_s() - t0;
    return s;
}

/* Puts rows samples on one stream; returns samples/s including the final commit. */
static double ingest(struct gw_store *s, uint64_t first, unsigned rows, double *rss_at_10k)
{
    uint8_t sample[SAMPLE_LEN];
    struct gw_store_msg m = {.stream = "bucket:temps", .action = GW_STORE_WRITE_BUCKET,
                             .target = "temps", .payload = sample, .payload_len = SAMPLE_LEN};
    double t0 = now_s();
    for (unsigned i = 0; i < rows; i++) {
        make_sample(sample, first + i);
        int rc = gw_store_put(s, &m, NULL);
        if (rc)
            die("gw_store_put", rc);
        if ((i & 1023) == 0 && (rc = gw_store_poll(s, NULL)) != 0)
            die("gw_store_poll", rc);
        if (rss_at_10k && i + 1 == 10000) {
            double pause = now_s();
            gw_store_flush(s, NULL);
            *rss_at_10k = rss_mib();
            t0 += now_s() - pause;
        }
    }
    int rc = gw_store_flush(s, NULL);
    if (rc)
        die("gw_store_flush", rc);
    return rows / (now_s() - t0);
}

static void tsv_row(FILE *f, const char *what, double rate, const char *floor_what, double floor)
{
    if (f)
        fprintf(f, "%s\t%.0f\t%.0f\t%.3f\t%s\n", what, rate, floor, floor > 0 ? rate / floor : 0.0,
                floor_what);
}

int main(int argc, char **argv)
{
    int quick = 0;
    const char *base = "/var/tmp";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            base = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--quick] [--dir DIR]\n", argv[0]);
            return 2;
        }
    }
    gw_log_set_level(GW_LOG_WARN);
    char dir[256], raw[320], path[320], path2[320];
    snprintf(dir, sizeof dir, "%s/bench_store.XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror(dir);
        return 1;
    }
    snprintf(raw, sizeof raw, "%s/raw.db", dir);
    snprintf(path, sizeof path, "%s/store.db", dir);
    snprintf(path2, sizeof path2, "%s/store-normal.db", dir);
    unsigned big = quick ? 100000 : 1000000;
    unsigned floor_rows = quick ? 50000 : 300000;
    printf("bench_store: %s run in %s, sample %d bytes PSON, SQLite %s\n",
           quick ? "quick" : "full", dir, SAMPLE_LEN, sqlite3_libversion());

    /* 1. floor */
    double raw100 = raw_sqlite(raw, floor_rows, 100, "FULL");
    double raw500 = raw_sqlite(raw, floor_rows, 500, "FULL");
    double raw500n = raw_sqlite(raw, floor_rows, 500, "NORMAL");
    printf("floor  raw SQLite INSERT, txn of 100, sync FULL   : %10.0f rows/s\n", raw100);
    printf("floor  raw SQLite INSERT, txn of 500, sync FULL   : %10.0f rows/s\n", raw500);
    printf("floor  raw SQLite INSERT, txn of 500, sync NORMAL : %10.0f rows/s\n", raw500n);

    /* 2, 3, 5. ingest, bytes, RSS */
    double rss0 = rss_mib();
    struct gw_store *s = open_store(path, GW_STORE_SYNC_FULL, GW_STORE_CHECK_FULL, NULL);
    gw_store_close(s);
    long long size0 = file_size(path);
    s = open_store(path, GW_STORE_SYNC_FULL, GW_STORE_CHECK_FULL, NULL);
    double rss_empty = rss_mib();
    uint64_t w0 = proc_wchar();
    double rss10k = 0;
    double rate = ingest(s, 0, big, &rss10k);
    uint64_t w1 = proc_wchar();
    double rss_big = rss_mib();
    struct gw_store_stats st;
    gw_store_read_stats(s, &st);
    gw_store_close(s); /* last connection: checkpoints and removes the WAL */
    long long size1 = file_size(path);
    printf("store  ingest, group commit 500 rows/250 ms, FULL : %10.0f samples/s "
           "(%.0f%% of the raw 500-row floor; %" PRIu64 " commits)\n",
           rate, 100.0 * rate / raw500, st.commits);
    printf("store  bytes written per sample (write(2) total)  : %10.1f B (WAL + checkpoint)\n",
           (double)(w1 - w0) / big);
    printf("store  file growth per sample after checkpoint    : %10.1f B (%lld -> %lld bytes)\n",
           (double)(size1 - size0) / big, size0, size1);
    printf("store  counted bytes per sample (budget)          : %10.1f B\n",
           (double)st.bytes / (double)st.depth);

    /* 5. RSS and reopen with the big queue */
    double t_open;
    s = open_store(path, GW_STORE_SYNC_FULL, GW_STORE_CHECK_FULL, &t_open);
    double rss_reopen = rss_mib();
    gw_store_read_stats(s, &st);
    printf("store  reopen with %u rows (integrity_check+count): %10.2f s\n", big, t_open);
    double t_quick;
    gw_store_close(s);
    s = open_store(path, GW_STORE_SYNC_FULL, GW_STORE_CHECK_QUICK, &t_quick);
    printf("store  reopen with %u rows (quick_check+count)    : %10.2f s\n", big, t_quick);
    printf("RSS    process before open %.1f MiB, empty store %.1f MiB, 10,000 queued %.1f MiB, "
           "%u queued %.1f MiB (after reopen %.1f MiB): +%.1f MiB from 10k to %uk\n",
           rss0, rss_empty, rss10k, big, rss_big, rss_reopen, rss_big - rss10k, big / 1000);

    /* 4. drain */
    struct drain *d = calloc(1, sizeof *d);
    uint64_t drained = 0;
    double t0 = now_s();
    for (;;) {
        d->n = 0;
        int n = gw_store_next(s, 500, take, d);
        if (n < 0)
            die("gw_store_next", n);
        if (n == 0)
            break;
        for (unsigned i = 0; i < d->n; i++) {
            int rc = gw_store_ack(s, d->ids[i]);
            if (rc)
                die("gw_store_ack", rc);
        }
        drained += d->n;
        if ((drained & 4095) < 500) {
            int rc = gw_store_poll(s, NULL);
            if (rc)
                die("gw_store_poll", rc);
        }
    }
    int rc = gw_store_flush(s, NULL);
    if (rc)
        die("gw_store_flush", rc);
    double drain_rate = drained / (now_s() - t0);
    double rss_drained = rss_mib();
    gw_store_read_stats(s, &st);
    printf("store  drain, next(500) + ack each, FULL          : %10.0f rows/s (%" PRIu64
           " rows, %" PRIu64 " left)\n",
           drain_rate, drained, st.depth);
    printf("RSS    after draining %.1f MiB\n", rss_drained);
    gw_store_close(s);
    free(d);

    /* NORMAL for comparison (shorter run) */
    s = open_store(path2, GW_STORE_SYNC_NORMAL, GW_STORE_CHECK_FULL, NULL);
    double rate_n = ingest(s, 0, big / 4, NULL);
    gw_store_close(s);
    printf("store  ingest, group commit 500 rows/250 ms, NORMAL: %9.0f samples/s\n", rate_n);

    FILE *tsv = gw_bench_tsv_open("bench_store", "store_rates.tsv",
                                  "what\trows_per_s\tfloor_rows_per_s\tratio\tfloor");
    tsv_row(tsv, "store ingest FULL", rate, "raw SQLite txn 500 FULL", raw500);
    tsv_row(tsv, "store ingest NORMAL", rate_n, "raw SQLite txn 500 NORMAL", raw500n);
    tsv_row(tsv, "store drain next+ack (local)", drain_rate, "raw SQLite txn 500 FULL", raw500);
    tsv_row(tsv, "raw SQLite txn 100 FULL", raw100, "raw SQLite txn 500 FULL", raw500);
    if (tsv)
        fclose(tsv);
    tsv = gw_bench_tsv_open("bench_store", "store_figures.tsv", "figure\tvalue\tunit");
    if (tsv) {
        fprintf(tsv, "bytes_written_per_sample\t%.1f\tB\n", (double)(w1 - w0) / big);
        fprintf(tsv, "rss_10k_queued\t%.1f\tMiB\n", rss10k);
        fprintf(tsv, "rss_big_queued\t%.1f\tMiB\n", rss_big);
        fprintf(tsv, "big_queued_rows\t%u\trows\n", big);
        fclose(tsv);
    }
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    printf("targets: ingest >= 100000 samples/s, <= 400 B written per sample, RSS flat within "
           "5 MiB\n");
    return 0;
}
