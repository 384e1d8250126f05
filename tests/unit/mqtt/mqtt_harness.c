/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test harness for the MQTT adapter (mqtt_harness.h): real mosquitto, real loop and registry.
 */
#include "mqtt_harness.h"

#include "gw/error.h"
#include "gw/json.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void mh_tmpdir(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/gw-mqtt-XXXXXX");
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        abort();
    }
}

int mh_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) ||
        getsockname(s, (struct sockaddr *)&a, &len)) {
        perror("free port");
        abort();
    }
    close(s);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

int mh_broker_start(struct mh_broker *b, const char *extra)
{
    if (!b->dir[0])
        mh_tmpdir(b->dir, sizeof b->dir);
    if (!b->port)
        b->port = mh_free_port();
    char conf[320];
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", b->dir);
    snprintf(b->log, sizeof b->log, "%s/mosquitto.log", b->dir);
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f,
            "listener %d 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type "
            "error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n"
            "user root\npersistence false\n%s\n",
            b->port, extra ? extra : "");
    fclose(f);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive a crashed test */
        FILE *lf = fopen(b->log, "a");
        if (lf) {
            dup2(fileno(lf), 2);
            dup2(fileno(lf), 1);
        }
        execlp("mosquitto", "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    b->pid = pid;
    for (int i = 0; i < 500; i++) {
        if (port_open(b->port))
            return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "mosquitto exited, see %s\n", b->log);
            b->pid = 0;
            return -1;
        }
        usleep(10000);
    }
    return -1;
}

void mh_broker_stop(struct mh_broker *b)
{
    if (b->pid > 0) {
        kill(b->pid, SIGTERM);
        kill(b->pid, SIGCONT); /* in case a test froze it */
        waitpid(b->pid, NULL, 0);
        b->pid = 0;
    }
}

bool mh_broker_log_has(const struct mh_broker *b, const char *s)
{
    FILE *f = fopen(b->log, "r");
    char line[2048];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, s) != NULL;
    if (f)
        fclose(f);
    return found;
}

int mh_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* --- Log capture --- */

#define MH_LOG_MAX 4096
static char *log_lines[MH_LOG_MAX];
static size_t log_n;

static void host_log(const struct gw_host *h, int level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (getenv("MH_VERBOSE") || level <= 4)
        fprintf(stderr, "[log %d] mqtt %s: %s\n", level, h->instance, buf);
    free(log_lines[log_n % MH_LOG_MAX]);
    log_lines[log_n % MH_LOG_MAX] = strdup(buf);
    log_n++;
}

static void host_config_error(const struct gw_host *h, const char *ptr, const char *fmt, ...)
{
    struct mh_env *e = h->core;
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    snprintf(e->last_config_error, sizeof e->last_config_error, "%s: %s", ptr, buf);
    fprintf(stderr, "[config] %s\n", e->last_config_error);
    e->config_errors++;
}

bool mh_log_has(const char *s)
{
    return mh_log_count(s) > 0;
}

size_t mh_log_count(const char *s)
{
    size_t n = 0, lo = log_n > MH_LOG_MAX ? log_n - MH_LOG_MAX : 0;
    for (size_t i = lo; i < log_n; i++)
        if (strstr(log_lines[i % MH_LOG_MAX], s))
            n++;
    return n;
}

void mh_log_clear(void)
{
    for (size_t i = 0; i < MH_LOG_MAX; i++) {
        free(log_lines[i]);
        log_lines[i] = NULL;
    }
    log_n = 0;
}

/* --- Loop and registry --- */

static void stop_cb(void *arg)
{
    gw_loop_stop(arg);
}

void mh_env_init(struct mh_env *e, const char *instance)
{
    memset(e, 0, sizeof *e);
    if (gw_loop_new(&e->loop) || gw_registry_new(e->loop, &e->reg))
        abort();
    e->stop = gw_timer_new(e->loop, stop_cb, e->loop);
    e->host.loop = e->loop;
    e->host.registry = e->reg;
    e->host.instance = instance;
    e->host.file = "test.json";
    e->host.log = host_log;
    e->host.config_error = host_config_error;
    e->host.core = e;
}

void mh_env_fini(struct mh_env *e)
{
    mh_pump(e, 1);
    gw_timer_free(e->stop);
    gw_registry_free(e->reg);
    gw_loop_free(e->loop);
    mh_log_clear();
}

void mh_pump(struct mh_env *e, unsigned ms)
{
    gw_timer_start(e->stop, ms);
    gw_loop_run(e->loop);
}

int mh_adapter_new(struct mh_env *e, const struct gw_adapter_ops *ops, const char *text, bool start,
                   void **state)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (!j) {
        fprintf(stderr, "test config: %s at %d\n", err.text, err.position);
        abort();
    }
    struct gw_value cfg;
    if (gw_json_to_value(j, &cfg))
        abort();
    json_decref(j);
    int rc = ops->create(&e->host, &cfg, state);
    gw_value_fini(&cfg);
    if (rc == 0 && start) {
        rc = ops->start(*state);
        if (rc) {
            if (ops->stop)
                ops->stop(*state);
            gw_registry_remove_owner(e->reg, *state);
            ops->destroy(*state);
            *state = NULL;
        }
    }
    return rc;
}

void mh_adapter_free(struct mh_env *e, const struct gw_adapter_ops *ops, void *state)
{
    if (!state)
        return;
    if (ops->stop)
        ops->stop(state);
    gw_registry_remove_owner(e->reg, state);
    mh_pump(e, 1);
    ops->destroy(state);
}

struct call_result {
    bool done;
    int rc;
    struct gw_value out;
    char msg[512];
};

static void call_done(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    struct call_result *r = arg;
    r->done = true;
    r->rc = rc;
    if (out)
        gw_value_copy(&r->out, out);
    snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "");
}

int mh_call(struct mh_env *e, const char *name, struct gw_value *input, struct gw_value *out,
            char *msg, size_t msgcap)
{
    return mh_call_params(e, name, input, NULL, out, msg, msgcap);
}

int mh_call_params(struct mh_env *e, const char *name, struct gw_value *input,
                   struct gw_value *params, struct gw_value *out, char *msg, size_t msgcap)
{
    struct gw_res *res = gw_registry_find(e->reg, name, strlen(name));
    if (out)
        *out = GW_VALUE_INIT_NULL;
    if (!res) {
        if (input)
            gw_value_fini(input);
        if (params)
            gw_value_fini(params);
        if (msg)
            snprintf(msg, msgcap, "no resource %s", name);
        return GW_ERESOURCE;
    }
    struct call_result r = {.out = GW_VALUE_INIT_NULL};
    struct gw_call *c = gw_registry_call(e->reg, res, input, params, call_done, &r);
    if (!MH_WAIT(e, r.done, 30000)) {
        gw_call_cancel(c);
        if (msg)
            snprintf(msg, msgcap, "no answer within 30 s");
        return GW_ETIMEDOUT;
    }
    if (out)
        *out = r.out;
    else
        gw_value_fini(&r.out);
    if (msg)
        snprintf(msg, msgcap, "%s", r.msg);
    return r.rc;
}

uint64_t mh_stat(struct mh_env *e, const char *instance, const char *key)
{
    char name[128];
    snprintf(name, sizeof name, "%s/_stats", instance);
    struct gw_value out;
    if (mh_call(e, name, NULL, &out, NULL, 0))
        return UINT64_MAX;
    const struct gw_value *v = gw_value_map_get(&out, key);
    double d = -1;
    uint64_t r = v && v->type == GW_VALUE_BOOL         ? (uint64_t)v->b
                 : v && gw_value_to_double(v, &d) == 0 ? (uint64_t)d
                                                       : UINT64_MAX;
    gw_value_fini(&out);
    return r;
}

/* --- Publisher thread --- */

struct mh_pub {
    pthread_t th;
    int port, qos;
    char topic_fmt[128];
    const char *payload;
    size_t ntopics, n, sent, acked;
    volatile int done;
};

static void pub_acked(struct mosquitto *m, void *obj, int mid)
{
    struct mh_pub *p = obj;
    (void)m;
    (void)mid;
    p->acked++;
}

static void *pub_main(void *arg)
{
    struct mh_pub *p = arg;
    struct mosquitto *m = mosquitto_new(NULL, true, p);
    if (m)
        mosquitto_publish_callback_set(m, pub_acked);
    if (!m || mosquitto_connect(m, "127.0.0.1", p->port, 60) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "publisher: cannot connect\n");
        if (m)
            mosquitto_destroy(m);
        __atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
        return NULL;
    }
    mosquitto_max_inflight_messages_set(
        m, 20); /* the broker's default in-flight window: mosquitto 2.0.11 drops a 3.1.1 client that
                   exceeds it ("out of memory") */
    char topic[256], payload[64];
    int lost = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (p->ntopics == 1)
            snprintf(topic, sizeof topic, "%s", p->topic_fmt);
        else
            snprintf(topic, sizeof topic, "%s%zu", p->topic_fmt, i % p->ntopics);
        const char *pl = p->payload;
        if (!pl) {
            snprintf(payload, sizeof payload, "%zu", i);
            pl = payload;
        }
        if (mosquitto_publish(m, NULL, topic, (int)strlen(pl), pl, p->qos, false) ==
            MOSQ_ERR_SUCCESS)
            p->sent++;
        /* keep the socket moving without unbounded local queueing */
        if (mosquitto_want_write(m) || (i & 63) == 0) {
            int rc = mosquitto_loop(m, 0, 1);
            if (rc != MOSQ_ERR_SUCCESS) {
                /* QoS 1/2 in flight are sent again after the reconnect */
                fprintf(stderr, "publisher: %s (errno %s); reconnecting\n", mosquitto_strerror(rc),
                        strerror(errno));
                lost++;
                mosquitto_reconnect(m);
            }
        }
    }
    /* until every message is sent (QoS 0) or acknowledged (QoS 1/2), 60 s at most */
    for (int k = 0; k < 12000 && p->acked < p->sent; k++) {
        int rc = mosquitto_loop(m, 5, 1);
        if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) {
            fprintf(stderr, "publisher: %s (errno %s); reconnecting\n", mosquitto_strerror(rc),
                    strerror(errno));
            lost++;
            mosquitto_reconnect(m);
        }
    }
    if (p->acked < p->sent)
        fprintf(stderr, "publisher: only %zu of %zu acknowledged (%d reconnects)\n", p->acked,
                p->sent, lost);
    mosquitto_disconnect(m);
    mosquitto_loop(m, 5, 1);
    mosquitto_destroy(m);
    __atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

struct mh_pub *mh_pub_start(int port, const char *topic_fmt, size_t ntopics, size_t n, int qos,
                            const char *payload)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, (void (*)(void))mosquitto_lib_init);
    struct mh_pub *p = calloc(1, sizeof *p);
    p->port = port;
    p->qos = qos;
    snprintf(p->topic_fmt, sizeof p->topic_fmt, "%s", topic_fmt);
    p->ntopics = ntopics ? ntopics : 1;
    p->n = n;
    p->payload = payload;
    pthread_create(&p->th, NULL, pub_main, p);
    return p;
}

size_t mh_pub_join(struct mh_pub *p)
{
    pthread_join(p->th, NULL);
    size_t n = p->sent;
    free(p);
    return n;
}

long mh_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

size_t mh_pub_join_wait(struct mh_env *e, struct mh_pub *p)
{
    while (!__atomic_load_n(&p->done, __ATOMIC_ACQUIRE))
        mh_pump(e, 10);
    return mh_pub_join(p);
}
