/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MQTT adapter driven for real: a mosquitto broker started by each test on a free 127.0.0.1
 * port, a real gw_loop + gw_registry, messages from mosquitto_pub (and a libmosquitto publisher
 * thread for bulk traffic), writes observed with mosquitto_sub. Covers: schema and example under
 * both validators, semantic config errors, topics becoming resources and DESCRIBE, reads with
 * JSON Pointer and coercion, streams on change, writes with QoS 0/1/2 and retain, a broker
 * restart (reconnect, re-subscribe, the loop keeps serving), TLS with a test CA and client
 * certificate and a wrong CA, and bad input (non-JSON, 1 MiB payload, 10,000 topics; RSS printed).
 */
#include "mqtt_adapter.h"
#include "mqtt_harness.h"

#include "gw/config.h"
#include "gw/error.h"
#include "gw/pson.h"
#include "gw/schema.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SRC GW_TEST_DATA "/../.."
#define OPS (&gw_mqtt_adapter)

static struct mh_env env;
static struct mh_broker broker;
static void *inst;

static void setup(void)
{
    memset(&broker, 0, sizeof broker);
    mh_env_init(&env, "site");
    inst = NULL;
}

static void teardown(void)
{
    mh_adapter_free(&env, OPS, inst);
    inst = NULL;
    mh_env_fini(&env);
    mh_broker_stop(&broker);
    if (broker.dir[0] && !getenv("MH_KEEP"))
        mh_sh("rm -rf '%s'", broker.dir);
}

#define CONFIG_FMT                                                                                 \
    "{\"type\":\"mqtt\",\"name\":\"site\","                                                        \
    " \"broker\":{\"host\":\"127.0.0.1\",\"port\":%d,\"keepalive\":5,\"reconnect_min\":100,"       \
    "             \"reconnect_max\":400%s},"                                                       \
    " \"max_topics\":%d, \"max_payload\":%d,"                                                      \
    " \"mappings\":["                                                                              \
    "  {\"name\":\"{2}/temperature\",\"subscribe\":\"zigbee2mqtt/+\",\"format\":\"json\","         \
    "   \"pointer\":\"/temperature\",\"as\":\"number\",\"unit\":\"°C\",\"min\":-40,\"max\":85},"  \
    "  {\"name\":\"{2}/battery\",\"subscribe\":\"zigbee2mqtt/+\",\"format\":\"json\","             \
    "   \"pointer\":\"/battery\",\"as\":\"integer\"},"                                             \
    "  "                                                                                           \
    "{\"name\":\"{2}/power\",\"subscribe\":\"stat/+/POWER\",\"format\":\"text\",\"as\":\"bool\","  \
    "   "                                                                                          \
    "\"write\":{\"topic\":\"cmnd/{2}/"                                                             \
    "POWER\",\"true_text\":\"ON\",\"false_text\":\"OFF\",\"qos\":1}},"                             \
    "  {\"name\":\"boiler/setpoint\",\"subscribe\":\"plant/boiler/setpoint\",\"as\":\"number\","   \
    "   \"write\":{\"topic\":\"plant/boiler/setpoint/set\",\"payload\":{\"setpoint\":\"$value\"}," \
    "              \"qos\":2,\"retain\":true}},"                                                   \
    "  {\"name\":\"any\",\"subscribe\":\"misc/#\"},"                                               \
    "  {\"name\":\"counter\",\"subscribe\":\"cnt\",\"as\":\"integer\",\"publish\":\"every\"},"     \
    "  {\"name\":\"level\",\"subscribe\":\"lvl\",\"as\":\"number\"},"                              \
    "  {\"name\":\"dev/{3}\",\"subscribe\":\"many/dev/+\",\"as\":\"number\"},"                     \
    "  {\"name\":\"notify\",\"write\":{\"topic\":\"notify/out\",\"qos\":0}}"                       \
    " ]}"

/* Starts the broker (extra config lines) and the adapter (extra broker JSON members). */
static void start_all(const char *broker_extra, const char *adapter_broker_extra, int max_topics,
                      int max_payload)
{
    ck_assert_int_eq(mh_broker_start(&broker, broker_extra), 0);
    char cfg[8192];
    snprintf(cfg, sizeof cfg, CONFIG_FMT, broker.port,
             adapter_broker_extra ? adapter_broker_extra : "", max_topics, max_payload);
    ck_assert_int_eq(mh_adapter_new(&env, OPS, cfg, true, &inst), 0);
}

static void wait_connected(uint64_t connects)
{
    ck_assert_msg(MH_WAIT(&env, mh_stat(&env, "site", "connects") >= connects, 10000),
                  "adapter did not connect");
    /* SUBSCRIBE is sent right after CONNACK; give the broker the moment to register it */
    ck_assert(MH_WAIT(&env, mh_broker_log_has(&broker, "many/dev/+"), 5000));
    mh_pump(&env, 50);
}

static void pub(const char *topic, const char *payload)
{
    ck_assert_int_eq(
        mh_sh("mosquitto_pub -h 127.0.0.1 -p %d -t '%s' -m '%s'", broker.port, topic, payload), 0);
}

/* Reads a resource; fails the test unless the call succeeds. */
static struct gw_value read_ok(const char *name)
{
    struct gw_value out;
    char msg[512];
    int rc = mh_call(&env, name, NULL, &out, msg, sizeof msg);
    ck_assert_msg(rc == 0, "read %s: %s (%s)", name, gw_strerror_name(rc), msg);
    return out;
}

static bool has_res(const char *name)
{
    return gw_registry_find(env.reg, name, strlen(name)) != NULL;
}

/* --- Config and schema --- */

START_TEST(test_mqtt_schema_and_example)
{
    struct gw_schema *schema = NULL;
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    ck_assert_int_eq(gw_schema_load(SRC "/schema/adapters/mqtt.schema.json", &schema, &diags), 0);
    struct gw_config_doc *doc = NULL;
    ck_assert_int_eq(gw_config_load(SRC "/schema/examples/mqtt.json", &doc, &diags), 0);
    int rc = gw_schema_validate_doc(schema, doc, &diags);
    if (rc) {
        char *s = gw_diag_format(&diags);
        ck_abort_msg("example invalid:\n%s", s);
    }
    gw_config_free(doc);

    /* shape errors are found by the schema, with positions */
    static const char bad[] =
        "{\"type\":\"mqtt\",\"name\":\"x\",\"broker\":{\"host\":\"h\",\"port\":70000},\n"
        " \"mappings\":[{\"name\":\"a\",\"subscrib\":\"t\"},{\"name\":\"b\"}]}";
    ck_assert_int_eq(gw_config_parse(bad, sizeof bad - 1, "bad.json", &doc, &diags), 0);
    ck_assert_int_eq(gw_schema_validate_doc(schema, doc, &diags), GW_ECONFIG);
    char *s = gw_diag_format(&diags);
    printf("schema refuses a bad file:\n%s", s);
    ck_assert_ptr_nonnull(strstr(s, "/broker/port"));
    ck_assert_ptr_nonnull(strstr(s, "/mappings/0"));
    ck_assert_ptr_nonnull(strstr(s, "subscrib"));
    ck_assert_ptr_nonnull(strstr(s, "/mappings/1"));
    free(s);
    gw_config_free(doc);
    gw_diag_list_fini(&diags);
    gw_schema_free(schema);

    /* an independent validator (Debian's python3-jsonschema, draft 2020-12) agrees */
    rc = mh_sh("/usr/bin/python3 -c 'import json,sys,jsonschema\n"
               "s=json.load(open(sys.argv[1]));jsonschema.Draft202012Validator.check_schema(s)\n"
               "jsonschema.Draft202012Validator(s).validate(json.load(open(sys.argv[2])))\n"
               "def walk(n,p):\n"
               " if isinstance(n,dict):\n"
               "  if n.get(\"type\")==\"object\" and \"properties\" in n:\n"
               "   assert n.get(\"additionalProperties\") is False, p\n"
               "   for k,v in n[\"properties\"].items():\n"
               "    for a in (\"description\",\"default\",\"examples\"): assert a in v,(p,k,a)\n"
               "  for k,v in n.items(): walk(v,p+\"/\"+k)\n"
               " elif isinstance(n,list):\n"
               "  for i,v in enumerate(n): walk(v,p+\"/\"+str(i))\n"
               "walk(s,\"\")' " SRC "/schema/adapters/mqtt.schema.json " SRC
               "/schema/examples/mqtt.json");
    ck_assert_int_eq(rc, 0);
}
END_TEST

static int create_with(const char *mappings, const char *broker_extra)
{
    char cfg[4096];
    snprintf(cfg, sizeof cfg,
             "{\"type\":\"mqtt\",\"name\":\"site\",\"broker\":{\"host\":\"127.0.0.1\"%s},"
             "\"mappings\":[%s]}",
             broker_extra ? broker_extra : "", mappings);
    void *st = NULL;
    env.config_errors = 0;
    env.last_config_error[0] = '\0';
    int rc = mh_adapter_new(&env, OPS, cfg, false, &st);
    if (rc == 0)
        OPS->destroy(st);
    return rc;
}

START_TEST(test_mqtt_semantic_errors)
{
    ck_assert_int_eq(create_with("{\"name\":\"{4}/t\",\"subscribe\":\"a/+\"}", NULL), GW_ECONFIG);
    ck_assert_str_eq(env.last_config_error,
                     "/mappings/0/name: placeholder {4} names topic level 4, but \"a/+\" matches "
                     "topics of 2 levels only");
    ck_assert_int_eq(create_with("{\"name\":\"x\",\"subscribe\":\"a/#/b\"}", NULL), GW_ECONFIG);
    ck_assert_ptr_nonnull(strstr(env.last_config_error, "/mappings/0/subscribe: '#'"));
    ck_assert_int_eq(create_with("{\"name\":\"x\",\"subscribe\":\"a\"},"
                                 "{\"name\":\"y\",\"write\":{\"topic\":\"out/+\"}}",
                                 NULL),
                     GW_ECONFIG);
    ck_assert_ptr_nonnull(strstr(env.last_config_error, "/mappings/1/write/topic: a topic to"));
    ck_assert_int_eq(create_with("{\"name\":\"x\",\"subscribe\":\"a/+\","
                                 "\"write\":{\"topic\":\"set/{2}\"}}",
                                 NULL),
                     GW_ECONFIG);
    ck_assert_ptr_nonnull(strstr(env.last_config_error, "one resource for many topics"));
    ck_assert_int_eq(
        create_with("{\"name\":\"x\",\"subscribe\":\"a\"},{\"name\":\"x\",\"subscribe\":\"b\"}",
                    NULL),
        GW_ECONFIG);
    ck_assert_str_eq(env.last_config_error,
                     "/mappings/1/name: resource \"site/x\" is already defined by mappings/0");
    ck_assert_int_eq(create_with("{\"name\":\"x\",\"subscribe\":\"a\",\"format\":\"text\","
                                 "\"pointer\":\"/v\"}",
                                 NULL),
                     GW_ECONFIG);
    ck_assert_ptr_nonnull(strstr(env.last_config_error, "/mappings/0/pointer"));
    ck_assert_int_eq(create_with("{\"name\":\"x\",\"subscribe\":\"a\"}", ",\"tls\":{}"),
                     GW_ECONFIG);
    ck_assert_ptr_nonnull(strstr(env.last_config_error, "/broker/tls: needs"));
    ck_assert_int_eq(create_with("{\"name\":\"{x}\",\"subscribe\":\"a\"}", NULL), GW_ECONFIG);
    ck_assert_ptr_nonnull(strstr(env.last_config_error, "/mappings/0/name: '{'"));
    /* and a good one */
    ck_assert_int_eq(create_with("{\"name\":\"{2}/{3}\",\"subscribe\":\"a/+/+\","
                                 "\"write\":{\"topic\":\"set/{2}/{3}\"}}",
                                 NULL),
                     0);
    ck_assert_int_eq(env.config_errors, 0);
}
END_TEST

/* --- Resources, reads, DESCRIBE --- */

START_TEST(test_mqtt_topics_become_resources)
{
    start_all(NULL, NULL, 100, 65536);
    /* fixed resources exist before any message */
    ck_assert(has_res("site/boiler/setpoint"));
    ck_assert(has_res("site/any"));
    ck_assert(has_res("site/notify"));
    ck_assert(has_res("site/_stats"));
    ck_assert(!has_res("site/kitchen/temperature"));
    wait_connected(1);

    struct gw_value v;
    char msg[512];
    ck_assert_int_eq(mh_call(&env, "site/boiler/setpoint", NULL, &v, msg, sizeof msg), GW_ESTALE);
    ck_assert_str_eq(msg, "site/boiler/setpoint: no message on plant/boiler/setpoint yet");

    pub("zigbee2mqtt/kitchen", "{\"temperature\":\"21.5\",\"battery\":87.6,\"linkquality\":120}");
    pub("zigbee2mqtt/garage", "{\"temperature\":-3.25,\"battery\":12}");
    pub("stat/plug1/POWER", "ON");
    pub("stat/plug2/POWER", "off");
    pub("misc/a/b", "hello world");
    pub("misc/json", "{\"k\":[1,2]}");
    pub("plant/boiler/setpoint", "55");
    ck_assert(
        MH_WAIT(&env, has_res("site/plug2/power") && mh_stat(&env, "site", "messages") >= 7, 5000));

    v = read_ok("site/kitchen/temperature");
    ck_assert_int_eq(v.type, GW_VALUE_DOUBLE);
    ck_assert_double_eq(v.d, 21.5);
    v = read_ok("site/kitchen/battery");
    ck_assert_int_eq(v.type, GW_VALUE_INT);
    ck_assert_int_eq(v.i, 88);
    v = read_ok("site/garage/temperature");
    ck_assert_double_eq(v.d, -3.25);
    v = read_ok("site/plug1/power");
    ck_assert_int_eq(v.type, GW_VALUE_BOOL);
    ck_assert(v.b);
    v = read_ok("site/plug2/power");
    ck_assert(!v.b);
    v = read_ok("site/boiler/setpoint");
    ck_assert_int_eq(v.type, GW_VALUE_DOUBLE);
    ck_assert_double_eq(v.d, 55);
    v = read_ok("site/any"); /* the last of misc/# */
    ck_assert_int_eq(v.type, GW_VALUE_MAP);
    ck_assert_uint_eq(gw_value_count(gw_value_map_get(&v, "k")), 2);
    gw_value_fini(&v);

    /* latest value wins */
    pub("zigbee2mqtt/kitchen", "{\"temperature\":22,\"battery\":87}");
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "messages") >= 8, 5000));
    mh_pump(&env, 20);
    v = read_ok("site/kitchen/temperature");
    ck_assert_double_eq(v.d, 22);
    /* with {"age": true}: the value, its age and arrival time */
    struct gw_value params = gw_value_map();
    *gw_value_map_set(&params, "age", 3) = gw_value_bool(true);
    ck_assert_int_eq(
        mh_call_params(&env, "site/kitchen/temperature", NULL, &params, &v, msg, sizeof msg), 0);
    ck_assert_int_eq(v.type, GW_VALUE_MAP);
    ck_assert_double_eq(gw_value_map_get(&v, "value")->d, 22);
    ck_assert_int_eq(gw_value_map_get(&v, "age_ms")->type, GW_VALUE_UINT);
    ck_assert_uint_lt(gw_value_map_get(&v, "age_ms")->u, 60000);
    ck_assert_uint_gt(gw_value_map_get(&v, "ts")->u, 1700000000000ull);
    ck_assert(!gw_value_map_get(&v, "stale")->b);
    ck_assert_uint_eq(gw_value_map_get(&v, "messages")->u, 2);
    gw_value_fini(&v);

    /* DESCRIBE all lists the new resources with their kinds */
    uint8_t buf[8192];
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_all(env.reg, &w);
    ck_assert(gw_pson_writer_ok(&w));
    struct gw_value all;
    ck_assert_int_gt(gw_value_decode(buf, w.len, &all), 0);
    const struct gw_value *d = gw_value_map_get(&all, "site/kitchen/temperature");
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(gw_value_map_get(d, "fn")->i, GW_FN_OUTPUT);
    d = gw_value_map_get(&all, "site/plug1/power");
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(gw_value_map_get(d, "fn")->i, GW_FN_INOUT);
    d = gw_value_map_get(&all, "site/notify");
    ck_assert_int_eq(gw_value_map_get(d, "fn")->i, GW_FN_INPUT);
    printf("DESCRIBE all: %zu resources\n", gw_value_count(&all));
    ck_assert_uint_eq(gw_value_count(&all), 12); /* 6 fixed (with _stats) + 6 from topics */
    gw_value_fini(&all);

    /* DESCRIBE one: samples and meta */
    struct gw_res *r = gw_registry_find(env.reg, "site/kitchen/temperature", 24);
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_one(env.reg, r, &w);
    struct gw_value one;
    ck_assert_int_gt(gw_value_decode(buf, w.len, &one), 0);
    ck_assert_str_eq(gw_value_map_get(&one, "unit")->s.p, "°C");
    ck_assert_str_eq(gw_value_map_get(&one, "source")->s.p,
                     "mqtt zigbee2mqtt/kitchen /temperature");
    double last = 0; /* "out" is the last value (22) */
    ck_assert_int_eq(gw_value_to_double(gw_value_map_get(&one, "out"), &last), 0);
    ck_assert_double_eq(last, 22);
    gw_value_fini(&one);
    r = gw_registry_find(env.reg, "site/plug1/power", 16);
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_one(env.reg, r, &w);
    ck_assert_int_gt(gw_value_decode(buf, w.len, &one), 0);
    ck_assert_str_eq(gw_value_map_get(&one, "write")->s.p, "cmnd/plug1/POWER qos 1");
    ck_assert_int_eq(gw_value_map_get(&one, "in")->type, GW_VALUE_BOOL);
    gw_value_fini(&one);

    /* reading a write-only resource, writing a read-only one: clear refusals */
    ck_assert_int_eq(mh_call(&env, "site/notify", NULL, NULL, msg, sizeof msg), GW_EINVAL);
    ck_assert_str_eq(msg, "site/notify is write-only: call it with an input");
    struct gw_value in = gw_value_int(1);
    ck_assert_int_eq(mh_call(&env, "site/kitchen/temperature", &in, NULL, msg, sizeof msg),
                     GW_EREADONLY);
    ck_assert_ptr_nonnull(strstr(msg, "read-only"));
}
END_TEST

/* --- Streams --- */

struct samples {
    struct gw_value v[64];
    size_t n;
    bool removed;
};

static void on_sample(void *arg, struct gw_res *res, const struct gw_value *v)
{
    struct samples *s = arg;
    (void)res;
    if (!v) {
        s->removed = true;
        return;
    }
    if (s->n < 64)
        gw_value_copy(&s->v[s->n], v);
    s->n++;
}

START_TEST(test_mqtt_stream_on_change)
{
    start_all(NULL, NULL, 100, 65536);
    wait_connected(1);
    struct gw_res *lvl = gw_registry_find(env.reg, "site/level", 10);
    struct gw_res *cnt = gw_registry_find(env.reg, "site/counter", 12);
    struct samples a = {0}, b = {0};
    struct gw_sub *sa = gw_res_subscribe(lvl, on_sample, &a);
    struct gw_sub *sb = gw_res_subscribe(cnt, on_sample, &b);
    /* one mosquitto_pub per topic, one message per line, in order */
    ck_assert_int_eq(
        mh_sh("printf '1\\n1\\n2.5\\n2.5\\n2.5\\n3\\n1\\n' | mosquitto_pub -h 127.0.0.1 "
              "-p %d -t lvl -l",
              broker.port),
        0);
    ck_assert_int_eq(
        mh_sh("printf '5\\n5\\n6\\n' | mosquitto_pub -h 127.0.0.1 -p %d -t cnt -l", broker.port),
        0);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "messages") >= 10, 5000));
    mh_pump(&env, 50);
    /* "change": each new value once */
    ck_assert_uint_eq(a.n, 4);
    double want[] = {1, 2.5, 3, 1};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(a.v[i].type, GW_VALUE_DOUBLE);
        ck_assert_double_eq(a.v[i].d, want[i]);
    }
    /* "every": each message */
    ck_assert_uint_eq(b.n, 3);
    ck_assert_int_eq(b.v[0].i, 5);
    ck_assert_int_eq(b.v[1].i, 5);
    ck_assert_int_eq(b.v[2].i, 6);
    /* the registry's last value and its time are kept */
    uint64_t ts = 0;
    bool stale = true;
    struct gw_value last;
    ck_assert(gw_res_last(lvl, &last, &ts, &stale));
    ck_assert_double_eq(last.d, 1);
    ck_assert(!stale);
    ck_assert_uint_gt(ts, 1700000000000ull);
    gw_sub_free(sa);
    gw_sub_free(sb);
    for (size_t i = 0; i < a.n && i < 64; i++)
        gw_value_fini(&a.v[i]);
    for (size_t i = 0; i < b.n && i < 64; i++)
        gw_value_fini(&b.v[i]);
}
END_TEST

/* --- Writes --- */

struct sub_proc {
    FILE *f;
    char out[1024];
};

/* Starts mosquitto_sub on filter (MQTT 5, retain-as-published, QoS 2) for one message, and
 * waits until the broker has its subscription. */
static void sub_start(struct sub_proc *s, const char *filter, const char *id)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "mosquitto_sub -h 127.0.0.1 -p %d -V 5 --retain-as-published -q 2 -i %s -t '%s' "
             "-C 1 -W 10 -F '%%t|%%p|%%q|%%r'",
             broker.port, id, filter);
    s->f = popen(cmd, "r");
    ck_assert_ptr_nonnull(s->f);
    char want[128];
    snprintf(want, sizeof want, "%s 2 %s", id, filter);
    ck_assert_msg(MH_WAIT(&env, mh_broker_log_has(&broker, want), 5000), "subscriber not ready");
}

static const char *sub_wait(struct sub_proc *s)
{
    s->out[0] = '\0';
    if (!fgets(s->out, sizeof s->out, s->f))
        s->out[0] = '\0';
    s->out[strcspn(s->out, "\n")] = '\0';
    pclose(s->f);
    return s->out;
}

START_TEST(test_mqtt_writes_publish)
{
    start_all(NULL, NULL, 100, 65536);
    wait_connected(1);
    pub("stat/plug1/POWER", "OFF");
    ck_assert(MH_WAIT(&env, has_res("site/plug1/power"), 5000));
    char msg[512];
    struct sub_proc s;

    /* QoS 1, raw payload with true_text */
    sub_start(&s, "cmnd/#", "sub1");
    struct gw_value in = gw_value_bool(true);
    ck_assert_int_eq(mh_call(&env, "site/plug1/power", &in, NULL, msg, sizeof msg), 0);
    ck_assert_str_eq(sub_wait(&s), "cmnd/plug1/POWER|ON|1|0");

    /* a string input is coerced like a message ("off" -> false) */
    sub_start(&s, "cmnd/#", "sub2");
    in = gw_value_cstr("off");
    ck_assert_int_eq(mh_call(&env, "site/plug1/power", &in, NULL, msg, sizeof msg), 0);
    ck_assert_str_eq(sub_wait(&s), "cmnd/plug1/POWER|OFF|1|0");

    /* QoS 2, retained, JSON template */
    sub_start(&s, "plant/#", "sub3");
    in = gw_value_double(57.5);
    ck_assert_int_eq(mh_call(&env, "site/boiler/setpoint", &in, NULL, msg, sizeof msg), 0);
    ck_assert_str_eq(sub_wait(&s), "plant/boiler/setpoint/set|{\"setpoint\":57.5}|2|1");
    /* retained: a subscriber that comes later still gets it */
    char line[256] = "";
    FILE *f;
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "mosquitto_sub -h 127.0.0.1 -p %d -t plant/boiler/setpoint/set -C 1 -W 5 -F '%%p|%%r'",
             broker.port);
    f = popen(cmd, "r");
    ck_assert(fgets(line, sizeof line, f) != NULL);
    pclose(f);
    ck_assert_str_eq(line, "{\"setpoint\":57.5}|1\n");

    /* QoS 0, write-only resource, string as is */
    sub_start(&s, "notify/#", "sub4");
    in = gw_value_cstr("door open");
    ck_assert_int_eq(mh_call(&env, "site/notify", &in, NULL, msg, sizeof msg), 0);
    ck_assert_str_eq(sub_wait(&s), "notify/out|door open|0|0");

    /* an input that cannot be coerced is refused without publishing */
    in = gw_value_cstr("maybe");
    ck_assert_int_eq(mh_call(&env, "site/plug1/power", &in, NULL, msg, sizeof msg), GW_EINVAL);
    ck_assert_str_eq(msg, "site/plug1/power: input refused: string \"maybe\" is not a boolean "
                          "(true/false, on/off, yes/no, 1/0)");
    ck_assert_uint_eq(mh_stat(&env, "site", "writes"), 4);
    ck_assert_uint_eq(mh_stat(&env, "site", "write_errors"), 1);
}
END_TEST

/* QoS 1 answers only after PUBACK: with the broker frozen (SIGSTOP) the call waits and then
 * fails after write_timeout; a QoS 0 write answers once sent. */
START_TEST(test_mqtt_write_waits_for_ack)
{
    ck_assert_int_eq(mh_broker_start(&broker, NULL), 0);
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"type\":\"mqtt\",\"name\":\"site\",\"write_timeout\":700,"
             " \"broker\":{\"host\":\"127.0.0.1\",\"port\":%d},"
             " \"mappings\":[{\"name\":\"q1\",\"write\":{\"topic\":\"out/q1\",\"qos\":1}},"
             "              {\"name\":\"q0\",\"write\":{\"topic\":\"out/q0\",\"qos\":0}}]}",
             broker.port);
    ck_assert_int_eq(mh_adapter_new(&env, OPS, cfg, true, &inst), 0);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "connects") == 1, 5000));
    char msg[512];
    struct gw_value in = gw_value_int(1);
    ck_assert_int_eq(mh_call(&env, "site/q1", &in, NULL, msg, sizeof msg), 0);

    kill(broker.pid, SIGSTOP);
    in = gw_value_int(2);
    ck_assert_int_eq(mh_call(&env, "site/q1", &in, NULL, msg, sizeof msg), GW_ETIMEDOUT);
    ck_assert_str_eq(msg, "publish to out/q1 not acknowledged within 700 ms (broker connected)");
    /* QoS 0 needs no answer from the broker: sent into the socket buffer, answered */
    in = gw_value_int(3);
    ck_assert_int_eq(mh_call(&env, "site/q0", &in, NULL, msg, sizeof msg), 0);
    kill(broker.pid, SIGCONT);
    ck_assert_uint_eq(mh_stat(&env, "site", "write_timeouts"), 1);
    ck_assert_uint_eq(mh_stat(&env, "site", "writes"), 3);
    /* the late PUBACK of the timed-out write is ignored; the link is fine */
    mh_pump(&env, 200);
    in = gw_value_int(4);
    ck_assert_int_eq(mh_call(&env, "site/q1", &in, NULL, msg, sizeof msg), 0);
}
END_TEST

/* A "broker" that accepts TCP (kernel backlog) but never answers: the attempt is dropped after
 * connect_timeout and retried, and the loop keeps serving meanwhile. */
START_TEST(test_mqtt_hung_broker)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    ck_assert_int_eq(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(ls, 16), 0);
    ck_assert_int_eq(getsockname(ls, (struct sockaddr *)&a, &alen), 0);
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"type\":\"mqtt\",\"name\":\"site\","
             " \"broker\":{\"host\":\"127.0.0.1\",\"port\":%d,\"connect_timeout\":500,"
             "   \"reconnect_min\":100},"
             " \"mappings\":[{\"name\":\"level\",\"subscribe\":\"lvl\"}]}",
             ntohs(a.sin_port));
    ck_assert_int_eq(mh_adapter_new(&env, OPS, cfg, true, &inst), 0);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "connect_failures") >= 2, 10000));
    ck_assert(mh_log_has("no CONNACK within 500 ms; reconnecting"));
    ck_assert_uint_eq(mh_stat(&env, "site", "connects"), 0);
    struct gw_value st;
    ck_assert_int_eq(mh_call(&env, "site/_stats", NULL, &st, NULL, 0), 0);
    ck_assert_str_eq(gw_value_map_get(&st, "last_error")->s.p, "no CONNACK within 500 ms");
    gw_value_fini(&st);
    close(ls);
}
END_TEST

/* A host name is looked up in a thread (a slow DNS cannot stall the loop): "localhost" connects,
 * a name that does not resolve is retried with the resolver's reason. */
START_TEST(test_mqtt_host_names)
{
    ck_assert_int_eq(mh_broker_start(&broker, NULL), 0);
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"type\":\"mqtt\",\"name\":\"site\","
             " \"broker\":{\"host\":\"localhost\",\"port\":%d,\"reconnect_min\":100},"
             " \"mappings\":[{\"name\":\"level\",\"subscribe\":\"lvl\",\"as\":\"number\"}]}",
             broker.port);
    ck_assert_int_eq(mh_adapter_new(&env, OPS, cfg, true, &inst), 0);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "connects") == 1, 5000));
    ck_assert(MH_WAIT(&env, mh_broker_log_has(&broker, " 0 lvl"), 5000));
    pub("lvl", "5");
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "messages") == 1, 5000));
    mh_adapter_free(&env, OPS, inst);
    inst = NULL;

    snprintf(cfg, sizeof cfg,
             "{\"type\":\"mqtt\",\"name\":\"site\","
             " \"broker\":{\"host\":\"no-such-host.invalid\",\"port\":%d,"
             "   \"reconnect_min\":100},"
             " \"mappings\":[{\"name\":\"level\",\"subscribe\":\"lvl\"}]}",
             broker.port);
    ck_assert_int_eq(mh_adapter_new(&env, OPS, cfg, true, &inst), 0);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "connect_failures") >= 2, 30000));
    ck_assert(mh_log_has("cannot resolve no-such-host.invalid: "));
    ck_assert_uint_eq(mh_stat(&env, "site", "connects"), 0);
}
END_TEST

/* --- Broker restart --- */

static unsigned ticks;
static struct gw_timer *beat;
static void beat_cb(void *arg)
{
    (void)arg;
    ticks++;
    gw_timer_start(beat, 20);
}

START_TEST(test_mqtt_broker_restart)
{
    start_all(NULL, NULL, 100, 65536);
    wait_connected(1);
    pub("lvl", "10");
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "messages") >= 1, 5000));

    /* the outage */
    mh_broker_stop(&broker);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "connected") == 0, 10000));
    ck_assert(mh_log_has("connection to 127.0.0.1:"));
    ticks = 0;
    beat = gw_timer_new(env.loop, beat_cb, NULL);
    gw_timer_start(beat, 20);
    /* During the outage the loop keeps serving: reads answer from the cache, writes fail at
     * once with a clear reason, and a 20 ms timer keeps firing. */
    mh_pump(&env, 1500); /* several reconnect attempts fail meanwhile */
    /* the cached value is marked stale in the registry */
    bool stale = false;
    struct gw_res *lvl = gw_registry_find(env.reg, "site/level", 10);
    ck_assert(gw_res_last(lvl, NULL, NULL, &stale));
    ck_assert(stale);
    ck_assert_uint_gt(ticks, 0);
    printf("restart: a 20 ms timer fired %u times during 1.5 s of outage\n", ticks);
    struct gw_value v = read_ok("site/level");
    ck_assert_double_eq(v.d, 10);
    char msg[512];
    struct gw_value in = gw_value_cstr("x");
    ck_assert_int_eq(mh_call(&env, "site/notify", &in, NULL, msg, sizeof msg), GW_ENOTCONN);
    ck_assert_ptr_nonnull(strstr(msg, "not connected to MQTT broker 127.0.0.1:"));
    uint64_t failures = mh_stat(&env, "site", "connect_failures");
    ck_assert_uint_ge(failures, 2);
    printf("restart: %llu reconnect attempts failed during the outage\n",
           (unsigned long long)failures);

    /* the broker comes back on the same port: reconnect and re-subscribe */
    ck_assert_int_eq(mh_broker_start(&broker, NULL), 0);
    ck_assert_msg(MH_WAIT(&env, mh_stat(&env, "site", "connects") >= 2, 10000), "no reconnect");
    ck_assert(mh_log_has("reconnected to 127.0.0.1:"));
    ck_assert(MH_WAIT(&env, mh_broker_log_has(&broker, "many/dev/+"), 5000));
    mh_pump(&env, 50);
    pub("lvl", "11");
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "messages") >= 2, 5000));
    mh_pump(&env, 20);
    v = read_ok("site/level");
    ck_assert_double_eq(v.d, 11);
    gw_res_last(lvl, NULL, NULL, &stale);
    ck_assert(!stale);
    ck_assert_uint_eq(mh_stat(&env, "site", "disconnects"), 1);
    gw_timer_free(beat);
}
END_TEST

/* --- TLS --- */

static void make_pki(const char *dir)
{
    int rc = mh_sh(
        "cd '%s' && exec >openssl.log 2>&1 && "
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
        "  -subj /CN=test-ca -keyout ca.key -out ca.pem && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
        "  -subj /CN=other-ca -keyout other.key -out other.pem && "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost "
        "  -keyout srv.key -out srv.csr && "
        "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "  -extfile san.ext -out srv.pem && "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=gateway "
        "  -keyout cli.key -out cli.csr && "
        "openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "  -out cli.pem",
        dir);
    ck_assert_msg(rc == 0, "openssl failed, see %s/openssl.log", dir);
}

START_TEST(test_mqtt_tls_good_and_wrong_ca)
{
    mh_tmpdir(broker.dir, sizeof broker.dir);
    make_pki(broker.dir);
    char bconf[1024], aconf[1024];
    snprintf(
        bconf, sizeof bconf,
        "cafile %s/ca.pem\ncertfile %s/srv.pem\nkeyfile %s/srv.key\nrequire_certificate true\n",
        broker.dir, broker.dir, broker.dir);
    snprintf(aconf, sizeof aconf,
             ",\"tls\":{\"ca_file\":\"%s/ca.pem\",\"cert_file\":\"%s/cli.pem\","
             "\"key_file\":\"%s/cli.key\"}",
             broker.dir, broker.dir, broker.dir);
    start_all(bconf, aconf, 100, 65536);
    wait_connected(1);
    ck_assert(mh_log_has("(TLS)"));
    ck_assert_int_eq(mh_sh("mosquitto_pub -h 127.0.0.1 -p %d --cafile %s/ca.pem --cert %s/cli.pem "
                           "--key %s/cli.key -t lvl -m 42",
                           broker.port, broker.dir, broker.dir, broker.dir),
                     0);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "messages") >= 1, 5000));
    mh_pump(&env, 20);
    struct gw_value v = read_ok("site/level");
    ck_assert_double_eq(v.d, 42);
    mh_adapter_free(&env, OPS, inst);
    inst = NULL;

    /* the same broker with a CA that did not sign its certificate: refused, clearly */
    mh_log_clear();
    snprintf(aconf, sizeof aconf,
             ",\"tls\":{\"ca_file\":\"%s/other.pem\",\"cert_file\":\"%s/cli.pem\","
             "\"key_file\":\"%s/cli.key\"}",
             broker.dir, broker.dir, broker.dir);
    char cfg[8192];
    snprintf(cfg, sizeof cfg, CONFIG_FMT, broker.port, aconf, 100, 65536);
    ck_assert_int_eq(mh_adapter_new(&env, OPS, cfg, true, &inst), 0);
    ck_assert(MH_WAIT(&env, mh_log_has("certificate verify failed"), 5000));
    mh_pump(&env, 300);
    ck_assert_uint_eq(mh_stat(&env, "site", "connects"), 0);
    struct gw_value st;
    ck_assert_int_eq(mh_call(&env, "site/_stats", NULL, &st, NULL, 0), 0);
    const struct gw_value *le = gw_value_map_get(&st, "last_error");
    ck_assert_ptr_nonnull(le);
    printf("wrong CA: last_error = %s\n", le->s.p);
    ck_assert_ptr_nonnull(strstr(le->s.p, "certificate verify failed"));
    gw_value_fini(&st);
    char msg[512];
    struct gw_value in = gw_value_cstr("x");
    ck_assert_int_eq(mh_call(&env, "site/notify", &in, NULL, msg, sizeof msg), GW_ENOTCONN);
    ck_assert_ptr_nonnull(strstr(msg, "certificate verify failed"));
}
END_TEST

/* --- Credentials, persistent session, last will --- */

START_TEST(test_mqtt_credentials_from_file)
{
    mh_tmpdir(broker.dir, sizeof broker.dir);
    ck_assert_int_eq(mh_sh("mosquitto_passwd -b -c '%s/passwd' gw 's3cret' >/dev/null && "
                           "printf 's3cret\\n' > '%s/pw' && chmod 600 '%s/pw' && "
                           "printf 'wrong\\n' > '%s/badpw' && chmod 644 '%s/badpw'",
                           broker.dir, broker.dir, broker.dir, broker.dir, broker.dir),
                     0);
    char bconf[512], aconf[512];
    snprintf(bconf, sizeof bconf, "allow_anonymous false\npassword_file %s/passwd\n", broker.dir);
    snprintf(aconf, sizeof aconf, ",\"username\":\"gw\",\"password_file\":\"%s/pw\"", broker.dir);
    start_all(bconf, aconf, 100, 65536);
    wait_connected(1);
    ck_assert(!mh_log_has("readable by group or others"));
    ck_assert_int_eq(
        mh_sh("mosquitto_pub -h 127.0.0.1 -p %d -u gw -P s3cret -t lvl -m 3", broker.port), 0);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "messages") >= 1, 5000));
    mh_pump(&env, 20);
    struct gw_value v = read_ok("site/level");
    ck_assert_double_eq(v.d, 3);
    mh_adapter_free(&env, OPS, inst);
    inst = NULL;

    /* a wrong password (in a file others may read): refused, and said so */
    snprintf(aconf, sizeof aconf, ",\"username\":\"gw\",\"password_file\":\"%s/badpw\"",
             broker.dir);
    char cfg[8192];
    snprintf(cfg, sizeof cfg, CONFIG_FMT, broker.port, aconf, 100, 65536);
    ck_assert_int_eq(mh_adapter_new(&env, OPS, cfg, true, &inst), 0);
    ck_assert(mh_log_has("is readable by group or others (mode 644); chmod 600 it"));
    ck_assert(MH_WAIT(&env, mh_log_has("refused the connection"), 5000));
    ck_assert(mh_log_has("not authorised"));
    ck_assert_uint_eq(mh_stat(&env, "site", "connects"), 0);
    mh_adapter_free(&env, OPS, inst);
    inst = NULL;

    /* a password file that does not exist: start() fails naming it */
    snprintf(aconf, sizeof aconf, ",\"username\":\"gw\",\"password_file\":\"%s/nope\"", broker.dir);
    snprintf(cfg, sizeof cfg, CONFIG_FMT, broker.port, aconf, 100, 65536);
    ck_assert_int_eq(mh_adapter_new(&env, OPS, cfg, true, &inst), GW_ECONFIG_READ);
    ck_assert(mh_log_has("/nope: No such file or directory"));
}
END_TEST

#define SESSION_FMT                                                                                \
    "{\"type\":\"mqtt\",\"name\":\"site\","                                                        \
    " \"broker\":{\"host\":\"127.0.0.1\",\"port\":%d,\"keepalive\":5,\"clean_session\":false,"     \
    "   \"client_id\":\"gw-persist\",\"reconnect_min\":100,"                                       \
    "   \"will\":{\"topic\":\"gw/status\",\"payload\":\"offline\",\"qos\":1,\"retain\":true}},"    \
    " \"mappings\":[{\"name\":\"level\",\"subscribe\":\"lvl\",\"qos\":1,\"as\":\"number\"}]}"

START_TEST(test_mqtt_persistent_session_and_will)
{
    ck_assert_int_eq(mh_broker_start(&broker, NULL), 0);
    char cfg[2048];
    snprintf(cfg, sizeof cfg, SESSION_FMT, broker.port);
    ck_assert_int_eq(mh_adapter_new(&env, OPS, cfg, true, &inst), 0);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "connects") == 1, 5000));
    ck_assert(MH_WAIT(&env, mh_broker_log_has(&broker, "gw-persist 1 lvl"), 5000));
    /* the gateway goes away cleanly: no will */
    mh_adapter_free(&env, OPS, inst);
    inst = NULL;
    ck_assert_int_ne(
        mh_sh("mosquitto_sub -h 127.0.0.1 -p %d -t gw/status -C 1 -W 1 >/dev/null 2>&1",
              broker.port),
        0);
    /* a QoS 1 message published meanwhile waits in the session */
    ck_assert_int_eq(mh_sh("mosquitto_pub -h 127.0.0.1 -p %d -q 1 -t lvl -m 77", broker.port), 0);
    ck_assert_int_eq(mh_adapter_new(&env, OPS, cfg, true, &inst), 0);
    ck_assert_msg(MH_WAIT(&env, mh_stat(&env, "site", "messages") >= 1, 5000),
                  "queued message not delivered after reconnect");
    mh_pump(&env, 20);
    struct gw_value v = read_ok("site/level");
    ck_assert_double_eq(v.d, 77);

    /* the gateway hangs (loop not run) past 1.5 x keep-alive: the broker publishes the will */
    sleep(8);
    char cmd[256], line[128] = "";
    snprintf(cmd, sizeof cmd,
             "mosquitto_sub -h 127.0.0.1 -p %d -t gw/status -C 1 -W 5 -F '%%p|%%r'", broker.port);
    FILE *f = popen(cmd, "r");
    ck_assert(fgets(line, sizeof line, f) != NULL);
    pclose(f);
    /* live (retain 0) or already retained (1), depending on when the broker noticed */
    ck_assert_msg(!strcmp(line, "offline|1\n") || !strcmp(line, "offline|0\n"), "got %s", line);
    /* by now it is retained */
    f = popen(cmd, "r");
    ck_assert(fgets(line, sizeof line, f) != NULL);
    pclose(f);
    ck_assert_str_eq(line, "offline|1\n");
    /* and once it runs again it notices, reconnects and resumes */
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "connects") >= 2, 10000));
    ck_assert_int_eq(mh_sh("mosquitto_pub -h 127.0.0.1 -p %d -q 1 -t lvl -m 78", broker.port), 0);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "messages") >= 2, 5000));
    mh_pump(&env, 20);
    v = read_ok("site/level");
    ck_assert_double_eq(v.d, 78);
}
END_TEST

/* --- Bad input --- */

START_TEST(test_mqtt_bad_input)
{
    start_all(NULL, NULL, 5000, 65536);
    wait_connected(1);
    /* not JSON where JSON is expected */
    pub("zigbee2mqtt/kitchen", "{\"temperature\": 21,");
    pub("zigbee2mqtt/kitchen", "hello");
    /* a field missing, a value that does not coerce */
    pub("zigbee2mqtt/kitchen", "{\"battery\": 50}");
    pub("stat/plug1/POWER", "maybe");
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "messages") >= 4, 5000));
    ck_assert_uint_eq(mh_stat(&env, "site", "bad_json"), 4); /* 2 messages x 2 mappings */
    ck_assert_uint_eq(mh_stat(&env, "site", "no_field"), 1);
    ck_assert_uint_eq(mh_stat(&env, "site", "coerce"), 1);
    ck_assert(mh_log_has("topic zigbee2mqtt/kitchen (mappings/0): payload is not JSON"));
    ck_assert(mh_log_has("JSON payload has no field at /temperature"));
    ck_assert(!has_res("site/plug1/power"));
    ck_assert(has_res("site/kitchen/battery"));

    /* a topic whose resource name the registry cannot carry (over 1024 bytes) */
    char longtopic[1300] = "many/dev/";
    memset(longtopic + 9, 'x', 1100);
    longtopic[1109] = '\0';
    pub(longtopic, "1");
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "register_failed") == 1, 5000));
    ck_assert(mh_log_has("cannot register resource \"site/dev/xxxx"));
    ck_assert(mh_log_has("...\" (1109 bytes): invalid argument (1 so far)"));

    /* a payload of 1 MiB */
    long rss0 = mh_rss_kb();
    char path[300];
    snprintf(path, sizeof path, "%s/big", broker.dir);
    ck_assert_int_eq(mh_sh("head -c 1048576 /dev/zero | tr '\\0' 'x' > '%s'", path), 0);
    ck_assert_int_eq(mh_sh("mosquitto_pub -h 127.0.0.1 -p %d -t lvl -f '%s'", broker.port, path),
                     0);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "oversize") == 1, 5000));
    ck_assert(mh_log_has("topic lvl: payload of 1048576 bytes is larger than max_payload 65536"));
    /* still fine afterwards */
    pub("lvl", "7");
    ck_assert(
        MH_WAIT(&env, has_res("site/level") && mh_stat(&env, "site", "published") >= 2, 5000));

    /* 10,000 distinct topics on a wildcard, max_topics 5000 */
    long rss1 = mh_rss_kb();
    struct mh_pub *p = mh_pub_start(broker.port, "many/dev/d", 10000, 10000, 0, "1.5");
    ck_assert_uint_eq(mh_pub_join_wait(&env, p), 10000);
    ck_assert_msg(
        MH_WAIT(&env,
                mh_stat(&env, "site", "topics") + mh_stat(&env, "site", "topics_over_limit") >=
                    10000,
                30000),
        "only %llu topics seen", (unsigned long long)mh_stat(&env, "site", "topics"));
    long rss2 = mh_rss_kb();
    /* kitchen/battery above was the first topic resource: 4999 of these fit */
    ck_assert_uint_eq(mh_stat(&env, "site", "topics"), 5000);
    ck_assert_uint_eq(mh_stat(&env, "site", "topics_over_limit"), 5001);
    ck_assert(mh_log_has("above max_topics 5000; dropped (topics_over_limit: 1 so far)"));
    ck_assert(mh_log_has("topics_over_limit: 5000 so far"));
    ck_assert_uint_le(mh_log_count("above max_topics"), 10); /* rate-limited */
    ck_assert(has_res("site/dev/d0"));
    ck_assert(has_res("site/dev/d4998"));
    ck_assert(!has_res("site/dev/d4999"));
    printf("bad input: RSS %ld kB at start, %ld kB after 1 MiB payload, %ld kB with 5000 topic "
           "resources (10,000 topics offered)\n",
           rss0, rss1, rss2);
    /* a second wave of the same 10,000 topics creates nothing new */
    p = mh_pub_start(broker.port, "many/dev/d", 10000, 10000, 0, "2.5");
    ck_assert_uint_eq(mh_pub_join_wait(&env, p), 10000);
    ck_assert(MH_WAIT(&env, mh_stat(&env, "site", "topics_over_limit") >= 10001, 30000));
    long rss3 = mh_rss_kb();
    printf("bad input: RSS %ld kB after the second wave\n", rss3);
    ck_assert_uint_eq(mh_stat(&env, "site", "topics"), 5000);
#ifndef __SANITIZE_ADDRESS__             /* ASan's quarantine keeps freed memory resident */
    ck_assert_int_lt(rss3 - rss2, 8192); /* bounded: no growth per dropped message */
#endif
    struct gw_value v = read_ok("site/dev/d42");
    ck_assert_double_eq(v.d, 2.5);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mqtt_adapter");
    TCase *tc = tcase_create("adapter");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    /* MQTT_TEST=test_mqtt_<name> runs one test only (for debugging) */
    const char *only = getenv("MQTT_TEST");
#define ADD(t)                                                                                     \
    if (!only || !strcmp(only, #t))                                                                \
    tcase_add_test(tc, t)
    ADD(test_mqtt_schema_and_example);
    ADD(test_mqtt_semantic_errors);
    ADD(test_mqtt_topics_become_resources);
    ADD(test_mqtt_stream_on_change);
    ADD(test_mqtt_writes_publish);
    ADD(test_mqtt_write_waits_for_ack);
    ADD(test_mqtt_hung_broker);
    ADD(test_mqtt_host_names);
    ADD(test_mqtt_broker_restart);
    ADD(test_mqtt_tls_good_and_wrong_ca);
    ADD(test_mqtt_credentials_from_file);
    ADD(test_mqtt_persistent_session_and_will);
    ADD(test_mqtt_bad_input);
#undef ADD
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
