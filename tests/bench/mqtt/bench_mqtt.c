/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MQTT adapter benchmark against a real mosquitto on 127.0.0.1:
 *   1. floor: messages/s a plain libmosquitto subscriber (own thread, mosquitto_loop) receives
 *      from the same publisher, so the adapter's figure can be read against the broker's;
 *   2. messages/s from a libmosquitto publisher through the adapter (on the gateway loop) to a
 *      registry stream subscriber ("publish": "every", so every message is one sample);
 *   3. RSS before and after 10,000 topics became 10,000 resources.
 * Prints figures only; no pass/fail on speed. Usage: bench_mqtt [messages] (default 200000).
 */
#include "mqtt_adapter.h"
#include "mqtt_harness.h"

#include "gw/error.h"

#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t samples;
static void on_sample(void *arg, struct gw_res *res, const struct gw_value *v)
{
    (void)arg;
    (void)res;
    if (v)
        samples++;
}

/* --- floor: a bare libmosquitto subscriber --- */
static volatile size_t floor_count;
static void floor_msg(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    (void)m;
    (void)obj;
    (void)msg;
    floor_count++;
}

static double run_floor(int port, size_t n)
{
    struct mosquitto *m = mosquitto_new(NULL, true, NULL);
    mosquitto_message_callback_set(m, floor_msg);
    if (mosquitto_connect(m, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS)
        return -1;
    mosquitto_subscribe(m, NULL, "floor/#", 0);
    for (int i = 0; i < 20; i++)
        mosquitto_loop(m, 10, 1);
    floor_count = 0;
    double t0 = now_s();
    struct mh_pub *p = mh_pub_start(port, "floor/t", 1, n, 0, "21.5");
    while (floor_count < n && now_s() - t0 < 60)
        mosquitto_loop(m, 10, 1000);
    double dt = now_s() - t0;
    mh_pub_join(p);
    mosquitto_disconnect(m);
    mosquitto_destroy(m);
    printf("floor: bare libmosquitto subscriber got %zu of %zu in %.3f s = %.0f msg/s\n",
           (size_t)floor_count, n, dt, (double)floor_count / dt);
    return (double)floor_count / dt;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    mosquitto_lib_init();
    struct mh_broker broker = {0};
    if (mh_broker_start(&broker, "log_type error\n")) {
        fprintf(stderr, "cannot start mosquitto\n");
        return 1;
    }
    /* the broker's own log line per message would dominate: errors only here */
    run_floor(broker.port, n);

    struct mh_env env;
    mh_env_init(&env, "bench");
    char cfg[2048];
    snprintf(
        cfg, sizeof cfg,
        "{\"type\":\"mqtt\",\"name\":\"bench\",\"broker\":{\"host\":\"127.0.0.1\",\"port\":%d},"
        "\"max_topics\":20000,"
        "\"mappings\":[{\"name\":\"value\",\"subscribe\":\"bench/value\",\"as\":\"number\","
        "\"publish\":\"every\"},"
        "{\"name\":\"t/{2}\",\"subscribe\":\"topics/+\",\"as\":\"number\"}]}",
        broker.port);
    void *inst = NULL;
    if (mh_adapter_new(&env, &gw_mqtt_adapter, cfg, true, &inst)) {
        fprintf(stderr, "adapter did not start\n");
        return 1;
    }
    if (!MH_WAIT(&env, mh_stat(&env, "bench", "connects") == 1, 5000)) {
        fprintf(stderr, "adapter did not connect\n");
        return 1;
    }
    mh_pump(&env, 100);
    struct gw_res *res = gw_registry_find(env.reg, "bench/value", 11);
    struct gw_sub *sub = gw_res_subscribe(res, on_sample, NULL);

    double t0 = now_s();
    struct mh_pub *p = mh_pub_start(broker.port, "bench/value", 1, n, 0, "21.5");
    while (samples < n && now_s() - t0 < 60)
        mh_pump(&env, 5);
    double dt = now_s() - t0;
    mh_pub_join(p);
    printf("adapter: %zu of %zu messages reached the registry stream in %.3f s = %.0f msg/s "
           "(QoS 0, 4-byte payload, one topic)\n",
           samples, n, dt, (double)samples / dt);

    long rss0 = mh_rss_kb();
    t0 = now_s();
    /* QoS 0: a QoS 1 flood with a subscriber attached makes mosquitto 2.0.11 drop the publisher
     * ("disconnected due to out of memory"), with mosquitto_sub as the subscriber too */
    p = mh_pub_start(broker.port, "topics/d", 10000, 10000, 0, "1.5");
    while (mh_stat(&env, "bench", "topics") < 10000 && now_s() - t0 < 60)
        mh_pump(&env, 10);
    dt = now_s() - t0;
    mh_pub_join_wait(&env, p);
    long rss1 = mh_rss_kb();
    printf("topics: %llu resources from 10,000 new topics in %.3f s; RSS %ld kB before, %ld kB "
           "after (+%ld kB, %.0f bytes per topic resource incl. registry)\n",
           (unsigned long long)mh_stat(&env, "bench", "topics"), dt, rss0, rss1, rss1 - rss0,
           (double)(rss1 - rss0) * 1024 / 10000);
    printf("registry: %zu resources\n", gw_registry_count(env.reg));

    gw_sub_free(sub);
    mh_adapter_free(&env, &gw_mqtt_adapter, inst);
    mh_env_fini(&env);
    mh_broker_stop(&broker);
    mh_sh("rm -rf '%s'", broker.dir);
    return 0;
}
