/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_scale_mqtt_pub: the MQTT load of the scale benchmark. Publishes QoS 0 messages round-robin
 * to N topics "<prefix>/<i>" (i = 0..N-1) at a steady total rate, so that every topic gets one
 * message per period; the payload is the round number (a changing number), so every message
 * changes its resource's value. Paced on CLOCK_MONOTONIC in 1 ms steps (a publisher that falls
 * behind catches up without bursting more than 100 ms of messages at once).
 *
 *   bench_scale_mqtt_pub --port P [--host H] [--topics N] [--period-ms T] [--seconds S]
 *                        [--prefix scale/t]
 * Prints `ready` once connected, then once a second `pub <t_ms> <published>` (monotonic ms and the
 * messages handed to libmosquitto so far), and at the end `done <published> <seconds> skipped K
 * failed F` (K: messages the pacing gave up on after falling behind) after the
 * queue is flushed. SIGTERM/SIGINT end the run early (then `done` as usual). Exit 1 when the
 * broker cannot be reached, 2 for a usage error.
 */
#include <mosquitto.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static volatile int connected; /* set by the libmosquitto thread */

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
    (void)m;
    (void)arg;
    connected = rc == 0 ? 1 : -1;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_scale_mqtt_pub --port P [--host H] [--topics N] [--period-ms T] "
                    "[--seconds S] [--prefix P]\n");
    return 2;
}

static int parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *prefix = "scale/t";
    unsigned long port = 0, topics = 10000, period_ms = 1000, seconds = 60;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!v)
            return usage();
        if (!strcmp(a, "--port"))
            bad = parse_ulong(v, 1, 65535, &port);
        else if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--topics"))
            bad = parse_ulong(v, 1, 1000000, &topics);
        else if (!strcmp(a, "--period-ms"))
            bad = parse_ulong(v, 1, 3600000, &period_ms);
        else if (!strcmp(a, "--seconds"))
            bad = parse_ulong(v, 1, 86400, &seconds);
        else if (!strcmp(a, "--prefix"))
            prefix = v;
        else
            return usage();
        if (bad) {
            fprintf(stderr, "bench_scale_mqtt_pub: bad value for %s: %s\n", a, v);
            return 2;
        }
        i++;
    }
    if (!port)
        return usage();
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    mosquitto_lib_init();
    char cid[64];
    snprintf(cid, sizeof cid, "scale-pub-%d", (int)getpid());
    struct mosquitto *m = mosquitto_new(cid, true, NULL);
    if (!m) {
        fprintf(stderr, "bench_scale_mqtt_pub: mosquitto_new failed\n");
        return 1;
    }
    mosquitto_connect_callback_set(m, on_connect);
    int rc = mosquitto_connect(m, host, (int)port, 60);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_loop_start(m);
    for (int i = 0; rc == MOSQ_ERR_SUCCESS && connected == 0 && i < 500; i++)
        usleep(10000);
    if (rc != MOSQ_ERR_SUCCESS || connected != 1) {
        fprintf(stderr, "bench_scale_mqtt_pub: cannot connect to %s:%lu: %s\n", host, port,
                rc != MOSQ_ERR_SUCCESS ? mosquitto_strerror(rc) : "no CONNACK");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    /* messages per ns */
    double rate = (double)topics * 1000.0 / (double)period_ms / 1e9;
    uint64_t t0 = mono_ns(), end = t0 + (uint64_t)seconds * 1000000000u, next_report = t0;
    uint64_t pos = 0, published = 0, skipped = 0, failed = 0;
    uint64_t burst_max = (uint64_t)(rate * 1e8) + 1; /* 100 ms worth */
    char topic[256], payload[32];
    while (!stop) {
        uint64_t now = mono_ns();
        if (now >= next_report) {
            printf("pub %.3f %llu\n", (double)now / 1e6, (unsigned long long)published);
            fflush(stdout);
            next_report += 1000000000u;
        }
        if (now >= end)
            break;
        uint64_t due = (uint64_t)((double)(now - t0) * rate);
        if (due > pos + burst_max) { /* fell far behind: skip, do not burst */
            skipped += due - burst_max - pos;
            pos = due - burst_max;
        }
        for (; pos < due && !stop; pos++) {
            uint64_t i = pos % topics, round = pos / topics;
            snprintf(topic, sizeof topic, "%s/%llu", prefix, (unsigned long long)i);
            int n = snprintf(payload, sizeof payload, "%llu", (unsigned long long)round);
            int prc = mosquitto_publish(m, NULL, topic, n, payload, 0, false);
            if (prc == MOSQ_ERR_SUCCESS)
                published++;
            else if (++failed <= 5)
                fprintf(stderr, "bench_scale_mqtt_pub: publish: %s\n", mosquitto_strerror(prc));
        }
        usleep(1000);
    }
    double secs = (double)(mono_ns() - t0) / 1e9;
    /* Let the network thread flush what is queued, then leave cleanly. */
    usleep(300000);
    mosquitto_disconnect(m);
    mosquitto_loop_stop(m, false);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    printf("done %llu %.3f skipped %llu failed %llu\n", (unsigned long long)published, secs,
           (unsigned long long)skipped, (unsigned long long)failed);
    return 0;
}
