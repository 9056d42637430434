/*
 * Static membership (KIP-345) on real Kafka: a process killed with -9 and restarted
 * with the same group.instance.id takes its partitions back without waiting out the
 * session timeout.
 * - server_restart_static: a server in a child process under load from a ksf client
 *   (16 requests in flight, 60 s timeouts) is killed with -9 and restarted with the
 *   same id: every request is answered exactly once, and the first reply after the
 *   restart comes within 2 s of it.
 * - server_restart_dynamic: the same without an instance id, for comparison: every
 *   request is still answered; the gap (about the session timeout) is printed.
 * - client_restart_static: a client in a child process with an instance id makes a
 *   call and is killed with -9; a new process with the same id gets the same reply
 *   partition, in the same group generation (no rebalance), its first call answered
 *   within 2 s of its start. client_restart_static_leader: the same when the static
 *   client was the group's leader.
 * - fenced: two servers, then two clients, with one instance id: the older one stops
 *   with the sentence naming FENCED_INSTANCE_ID, the newer one serves on.
 * The children are this executable run again ("serve" / "call" as argv[1]); they die
 * with the test (PR_SET_PDEATHSIG). The mock has no static membership: on it every
 * case says "skipped: needs real Kafka". Groups get names unique to the run, since a
 * real broker keeps a killed static member's place until its session times out.
 * KSFT_STATIC_TRACE=1 makes the client children log everything with timestamps.
 */
#define _DEFAULT_SOURCE /* realpath(3) */
#include "broker.h"
#include "service.h"
#include "settings.h"

#include "suite.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <ksf/ksf.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PATTERN "static.echo"
#define IN_FLIGHT 16
#define REQUEST_TIMEOUT_MS 60000
#define MAX_REQ 50000
#define SESSION_MS "10000" /* the children's session timeout: restarts beat it */
#define HEARTBEAT_MS "1000"
#define RESTART_BOUND_MS 2000 /* the bound: answering again within 2 s */
#define LOAD_BEFORE_KILL_MS 3000

static char self_exe[PATH_MAX];

/* ---- the children ------------------------------------------------------------------ */

static ksf_err
echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    /* "pid" tells the first server's replies still on their way at the restart from
     * the restarted server's own. */
    *reply = json_pack("{s:O?, s:i, s:i}", "d", data, "p",
                       (int)ksf_ctx_reply_partition(ctx), "pid", (int)getpid());
    return *reply ? KSF_OK : KSF_ENOMEM;
}

static void
print_ready(ksf_server *srv, void *user)
{
    (void)srv;
    (void)user;
    printf("ready\n");
    fflush(stdout);
}

/* Die with the test process, so a failed assertion leaves no child behind. */
static void
die_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(1);
    }
}

static ksf_config *
child_config(const char *brokers, const char *group, const char *instance, ksf_log_fn log,
             void *log_user)
{
    ksf_config *cfg = NULL;
    ksf_errinfo ei = {0};
    if (ksf_config_new(&cfg) != KSF_OK ||
        ksf_config_set(cfg, "brokers", brokers, &ei) != KSF_OK ||
        ksf_config_set(cfg, "group.id", group, &ei) != KSF_OK ||
        ksf_config_set(cfg, "group.instance.id", strcmp(instance, "-") ? instance : "",
                       &ei) != KSF_OK ||
        ksf_config_set(cfg, "consumer.session.timeout.ms", SESSION_MS, &ei) != KSF_OK ||
        ksf_config_set(cfg, "consumer.heartbeat.interval.ms", HEARTBEAT_MS, &ei) !=
            KSF_OK) {
        fprintf(stderr, "child: configuration: %s\n", ei.text);
        exit(1);
    }
    if (getenv("KSFT_STATIC_DEBUG")) {
        ksf_config_set(cfg, "kafka.debug", getenv("KSFT_STATIC_DEBUG"), NULL);
    }
    ksf_config_set_log(cfg, log, log_user,
                       getenv("KSFT_STATIC_TRACE") ? KSF_LOG_DEBUG : KSF_LOG_INFO);
    return cfg;
}

/* argv: serve BROKERS GROUP INSTANCE|- PARENT_PID */
static int
child_serve(char **argv)
{
    die_with_parent((pid_t)atol(argv[5]));
    ksf_config *cfg = child_config(argv[2], argv[3], argv[4], ksf_log_stderr, NULL);
    ksf_config_set_log(cfg, ksf_log_stderr, NULL, KSF_LOG_WARNING);
    ksf_server *srv = NULL;
    ksf_errinfo ei = {0};
    if (ksf_server_new(&srv, cfg, &ei) != KSF_OK ||
        ksf_server_on_message(srv, PATTERN, echo, NULL, &ei) != KSF_OK) {
        fprintf(stderr, "child server: %s\n", ei.text);
        return 1;
    }
    ksf_config_destroy(cfg);
    ksf_server_set_ready_cb(srv, print_ready, NULL);
    ksf_err e = ksf_server_run(srv, &ei); /* until killed */
    fprintf(stderr, "child server: run returned %s: %s\n", ksf_strerror(e), ei.text);
    ksf_server_destroy(srv);
    return 1;
}

/* The membership logs "... in generation N"; keep the last N. */
static void
grab_generation(void *user, ksf_log_level level, const char *component,
                const char *message)
{
    const char *g = strstr(message, " in generation ");
    if (g && !strcmp(component, "group")) {
        *(int *)user = atoi(g + strlen(" in generation "));
        /* Also for the parent, which waits for a holding child's rebalances. */
        printf("gen=%d leader=%d\n", *(int *)user, strstr(g, "(leader)") != NULL);
        fflush(stdout);
    }
    if (level <= KSF_LOG_WARNING || getenv("KSFT_STATIC_TRACE")) {
        fprintf(stderr, "child client %lld: %s: %s\n", (long long)ksft_now_ms(),
                component, message);
    }
}

static int64_t
now_ms(void)
{
    return ksft_now_ms();
}

/* argv: call BROKERS GROUP INSTANCE hold|exit PARENT_PID. Prints "partition=P
 * generation=G done_ms=T" (T on CLOCK_MONOTONIC, which parent and child share). */
static int
child_call(char **argv)
{
    die_with_parent((pid_t)atol(argv[6]));
    int generation = -1;
    ksf_config *cfg =
        child_config(argv[2], argv[3], argv[4], grab_generation, &generation);
    ksf_client *cli = NULL;
    ksf_errinfo ei = {0};
    json_t *req = json_pack("{s:s}", "who", argv[4]), *reply = NULL;
    if (getenv("KSFT_STATIC_TRACE")) {
        fprintf(stderr, "child client %lld: start\n", (long long)ksft_now_ms());
    }
    ksf_err e = ksf_client_new(&cli, cfg, &ei);
    if (e == KSF_OK) {
        e = ksf_client_call(cli, PATTERN, req, 30000, &reply, &ei);
    }
    int64_t done = now_ms();
    ksf_config_destroy(cfg);
    json_decref(req);
    if (e != KSF_OK) {
        fprintf(stderr, "child client: %s: %s\n", ksf_strerror(e), ei.text);
        return 1;
    }
    json_int_t p = json_integer_value(json_object_get(reply, "p"));
    json_decref(reply);
    printf("partition=%d generation=%d done_ms=%lld\n", (int)p, generation,
           (long long)done);
    fflush(stdout);
    if (!strcmp(argv[5], "hold")) {
        for (;;) {
            pause(); /* until the test kills us with -9 */
        }
    }
    ksf_client_destroy(cli); /* a static member does not leave the group */
    return 0;
}

/* ---- the parent's side of a child -------------------------------------------------- */

typedef struct child {
    pid_t pid;
    int out;         /* its stdout */
    char buf[1024];  /* what it printed and expect_line has not consumed */
    char line[1024]; /* the line expect_line returned last */
    size_t len;
    int64_t started_ms;
} child;

static void
spawn(child *c, char *const args[])
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    memset(c, 0, sizeof *c);
    c->started_ms = now_ms();
    int rc = posix_spawn(&c->pid, self_exe, &fa, NULL, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    ck_assert_msg(rc == 0, "spawning %s: %s", self_exe, strerror(rc));
    c->out = fds[0];
}

/* Wait up to @p timeout_ms for a whole line starting with @p prefix, consuming the
 * lines before it; returns it (in c->line) or fails the test. */
static const char *
expect_line(child *c, const char *prefix, int timeout_ms)
{
    int64_t until = now_ms() + ksft_scaled_ms(timeout_ms);
    for (;;) {
        char *nl;
        while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
            size_t n = (size_t)(nl - c->buf);
            memcpy(c->line, c->buf, n);
            c->line[n] = '\0';
            c->len -= n + 1;
            memmove(c->buf, nl + 1, c->len);
            if (!strncmp(c->line, prefix, strlen(prefix))) {
                return c->line;
            }
        }
        int64_t left = until - now_ms();
        ck_assert_msg(left > 0,
                      "child %d printed no \"%s\" line within %d ms (got \"%.*s\")",
                      (int)c->pid, prefix, timeout_ms, (int)c->len, c->buf);
        struct pollfd p = {c->out, POLLIN, 0};
        if (poll(&p, 1, (int)left) > 0) {
            ssize_t n = read(c->out, c->buf + c->len, sizeof c->buf - 1 - c->len);
            ck_assert_msg(n > 0, "child %d exited before printing \"%s\"", (int)c->pid,
                          prefix);
            c->len += (size_t)n;
        }
    }
}

static void
kill9(child *c)
{
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
        close(c->out);
        c->pid = 0;
    }
}

/* Group and instance names unique to this run. */
static void
unique(char *out, size_t size, const char *what)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, size, "static-%s-%d-%lld", what, (int)getpid(),
             (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* ---- load: IN_FLIGHT requests outstanding at all times ------------------------------
 */

typedef struct load {
    ksf_client *cli;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t m; /* guards in_flight */
    pthread_cond_t cv;
    int in_flight;
    atomic_uint sent, ok, failed, wrong, extra;
    atomic_uchar calls[MAX_REQ];
    atomic_int restarted_pid; /* the restarted server; 0 before */
    atomic_llong first_after; /* its first reply received */
    char failure[512];        /* the first failure's text */
} load;

typedef struct req_ctx {
    load *l;
    unsigned i;
} req_ctx;

static req_ctx req_ctxs[MAX_REQ];

static void
on_reply(const ksf_reply *r, void *user)
{
    req_ctx *rc = user;
    load *l = rc->l;
    if (atomic_fetch_add(&l->calls[rc->i], 1) != 0) {
        atomic_fetch_add(&l->extra, 1);
    }
    if (r->err == KSF_OK) {
        json_t *d = json_object_get(r->value, "d");
        if (json_integer_value(json_object_get(d, "i")) != (json_int_t)rc->i) {
            atomic_fetch_add(&l->wrong, 1);
        }
        atomic_fetch_add(&l->ok, 1);
        int64_t t = now_ms(), zero = 0;
        int pid = (int)json_integer_value(json_object_get(r->value, "pid"));
        if (pid && pid == atomic_load(&l->restarted_pid)) {
            atomic_compare_exchange_strong(&l->first_after, &zero, t);
        }
    } else {
        pthread_mutex_lock(&l->m);
        if (!l->failure[0]) {
            snprintf(l->failure, sizeof l->failure, "request %u: %s: %.300s", rc->i,
                     ksf_strerror(r->err), r->text);
        }
        pthread_mutex_unlock(&l->m);
        atomic_fetch_add(&l->failed, 1);
    }
    pthread_mutex_lock(&l->m);
    l->in_flight--;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->m);
}

static void *
load_main(void *arg)
{
    load *l = arg;
    for (unsigned i = 0; i < MAX_REQ && !atomic_load(&l->stop); i++) {
        pthread_mutex_lock(&l->m);
        while (l->in_flight >= IN_FLIGHT && !atomic_load(&l->stop)) {
            pthread_cond_wait(&l->cv, &l->m);
        }
        l->in_flight++;
        pthread_mutex_unlock(&l->m);
        if (atomic_load(&l->stop)) {
            pthread_mutex_lock(&l->m);
            l->in_flight--;
            pthread_mutex_unlock(&l->m);
            break;
        }
        req_ctxs[i] = (req_ctx){l, i};
        json_t *v = json_pack("{s:i}", "i", (int)i);
        ksf_send_opts o = {.timeout_ms = REQUEST_TIMEOUT_MS};
        ksf_errinfo ei = {0};
        ksf_err e = ksf_client_send(l->cli, PATTERN, v, &o, on_reply, &req_ctxs[i], &ei);
        json_decref(v);
        if (e != KSF_OK) {
            pthread_mutex_lock(&l->m);
            l->in_flight--;
            snprintf(l->failure, sizeof l->failure, "send %u: %s: %.300s", i,
                     ksf_strerror(e), ei.text);
            pthread_mutex_unlock(&l->m);
            atomic_fetch_add(&l->failed, 1);
            break;
        }
        atomic_fetch_add(&l->sent, 1);
    }
    return NULL;
}

static void
load_stop(load *l)
{
    atomic_store(&l->stop, true);
    pthread_mutex_lock(&l->m);
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->m);
    pthread_join(l->thread, NULL);
}

/* Wait until every sent request had its callback (bounded by the request timeout). */
static void
load_drain(load *l)
{
    int64_t until = now_ms() + REQUEST_TIMEOUT_MS + 10000;
    pthread_mutex_lock(&l->m);
    while (l->in_flight > 0 && now_ms() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&l->cv, &l->m, &ts);
    }
    int left = l->in_flight;
    pthread_mutex_unlock(&l->m);
    ck_assert_msg(left == 0, "%d requests never got a callback", left);
}

static void
wait_until_ms(atomic_llong *v, int timeout_ms)
{
    int64_t until = now_ms() + timeout_ms;
    while (!atomic_load(v) && now_ms() < until) {
        ksft_sleep_ms(5);
    }
}

/*
 * Kill the server under load and restart it with the same instance id (@p instance) or
 * as a dynamic member ("-"). Returns the gap between the restart and the first reply.
 */
static int64_t
server_restart(const char *instance)
{
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, PATTERN, 4);
    char group[96], ppid[16];
    unique(group, sizeof group, "srv");
    snprintf(ppid, sizeof ppid, "%d", (int)getpid());
    char a0[] = "test_static", a1[] = "serve", inst[96];
    snprintf(inst, sizeof inst, "%s", instance);
    char *args[] = {a0, a1, (char *)ksft_broker_address(b), group, inst, ppid, NULL};
    child first, second;
    spawn(&first, args);
    expect_line(&first, "ready", 60000);

    ksf_config *cfg = ksft_config(b);
    ksft_config_set_all(cfg, (const char *const[][2]){{"group.id", group}}, 1);
    static load l; /* the per-request flags are too big for the stack */
    memset(&l, 0, sizeof l);
    pthread_mutex_init(&l.m, NULL);
    pthread_cond_init(&l.cv, NULL);
    l.cli = ksft_client(cfg);
    ksf_config_destroy(cfg);
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_client_subscribe_to_response_of(l.cli, PATTERN, &ei) == KSF_OK &&
                      ksf_client_connect(l.cli, 60000, &ei) == KSF_OK,
                  "%s", ei.text);
    ck_assert_int_eq(pthread_create(&l.thread, NULL, load_main, &l), 0);

    /* Long enough under load for the server to have committed offsets (about every
     * second), so the restart resumes from them. */
    int64_t load_start = now_ms();
    while ((now_ms() - load_start < LOAD_BEFORE_KILL_MS || atomic_load(&l.ok) < 200) &&
           now_ms() - load_start < 30000 && !atomic_load(&l.failed)) {
        ksft_sleep_ms(20);
    }
    ck_assert_msg(atomic_load(&l.ok) >= 200, "only %u replies before the kill (%s)",
                  atomic_load(&l.ok), l.failure);
    kill9(&first);
    unsigned at_kill = atomic_load(&l.ok), sent_at_kill = atomic_load(&l.sent);
    spawn(&second, args);
    int64_t restart = second.started_ms;
    atomic_store(&l.restarted_pid, (int)second.pid);
    wait_until_ms(&l.first_after, REQUEST_TIMEOUT_MS);
    int64_t first_after = atomic_load(&l.first_after);
    ck_assert_msg(first_after, "no reply within %d ms of the restart (%s)",
                  REQUEST_TIMEOUT_MS, l.failure);
    int64_t gap = first_after - restart;
    expect_line(&second, "ready", 60000);
    int64_t keep_until = now_ms() + 1000; /* and it keeps answering */
    while (now_ms() < keep_until) {
        ksft_sleep_ms(20);
    }
    load_stop(&l);
    load_drain(&l);

    unsigned sent = atomic_load(&l.sent);
    ksf_client_stats st;
    ksf_client_get_stats(l.cli, &st);
    printf("server restart (%s): %u requests (%u answered and %u sent when killed, %d "
           "in flight), first reply %lld ms after the restart; lost %u, duplicates "
           "delivered %u (replies dropped as duplicates: %llu), wrong values %u\n",
           strcmp(instance, "-") ? "static, group.instance.id" : "dynamic", sent, at_kill,
           sent_at_kill, IN_FLIGHT, (long long)gap, sent - atomic_load(&l.ok),
           atomic_load(&l.extra), (unsigned long long)st.duplicate_replies,
           atomic_load(&l.wrong));
    fflush(stdout);
    ck_assert_msg(atomic_load(&l.failed) == 0, "%u failed: %s", atomic_load(&l.failed),
                  l.failure);
    ck_assert_uint_gt(sent, at_kill + IN_FLIGHT); /* requests spanned the restart */
    ck_assert_uint_eq(atomic_load(&l.ok), sent);  /* none lost */
    ck_assert_uint_eq(atomic_load(&l.extra), 0);  /* none delivered twice */
    ck_assert_uint_eq(atomic_load(&l.wrong), 0);
    for (unsigned i = 0; i < sent; i++) {
        ck_assert_uint_eq(atomic_load(&l.calls[i]), 1);
    }
    ck_assert_uint_eq(st.timeouts, 0);
    ck_assert_uint_eq(st.replies, sent);
    ksf_client_destroy(l.cli);
    kill9(&second);
    ksft_broker_stop(b);
    return gap;
}

KSFT_TEST(test_static_server_restart_static, 150)
{
    KSFT_NEEDS_REAL_KAFKA("static membership");
    char instance[96];
    unique(instance, sizeof instance, "hero");
    int64_t gap = server_restart(instance);
    ck_assert_msg(gap < RESTART_BOUND_MS,
                  "the restarted static server answered %lld ms after its restart; "
                  "expected < %d ms",
                  (long long)gap, RESTART_BOUND_MS);
}
END_TEST

KSFT_TEST(test_static_server_restart_dynamic, 150)
{
    KSFT_NEEDS_REAL_KAFKA("static membership");
    int64_t gap = server_restart("-");
    printf("dynamic server: %lld ms from restart to first reply (session timeout %s "
           "ms)\n",
           (long long)gap, SESSION_MS);
}
END_TEST

/* ---- the client ----------------------------------------------------------------------
 */

typedef struct call_line {
    int partition, generation;
    long long done_ms;
} call_line;

static call_line
parse_call(child *c)
{
    call_line r = {-1, -1, 0};
    const char *line = expect_line(c, "partition=", 60000);
    ck_assert_int_eq(sscanf(line, "partition=%d generation=%d done_ms=%lld", &r.partition,
                            &r.generation, &r.done_ms),
                     3);
    return r;
}

static int
reply_partition(ksf_client *cli)
{
    json_t *req = json_pack("{s:s}", "who", "survivor"), *reply = NULL;
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_client_call(cli, PATTERN, req, 30000, &reply, &ei) == KSF_OK, "%s",
                  ei.text);
    int p = (int)json_integer_value(json_object_get(reply, "p"));
    json_decref(req);
    json_decref(reply);
    return p;
}

static void *
serve_main(void *arg)
{
    ksf_server_run(arg, NULL);
    return NULL;
}

static void
count_ready(ksf_server *srv, void *user)
{
    (void)srv;
    atomic_store((atomic_int *)user, 1);
}

/* A static client killed with -9 and restarted; @p static_leads: it joins before the
 * dynamic survivor and is the group's leader. */
static void
client_restart(bool static_leads)
{
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, PATTERN, 4);
    ksft_broker_create_topic(b, PATTERN ".reply", 4);
    char group[96], instance[96], ppid[16];
    unique(group, sizeof group, "cli");
    unique(instance, sizeof instance, "caller");
    snprintf(ppid, sizeof ppid, "%d", (int)getpid());

    ksf_config *cfg = ksft_config(b);
    ksft_config_set_all(cfg, (const char *const[][2]){{"group.id", group}}, 1);
    ksf_server *srv = ksft_server(cfg);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_server_on_message(srv, PATTERN, echo, NULL, &ei), KSF_OK);
    atomic_int ready = 0;
    ksf_server_set_ready_cb(srv, count_ready, &ready);
    pthread_t st;
    ck_assert_int_eq(pthread_create(&st, NULL, serve_main, srv), 0);
    ck_assert_int_eq(ksft_wait_atomic(&ready, 1, 60000), 1);

    /* A dynamic survivor holds one reply partition, so the static one is not simply
     * the group's only member. */
    char a0[] = "test_static", a1[] = "call", hold[] = "hold", leave[] = "exit";
    char *args[] = {a0,   a1,  (char *)ksft_broker_address(b), group, instance, hold,
                    ppid, NULL};
    child a, bee;
    ksf_client *survivor = NULL;
    int survivor_p = -1;
    call_line first;
    if (static_leads) {
        spawn(&a, args);
        first = parse_call(&a);
        survivor = ksft_client(cfg);
        survivor_p = reply_partition(survivor);
        /* The survivor's join made a new generation, led by the static member. */
        char want[32];
        snprintf(want, sizeof want, "gen=%d leader=1", first.generation + 1);
        expect_line(&a, want, 30000);
        first.generation++;
    } else {
        survivor = ksft_client(cfg);
        survivor_p = reply_partition(survivor);
        spawn(&a, args);
        first = parse_call(&a);
    }
    kill9(&a);
    args[5] = leave;
    spawn(&bee, args);
    call_line second = parse_call(&bee);
    long long took = second.done_ms - bee.started_ms;
    int survivor_after = reply_partition(survivor);
    printf("client restart (static%s): first process partition %d generation %d; "
           "restarted process partition %d generation %d, first call answered %lld ms "
           "after its start; survivor partition %d -> %d\n",
           static_leads ? ", leader" : "", first.partition, first.generation,
           second.partition, second.generation, took, survivor_p, survivor_after);
    fflush(stdout);
    ck_assert_int_ne(first.partition, survivor_p);
    ck_assert_int_eq(second.partition, first.partition);
    ck_assert_int_ge(first.generation, 1);
    ck_assert_int_eq(second.generation, first.generation); /* no rebalance */
    ck_assert_int_eq(survivor_after, survivor_p);
    ck_assert_msg(took < RESTART_BOUND_MS,
                  "the restarted static client's first call took %lld ms; expected < %d",
                  took, RESTART_BOUND_MS);
    int status = -1;
    ck_assert_int_eq(waitpid(bee.pid, &status, 0), bee.pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(bee.out);

    ksf_client_destroy(survivor);
    ksf_server_stop(srv);
    pthread_join(st, NULL);
    ksf_server_destroy(srv);
    ksf_config_destroy(cfg);
    ksft_broker_stop(b);
}

KSFT_TEST(test_static_client_restart, 120)
{
    KSFT_NEEDS_REAL_KAFKA("static membership");
    client_restart(false);
}
END_TEST

KSFT_TEST(test_static_client_restart_leader, 120)
{
    KSFT_NEEDS_REAL_KAFKA("static membership");
    client_restart(true);
}
END_TEST

/* ---- fencing: two members with one id -------------------------------------------- */

typedef struct run_result {
    ksf_server *srv;
    ksf_err err;
    ksf_errinfo ei;
    atomic_int done;
} run_result;

static void *
run_main(void *arg)
{
    run_result *r = arg;
    r->err = ksf_server_run(r->srv, &r->ei);
    atomic_store(&r->done, 1);
    return NULL;
}

/* Two servers with one id: the newer takes the place, the older stops with the
 * sentence naming FENCED_INSTANCE_ID. Then two clients likewise. */
KSFT_TEST(test_static_fenced, 150)
{
    KSFT_NEEDS_REAL_KAFKA("static membership");
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, PATTERN, 4);
    char group[96], instance[96];
    unique(group, sizeof group, "fence");
    unique(instance, sizeof instance, "twin");
    ksf_config *cfg = ksft_config(b);
    ksft_config_set_all(
        cfg,
        (const char *const[][2]){{"group.id", group}, {"group.instance.id", instance}},
        2);
    ksf_config_set_log(cfg, NULL, NULL, KSF_LOG_ERROR); /* the fencing is expected */

    run_result older = {0}, newer = {0};
    atomic_int ready_old = 0, ready_new = 0;
    pthread_t t_old, t_new;
    ksf_errinfo ei = {0};
    older.srv = ksft_server(cfg);
    ck_assert_int_eq(ksf_server_on_message(older.srv, PATTERN, echo, NULL, &ei), KSF_OK);
    ksf_server_set_ready_cb(older.srv, count_ready, &ready_old);
    ck_assert_int_eq(pthread_create(&t_old, NULL, run_main, &older), 0);
    ck_assert_int_eq(ksft_wait_atomic(&ready_old, 1, 60000), 1);
    newer.srv = ksft_server(cfg);
    ck_assert_int_eq(ksf_server_on_message(newer.srv, PATTERN, echo, NULL, &ei), KSF_OK);
    ksf_server_set_ready_cb(newer.srv, count_ready, &ready_new);
    ck_assert_int_eq(pthread_create(&t_new, NULL, run_main, &newer), 0);
    ck_assert_int_eq(ksft_wait_atomic(&older.done, 1, 30000), 1);
    char want[512];
    snprintf(want, sizeof want,
             "group %s-server: fenced (FENCED_INSTANCE_ID): another server took over "
             "group.instance.id \"%s\"; ids are unique per group (two servers must not "
             "share one, in one process or two): give each instance its own id (",
             group, instance);
    printf("older server: %s: %s\n", ksf_strerror(older.err), older.ei.text);
    ck_assert_int_eq(older.err, KSF_EKAFKA);
    ck_assert_int_eq(older.ei.kafka_err, 82);
    ck_assert_msg(!strncmp(older.ei.text, want, strlen(want)), "got: %s", older.ei.text);
    ck_assert_int_eq(atomic_load(&newer.done), 0); /* the newer one serves on */
    pthread_join(t_old, NULL);
    ksf_server_destroy(older.srv);

    /* Clients: the newer one answers, the older one's sends then fail. */
    ksf_client *c_old = ksft_client(cfg), *c_new;
    int p_old = reply_partition(c_old);
    c_new = ksft_client(cfg);
    int p_new = reply_partition(c_new);
    ck_assert_int_eq(p_new, p_old); /* it took the place, partition included */
    ksf_err e = KSF_OK;
    int64_t until = now_ms() + ksft_scaled_ms(15000);
    json_t *req = json_pack("{s:s}", "who", "older"), *reply = NULL;
    while (e == KSF_OK && now_ms() < until) {
        e = ksf_client_call(c_old, PATTERN, req, 5000, &reply, &ei);
        json_decref(reply);
        reply = NULL;
        if (e == KSF_OK) {
            ksft_sleep_ms(100); /* the fencing arrives with its next heartbeat */
        }
    }
    json_decref(req);
    printf("older client: %s: %s\n", ksf_strerror(e), ei.text);
    ck_assert_int_eq(e, KSF_EKAFKA);
    snprintf(
        want, sizeof want,
        "%s: group %s-client: Heartbeat answered FENCED_INSTANCE_ID (82): another member "
        "took over group.instance.id \"%s\"; ids are unique per group (two clients "
        "must not share one, in one process or two): this member stops; give each "
        "instance its own id",
        PATTERN, group, instance); /* sends never block: the error came to the call's
                                    * callback, which names the pattern */
    ck_assert_str_eq(ei.text, want);
    ck_assert_int_eq(reply_partition(c_new), p_new);
    ksf_client_destroy(c_old);
    ksf_client_destroy(c_new);

    ksf_server_stop(newer.srv);
    pthread_join(t_new, NULL);
    ck_assert_int_eq(newer.err, KSF_OK);
    ksf_server_destroy(newer.srv);
    ksf_config_destroy(cfg);
    ksft_broker_stop(b);
}
END_TEST

int
main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "serve")) {
        return child_serve(argv);
    }
    if (argc == 7 && !strcmp(argv[1], "call")) {
        return child_call(argv);
    }
    /* argv[0], not /proc/self/exe: under valgrind that names valgrind's own tool. */
    if (!realpath(argv[0], self_exe)) {
        perror(argv[0]);
        return EXIT_FAILURE;
    }
    return ksft_main("static");
}
