/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The event loop (gw/loop.h) on libwebsockets 4.1: one lws context with one vhost that listens on
 * nothing. Foreign fds are adopted as lws "raw file" connections, timers are lws sorted-usec lists,
 * posted tasks are a mutex-protected queue drained after lws_cancel_service() wakes the loop, and
 * signals arrive through a signalfd that is watched like any other fd.
 *
 * Why fds are dup()ed before adoption: lws closes the descriptor of a raw connection when the
 * connection ends, and that happens at its next service pass. Giving lws its own duplicate lets the
 * caller close (and reuse) its fd the moment it unwatches, as gw/loop.h promises.
 *
 * Other lws users (the WebSocket transport) bind their connections to the vhost protocol
 * GW_LOOP_LWS_PROTOCOL and pass a struct gw_lws_handler as opaque user data; every callback that is
 * not ours is forwarded to it.
 */
#include "gw/loop.h"
#include "gw/error.h"
#include "gw/log.h"
#include "gw/mem.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

struct gw_task {
    struct gw_task *next;
    gw_task_fn fn;
    void *arg;
};

struct gw_sig {
    struct gw_sig *next;
    int signo;
    gw_signal_fn cb;
    void *arg;
};

struct gw_loop {
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    volatile int stop;
    bool tls;                    /* lws did the OpenSSL set-up (gw_loop_new) */
    pthread_mutex_t lock;
    struct gw_task *head, *tail; /* posted tasks, under lock */
    int sigfd;
    sigset_t sigs;
    struct gw_watch *sigwatch;
    struct gw_sig *sighandlers;
};

struct gw_watch {
    lws_sorted_usec_list_t rearm; /* re-requests POLLOUT after a writable callback */
    struct gw_loop *loop;
    struct lws *wsi;
    gw_fd_fn cb;
    void *arg;
    int fd;            /* the caller's fd (reported to cb) */
    unsigned events;
    bool dead;         /* unwatched; freed when lws closes the connection */
    bool in_cb;
};

struct gw_timer {
    lws_sorted_usec_list_t sul; /* first: lws hands us this pointer */
    struct gw_loop *loop;
    gw_timer_fn cb;
    void *arg;
    bool armed;
    bool in_cb;
    bool freed;
};

/* --- Clock --- */

uint64_t gw_loop_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t gw_loop_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- Posted tasks --- */

static void drain_tasks(struct gw_loop *loop)
{
    pthread_mutex_lock(&loop->lock);
    struct gw_task *t = loop->head;
    loop->head = loop->tail = NULL;
    pthread_mutex_unlock(&loop->lock);
    while (t) {
        struct gw_task *next = t->next;
        t->fn(t->arg);
        free(t);
        t = next;
    }
}

void gw_loop_drain(struct gw_loop *loop)
{
    /* Tasks may post more tasks: loop until the queue stays empty. */
    for (;;) {
        pthread_mutex_lock(&loop->lock);
        bool empty = !loop->head;
        pthread_mutex_unlock(&loop->lock);
        if (empty)
            return;
        drain_tasks(loop);
    }
}

void gw_loop_post(struct gw_loop *loop, gw_task_fn fn, void *arg)
{
    struct gw_task *t = gw_malloc(sizeof *t);
    t->next = NULL;
    t->fn = fn;
    t->arg = arg;
    pthread_mutex_lock(&loop->lock);
    bool was_empty = !loop->head;
    if (loop->tail)
        loop->tail->next = t;
    else
        loop->head = t;
    loop->tail = t;
    pthread_mutex_unlock(&loop->lock);
    if (was_empty) /* one wake-up per batch is enough */
        lws_cancel_service(loop->ctx);
}

/* --- lws callback --- */

static void apply_events(struct gw_watch *w)
{
    lws_rx_flow_control(w->wsi, (w->events & GW_LOOP_IN) ? 1 : 0);
    if (w->events & GW_LOOP_OUT)
        lws_callback_on_writable(w->wsi);
}

static void rearm_writable(lws_sorted_usec_list_t *sul)
{
    struct gw_watch *w = container_of(sul, struct gw_watch, rearm);
    if (!w->dead && w->wsi && (w->events & GW_LOOP_OUT))
        lws_callback_on_writable(w->wsi);
}

static int watch_event(struct gw_watch *w, unsigned ev)
{
    if (w->dead)
        return 0;
    w->in_cb = true;
    w->cb(w->arg, w->fd, ev);
    w->in_cb = false;
    if (w->dead)
        return -1; /* unwatched from its own callback: let lws close its duplicate now */
    /* Level-triggered, like poll(2). lws ignores a writable request made from inside the
     * writable callback of a raw fd, so it is made right after, from a zero-delay timer. */
    if ((ev & GW_LOOP_OUT) && (w->events & GW_LOOP_OUT))
        lws_sul_schedule(w->loop->ctx, 0, &w->rearm, rearm_writable, 1);
    return 0;
}

static int loop_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    struct gw_watch *w;
    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED: {
        struct gw_loop *loop = wsi ? lws_context_user(lws_get_context(wsi)) : NULL;
        if (loop)
            drain_tasks(loop);
        return 0;
    }
    case LWS_CALLBACK_RAW_ADOPT_FILE:
        return 0;
    case LWS_CALLBACK_RAW_RX_FILE:
        w = lws_get_opaque_user_data(wsi);
        return w ? watch_event(w, GW_LOOP_IN) : 0;
    case LWS_CALLBACK_RAW_WRITEABLE_FILE:
        w = lws_get_opaque_user_data(wsi);
        return w ? watch_event(w, GW_LOOP_OUT) : 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        w = lws_get_opaque_user_data(wsi);
        if (!w)
            return 0;
        lws_set_opaque_user_data(wsi, NULL);
        lws_sul_cancel(&w->rearm);
        if (!w->dead) {
            /* lws gave up on the fd (hang-up or error): tell the owner, who must unwatch. */
            w->wsi = NULL;
            w->in_cb = true;
            w->cb(w->arg, w->fd, GW_LOOP_ERR);
            w->in_cb = false;
            if (!w->dead)
                return 0; /* owner keeps the struct; it will unwatch later */
        }
        free(w);
        return 0;
    default:
        break;
    }
    /* Connections of other users (the WebSocket transport) carry their handler. */
    struct gw_lws_handler *h = wsi ? lws_get_opaque_user_data(wsi) : NULL;
    if (h && h->cb)
        return h->cb(wsi, (int)reason, user, in, len, h);
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {"gw-loop", loop_callback, 0, 0, 0, NULL, 0},
    {GW_LOOP_LWS_PROTOCOL, loop_callback, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* --- Loop --- */

static void lws_log_bridge(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    gw_log_at(level == LLL_ERR ? GW_LOG_WARN : GW_LOG_DEBUG, "lws: %.*s", (int)n, line);
}

static int loop_create(struct gw_loop **out, bool tls)
{
    struct gw_loop *loop = gw_calloc(1, sizeof *loop);
    pthread_mutex_init(&loop->lock, NULL);
    loop->sigfd = -1;
    sigemptyset(&loop->sigs);

    lws_set_log_level(LLL_ERR | (gw_log_level_current >= GW_LOG_DEBUG ? LLL_WARN : 0),
                      lws_log_bridge);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    if (tls)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    loop->tls = tls;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    info.user = loop; /* lws_context_user() leads callbacks back to the loop */
    loop->ctx = lws_create_context(&info);
    if (!loop->ctx) {
        gw_log_err("event loop: libwebsockets context creation failed");
        free(loop);
        return GW_EIO;
    }
    info.vhost_name = "gw";
    /* This vhost only carries raw fds: no TLS, so no system CA bundle (~30 ms and ~1 MiB at
     * start-up). The WebSocket client vhosts (transport_ws.c) load the configured CA file, or the
     * system bundle when none is configured. */
    info.options |= LWS_SERVER_OPTION_DISABLE_OS_CA_CERTS;
    loop->vhost = lws_create_vhost(loop->ctx, &info);
    if (!loop->vhost) {
        gw_log_err("event loop: libwebsockets vhost creation failed");
        lws_context_destroy(loop->ctx);
        free(loop);
        return GW_EIO;
    }
    *out = loop;
    return 0;
}

int gw_loop_new(struct gw_loop **out)
{
    return loop_create(out, true);
}

int gw_loop_new_plain(struct gw_loop **out)
{
    return loop_create(out, false);
}

bool gw_loop_tls(const struct gw_loop *loop)
{
    return loop->tls;
}

void gw_loop_free(struct gw_loop *loop)
{
    if (!loop)
        return;
    if (loop->sigwatch)
        gw_loop_unwatch(loop->sigwatch);
    lws_context_destroy(loop->ctx);
    drain_tasks(loop); /* run what is left so posted memory is released */
    if (loop->sigfd >= 0) {
        close(loop->sigfd);
        sigprocmask(SIG_UNBLOCK, &loop->sigs, NULL);
    }
    while (loop->sighandlers) {
        struct gw_sig *n = loop->sighandlers->next;
        free(loop->sighandlers);
        loop->sighandlers = n;
    }
    pthread_mutex_destroy(&loop->lock);
    free(loop);
}

int gw_loop_run(struct gw_loop *loop)
{
    loop->stop = 0;
    drain_tasks(loop);
    while (!loop->stop) {
        if (lws_service(loop->ctx, 0) < 0)
            break;
        /* Tasks posted from this thread do not go through the cancel callback reliably. */
        pthread_mutex_lock(&loop->lock);
        bool pending = loop->head != NULL;
        pthread_mutex_unlock(&loop->lock);
        if (pending)
            drain_tasks(loop);
    }
    return 0;
}

void gw_loop_stop(struct gw_loop *loop)
{
    loop->stop = 1;
    lws_cancel_service(loop->ctx);
}

struct lws_context *gw_loop_lws(struct gw_loop *loop)
{
    return loop->ctx;
}

struct lws_vhost *gw_loop_vhost(struct gw_loop *loop)
{
    return loop->vhost;
}

/* --- Watches --- */

struct gw_watch *gw_loop_watch(struct gw_loop *loop, int fd, unsigned events, gw_fd_fn cb,
                               void *arg)
{
    int dupfd = dup(fd);
    if (dupfd < 0) {
        gw_log_err("event loop: dup(%d) failed: %s", fd, strerror(errno));
        return NULL;
    }
    struct gw_watch *w = gw_calloc(1, sizeof *w);
    w->loop = loop;
    w->cb = cb;
    w->arg = arg;
    w->fd = fd;
    w->events = events;
    lws_sock_file_fd_type u;
    u.filefd = dupfd;
    w->wsi = lws_adopt_descriptor_vhost(loop->vhost, LWS_ADOPT_RAW_FILE_DESC, u, "gw-loop", NULL);
    if (!w->wsi) {
        /* lws closed dupfd already */
        gw_log_err("event loop: cannot watch fd %d", fd);
        free(w);
        return NULL;
    }
    lws_set_opaque_user_data(w->wsi, w);
    apply_events(w);
    return w;
}

void gw_loop_watch_set(struct gw_watch *w, unsigned events)
{
    if (w->dead || !w->wsi || w->events == events)
        return;
    w->events = events;
    apply_events(w);
}

void gw_loop_unwatch(struct gw_watch *w)
{
    if (!w || w->dead)
        return;
    w->dead = true;
    lws_sul_cancel(&w->rearm);
    if (!w->wsi) { /* lws already closed it */
        if (!w->in_cb)
            free(w);
        return;
    }
    if (w->in_cb)
        return; /* watch_event returns -1 and lws closes it */
    lws_rx_flow_control(w->wsi, 0);
    lws_set_timeout(w->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
}

/* --- Timers --- */

static void timer_fire(lws_sorted_usec_list_t *sul)
{
    struct gw_timer *t = container_of(sul, struct gw_timer, sul);
    t->armed = false;
    t->in_cb = true;
    t->cb(t->arg);
    t->in_cb = false;
    if (t->freed) {
        lws_sul_cancel(&t->sul);
        free(t);
    }
}

struct gw_timer *gw_timer_new(struct gw_loop *loop, gw_timer_fn cb, void *arg)
{
    struct gw_timer *t = gw_calloc(1, sizeof *t);
    t->loop = loop;
    t->cb = cb;
    t->arg = arg;
    return t;
}

void gw_timer_start(struct gw_timer *t, uint64_t delay_ms)
{
    t->armed = true;
    /* lws_sul_schedule takes a delay from now in microseconds (4.1 semantics). */
    lws_sul_schedule(t->loop->ctx, 0, &t->sul, timer_fire, (lws_usec_t)delay_ms * 1000);
}

void gw_timer_stop(struct gw_timer *t)
{
    if (!t->armed)
        return;
    t->armed = false;
    lws_sul_cancel(&t->sul);
}

bool gw_timer_armed(const struct gw_timer *t)
{
    return t->armed;
}

void gw_timer_free(struct gw_timer *t)
{
    if (!t)
        return;
    gw_timer_stop(t);
    if (t->in_cb) {
        t->freed = true;
        return;
    }
    free(t);
}

/* --- Signals --- */

static void on_signalfd(void *arg, int fd, unsigned events)
{
    struct gw_loop *loop = arg;
    (void)events;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
        for (struct gw_sig *s = loop->sighandlers; s; s = s->next)
            if (s->signo == (int)si.ssi_signo)
                s->cb(s->arg, s->signo);
    }
}

int gw_loop_on_signal(struct gw_loop *loop, int signo, gw_signal_fn cb, void *arg)
{
    sigaddset(&loop->sigs, signo);
    if (sigprocmask(SIG_BLOCK, &loop->sigs, NULL) < 0)
        return -errno;
    int fd = signalfd(loop->sigfd, &loop->sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (loop->sigfd < 0) {
        loop->sigfd = fd;
        loop->sigwatch = gw_loop_watch(loop, fd, GW_LOOP_IN, on_signalfd, loop);
        if (!loop->sigwatch)
            return GW_EIO;
    }
    struct gw_sig *s = gw_malloc(sizeof *s);
    s->signo = signo;
    s->cb = cb;
    s->arg = arg;
    s->next = loop->sighandlers;
    loop->sighandlers = s;
    return 0;
}
