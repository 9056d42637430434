/*
 * A new user's first hour (issue 16): what a user runs into before reading the fine
 * print. Deferred handlers that do not hold the worker pool, a finish that may come
 * before the handler returned, sends that never block their caller, failures that
 * are reported at once and say what is wrong, and the defaults behind them.
 */
#include "base/config.h"
#include "fixture.h"
#include "kafka/kafka.h"
#include "raw_kafka.h"
#include "server/server.h"
#include "service.h"

#include "proc.h"
#include "suite.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAIT_MS 20000

/* ---- deferred handlers: parked contexts, their own limit --------------------------- */

#define PARK_MAX 64
static pthread_mutex_t park_lock = PTHREAD_MUTEX_INITIALIZER;
static ksf_ctx *parked[PARK_MAX];
static atomic_int nparked;

static ksf_err
h_park(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    (void)data;
    ksf_err e = ksf_ctx_defer(ctx);
    pthread_mutex_lock(&park_lock);
    int i = atomic_load(&nparked);
    ck_assert_int_lt(i, PARK_MAX);
    parked[i] = ctx;
    atomic_store(&nparked, i + 1);
    pthread_mutex_unlock(&park_lock);
    return e;
}

/* Finish every parked context (echoing its request) and forget them. */
static int
finish_parked(void)
{
    pthread_mutex_lock(&park_lock);
    int n = atomic_load(&nparked);
    for (int i = 0; i < n; i++) {
        size_t len;
        const void *v = ksf_ctx_value(parked[i], &len);
        json_t *echo = json_loadb(v, len, 0, NULL);
        ck_assert_int_eq(ksf_ctx_finish(parked[i], KSF_OK, echo), KSF_OK);
    }
    atomic_store(&nparked, 0);
    pthread_mutex_unlock(&park_lock);
    return n;
}

/* The world of the deferral cases: one deferring pattern, default workers (4) and
 * concurrency, and server.deferred.max as given (NULL: the default). */
static void
park_world(ksft_world *w, const char *deferred_max)
{
    static const char *const topics[] = {"u.park:2", "u.park.reply", NULL};
    static const ksft_handler park[] = {{"u.park", h_park}, {NULL}};
    const char *const kv[][2] = {{"server.deferred.max", deferred_max}};
    ksft_world_open(w, &(ksft_world_spec){.topics = topics,
                                          .settings = deferred_max ? kv : NULL,
                                          .nsettings = 1,
                                          .handlers = park});
}

/* 40 requests, 4 workers: all 40 are deferred at once (they hold no worker and no
 * concurrency slot); before, 4 were and the rest waited for a finish. */
KSFT_TEST(test_usability_deferred_not_bounded_by_workers, 60)
{
    ksft_world w;
    park_world(&w, NULL);
    ksft_tally t;
    ksft_tally_init(&t, 40);
    for (size_t i = 0; i < 40; i++) {
        ck_assert_int_eq(ksft_tally_send(&t, w.cli, "u.park", i, 30000, 0), KSF_OK);
    }
    ck_assert_int_eq(ksft_wait_atomic(&nparked, 40, WAIT_MS), 40);
    ck_assert_int_eq(finish_parked(), 40);
    ck_assert_uint_eq(ksft_tally_wait(&t, 40, WAIT_MS), 40);
    ck_assert_uint_eq(atomic_load(&t.ok), 40);
    ck_assert_uint_eq(atomic_load(&t.wrong_value), 0);
    ksft_tally_free(&t);
    ksft_world_close(&w);
}
END_TEST

/* server.deferred.max bounds them: at 8 parked no new handler starts (the rest are
 * throttled) until some finish. */
KSFT_TEST(test_usability_deferred_max, 60)
{
    ksft_world w;
    park_world(&w, "8");
    ksft_assert_config_refuses("server.deferred.max", "0", KSF_EINVAL,
                               "server.deferred.max \"0\": expected an integer from 1 to "
                               "1000000");
    ksft_tally t;
    ksft_tally_init(&t, 20);
    for (size_t i = 0; i < 20; i++) {
        ck_assert_int_eq(ksft_tally_send(&t, w.cli, "u.park", i, 30000, 0), KSF_OK);
    }
    ck_assert_int_ge(ksft_wait_atomic(&nparked, 8, WAIT_MS), 8);
    /* Then nothing new starts (counted as throttled); handlers that were already
     * running when the eighth parked may still defer: at most workers - 1 = 3. */
    KSFT_WAIT_SERVER_STAT(w.srv, throttled, 1, WAIT_MS);
    ck_assert_int_le(atomic_load(&nparked), 11);
    int done = finish_parked();
    while (done < 20) {
        ck_assert_int_gt(ksft_wait_atomic(&nparked, 1, WAIT_MS), 0);
        ck_assert_int_le(atomic_load(&nparked), 11);
        done += finish_parked();
    }
    ck_assert_uint_eq(ksft_tally_wait(&t, 20, WAIT_MS), 20);
    ck_assert_uint_eq(atomic_load(&t.ok), 20);
    ksft_tally_free(&t);
    ksft_world_close(&w);
}
END_TEST

/* ---- a finish before the handler returned --------------------------------------- */

static atomic_int early_rc = -1, second_rc = -1;

static void *
finish_now(void *ctx)
{
    atomic_store(&early_rc, ksf_ctx_finish(ctx, KSF_OK, json_string("early")));
    return NULL;
}

/* The order docs/server.md's example invites: hand the work to a thread, which is
 * done before the handler returned ksf_ctx_defer (here: certainly, it is joined). */
static ksf_err
h_early(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, finish_now, ctx), 0);
    pthread_join(t, NULL);
    ksf_err e = ksf_ctx_defer(ctx);
    atomic_store(&second_rc, ksf_ctx_finish(ctx, KSF_OK, json_string("twice")));
    return e;
}

KSFT_TEST(test_usability_finish_before_return, 60)
{
    ksft_world w;
    ksft_world_open(
        &w, &(ksft_world_spec){
                .topics = (const char *const[]){"u.early", "u.early.reply", NULL},
                .handlers = (const ksft_handler[]){{"u.early", h_early}, {NULL}}});
    json_t *reply = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_call(w.cli, "u.early", NULL, WAIT_MS, &reply, &ei),
                     KSF_OK);
    ck_assert_str_eq(json_string_value(reply), "early");
    json_decref(reply);
    ck_assert_int_eq(atomic_load(&early_rc), KSF_OK);
    ck_assert_int_eq(atomic_load(&second_rc), KSF_ESTATE);
    ksf_server_stats st = KSFT_WAIT_SERVER_STAT(w.srv, replies, 1, WAIT_MS);
    ck_assert_uint_eq(st.errors, 0);
    ksft_world_close(&w);
}
END_TEST

/* ---- sends never block; unreachable brokers and missing services are named ------- */

/* A port on 127.0.0.1 where nothing listens (bound, then closed). */
static int
dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static ksf_config *
dead_config(char *addr, size_t size)
{
    snprintf(addr, size, "127.0.0.1:%d", dead_port());
    const char *const kv[][2] = {{"brokers", addr},
                                 {"broker.unreachable.timeout.ms", "1500"}};
    return ksft_config_from(kv, KSFT_NKV(kv));
}

/* The first send of a fresh client returns at once (it used to wait ~3 s for the
 * reply-group join on the calling thread), and its reply still comes. */
KSFT_TEST(test_usability_send_never_blocks, 60)
{
    ksft_world w;
    ksft_world_open(&w,
                    &(ksft_world_spec){
                        .topics = (const char *const[]){"u.echo", "u.echo.reply", NULL},
                        .handlers = (const ksft_handler[]){{"u.echo"}, {NULL}},
                        .lazy_client = true});
    ksft_outcome o = {0};
    json_t *v = json_pack("{s:i}", "n", 7);
    int64_t t0 = ksft_now_ms();
    ck_assert_int_eq(ksf_client_send(w.cli, "u.echo", v, NULL, ksft_outcome_cb, &o, NULL),
                     KSF_OK);
    int64_t took = ksft_now_ms() - t0;
    ck_assert_msg(took < 500, "the first send blocked its caller for %lld ms",
                  (long long)took);
    /* flush covers the requests the sender thread has not produced yet. */
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_flush(w.cli, WAIT_MS, &ei), KSF_OK);
    ksf_client_stats st;
    ksf_client_get_stats(w.cli, &st);
    ck_assert_uint_eq(st.sent, 1);
    ksft_outcome_wait(&o, WAIT_MS);
    ck_assert_int_eq(o.err, KSF_OK);
    ck_assert(json_equal(o.value, v));
    ksft_outcome_reset(&o);
    json_decref(v);
    ksf_client_get_stats(w.cli, &st);
    ck_assert_uint_eq(st.sent, 1);
    ck_assert_uint_eq(st.replies, 1);
    ksft_world_close(&w);
}
END_TEST

/* No broker: send returns at once and the callback says so within
 * broker.unreachable.timeout.ms, naming the address; connect too. */
KSFT_TEST(test_usability_client_unreachable, 60)
{
    char addr[64], want[256];
    ksf_config *cfg = dead_config(addr, sizeof addr);
    ksf_config *defaults = NULL;
    ck_assert_int_eq(ksf_config_new(&defaults), KSF_OK);
    ksft_assert_config_get(defaults, "broker.unreachable.timeout.ms", "5000");
    ksf_config_destroy(defaults);
    snprintf(want, sizeof want,
             "no broker of \"%s\" answered within 1500 ms (%s refused the connection "
             "(nothing listens there))",
             addr, addr);

    ksf_client *cli = ksft_client(cfg);
    ksft_outcome o = {0};
    int64_t t0 = ksft_now_ms();
    ck_assert_int_eq(ksf_client_send(cli, "u.any", NULL, NULL, ksft_outcome_cb, &o, NULL),
                     KSF_OK);
    ck_assert_int_lt(ksft_now_ms() - t0, 500);
    ksft_outcome_wait(&o, 10000);
    ck_assert_int_eq(o.err, KSF_EKAFKA);
    ck_assert_msg(strstr(o.text, want), "callback text: %s", o.text);
    ksft_outcome_reset(&o);
    ck_assert_int_lt(o.at_ms - t0, ksft_scaled_ms(4000));

    ksf_errinfo ei = {0};
    t0 = ksft_now_ms();
    ck_assert_int_eq(ksf_client_connect(cli, 30000, &ei), KSF_EKAFKA);
    ck_assert_int_lt(ksft_now_ms() - t0, ksft_scaled_ms(4000));
    ck_assert_msg(strstr(ei.text, want), "connect: %s", ei.text);
    ksf_client_destroy(cli);
    ksf_config_destroy(cfg);
}
END_TEST

/* A server given a dead broker returns from run with the address, in seconds. */
KSFT_TEST(test_usability_server_unreachable, 60)
{
    char addr[64], want[256];
    ksf_config *cfg = dead_config(addr, sizeof addr);
    snprintf(want, sizeof want, "no broker of \"%s\" answered within 1500 ms", addr);
    ksf_server *srv = ksft_server(cfg);
    ck_assert_int_eq(ksf_server_on_message(srv, "u.any", ksft_echo, NULL, NULL), KSF_OK);
    ksf_errinfo ei = {0};
    int64_t t0 = ksft_now_ms();
    ck_assert_int_eq(ksf_server_run(srv, &ei), KSF_EKAFKA);
    ck_assert_int_lt(ksft_now_ms() - t0, ksft_scaled_ms(5000));
    ck_assert_msg(strstr(ei.text, want), "run: %s", ei.text);
    ksf_server_destroy(srv);
    ksf_config_destroy(cfg);
}
END_TEST

/* A request to a pattern whose topic does not exist times out saying that no service
 * consumes it (it used to say only "no reply before the request's deadline"). */
KSFT_TEST(test_usability_nobody_consumes, 60)
{
    ksft_world w;
    ksft_world_open(&w, &(ksft_world_spec){.lazy_client = true});
    ksft_outcome o = {0};
    ksf_send_opts so = {.timeout_ms = 8000};
    ck_assert_int_eq(
        ksf_client_send(w.cli, "u.nobody", NULL, &so, ksft_outcome_cb, &o, NULL), KSF_OK);
    ksft_outcome_wait(&o, WAIT_MS);
    ck_assert_int_eq(o.err, KSF_ETIMEDOUT);
    ck_assert_str_eq(o.text, "no reply before the request's deadline: no service "
                             "consumes u.nobody (the topic did not exist when this "
                             "client first sent to it; start a service with a handler "
                             "for u.nobody)");
    ksft_outcome_reset(&o);
    KSFT_ASSERT_CLIENT_STATS(w.cli, .sent = 1, .timeouts = 1);
    ksft_world_close(&w);
}
END_TEST

/* ---- the session timeout and the heartbeat go together --------------------------- */

KSFT_TEST(test_usability_session_alone, 30)
{
    const char *const kv[][2] = {{"brokers", "127.0.0.1:9"},
                                 {"consumer.session.timeout.ms", "6000"}};
    ksf_config *cfg = ksft_config_from(kv, KSFT_NKV(kv));
    /* The reply group took kafkajs's 3000 ms heartbeat and refused the pair. */
    ksf_client *cli = NULL;
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_client_new(&cli, cfg, &ei) == KSF_OK, "%s", ei.text);
    ksf_client_destroy(cli);
    /* The server's consumer gets a third of the session too. */
    rd_kafka_conf_t *conf = NULL;
    ck_assert_int_eq(ksfi_kafka_conf(cfg, KSF_KAFKA_CONSUMER, "c", "g", &conf, &ei),
                     KSF_OK);
    char v[32];
    size_t n = sizeof v;
    ck_assert_int_eq(rd_kafka_conf_get(conf, "heartbeat.interval.ms", v, &n),
                     RD_KAFKA_CONF_OK);
    ck_assert_str_eq(v, "2000");
    rd_kafka_conf_destroy(conf);
    /* Set explicitly, the heartbeat is the user's. */
    const char *const hb[][2] = {{"consumer.heartbeat.interval.ms", "500"}};
    ksft_config_set_all(cfg, hb, KSFT_NKV(hb));
    ck_assert_int_eq(ksfi_kafka_conf(cfg, KSF_KAFKA_CONSUMER, "c", "g", &conf, &ei),
                     KSF_OK);
    n = sizeof v;
    ck_assert_int_eq(rd_kafka_conf_get(conf, "heartbeat.interval.ms", v, &n),
                     RD_KAFKA_CONF_OK);
    ck_assert_str_eq(v, "500");
    rd_kafka_conf_destroy(conf);
    ksf_config_destroy(cfg);
}
END_TEST

/* ---- logging without code: KSF_LOG, one debug line per message ------------------- */

KSFT_TEST(test_usability_ksf_log_env, 10)
{
    ksf_config *cfg = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ksf_config_set_log(cfg, ksf_log_stderr, NULL,
                       KSF_LOG_ERROR); /* a program's default */
    setenv("KSF_LOG", "debug,logfmt", 1);
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_OK);
    ck_assert(cfg->log_fn == NULL); /* replaced, not doubled */
    ck_assert(cfg->slog_fn == ksf_log_logfmt);
    ck_assert_int_eq(cfg->slog_max_level, KSF_LOG_DEBUG);
    setenv("KSF_LOG", "warning", 1);
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_OK);
    ck_assert(cfg->log_fn == ksf_log_stderr);
    ck_assert_int_eq(cfg->log_max_level, KSF_LOG_WARNING);
    ck_assert(cfg->slog_fn == NULL);
    setenv("KSF_LOG", "info,json", 1);
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_OK);
    ck_assert(cfg->slog_fn == ksf_log_jsonl);
    setenv("KSF_LOG", "loud", 1);
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text, "environment variable KSF_LOG \"loud\": expected "
                              "LEVEL[,FORMAT] with LEVEL error, warning, notice, info or "
                              "debug and FORMAT text (the default), logfmt or json, e.g. "
                              "KSF_LOG=debug,logfmt");
    setenv("KSF_LOG", "debug,xml", 1);
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_EINVAL);
    unsetenv("KSF_LOG");
    ksf_config_destroy(cfg);
}
END_TEST

static atomic_int handled_lines, reply_lines, other_debug;

static void
count_debug(void *user, ksf_log_level level, const char *component, const char *message,
            const ksf_log_field *f, size_t n)
{
    (void)user;
    (void)f;
    (void)n;
    if (level != KSF_LOG_DEBUG) {
        return;
    }
    if (!strcmp(component, "server") && !strcmp(message, "request handled")) {
        atomic_fetch_add(&handled_lines, 1);
    } else if (!strcmp(component, "client") && !strcmp(message, "reply")) {
        atomic_fetch_add(&reply_lines, 1);
    } else if (strcmp(component, "kafka")) {
        atomic_fetch_add(&other_debug, 1);
    }
}

KSFT_TEST(test_usability_debug_line_per_message, 60)
{
    static const char *const topics[] = {"u.log", "u.log.reply", NULL};
    static const ksft_handler echo[] = {{"u.log"}, {NULL}};
    ksft_world w;
    ksft_world_open(&w, &(ksft_world_spec){.topics = topics, .no_client = true});
    ksf_config_set_log_structured(w.cfg, count_debug, NULL, KSF_LOG_DEBUG);
    ksft_world_serve(&w, ksft_world_server(&w, echo));
    w.cli = ksft_client(w.cfg);
    for (int i = 0; i < 5; i++) {
        json_t *out = NULL;
        ck_assert_int_eq(ksf_client_call(w.cli, "u.log", NULL, WAIT_MS, &out, NULL),
                         KSF_OK);
        json_decref(out);
    }
    ck_assert_int_eq(ksft_wait_atomic(&handled_lines, 5, WAIT_MS), 5);
    ck_assert_int_eq(atomic_load(&reply_lines), 5);
    ksft_world_stop_server(&w);
    ck_assert_int_eq(atomic_load(&handled_lines), 5);
    ksft_world_close(&w);
}
END_TEST

/* The path meson passes in environment variable @p var; NULL, after a line saying why
 * case @p name stops there, when the test runs outside meson test. */
static const char *
meson_path(const char *var, const char *name)
{
    const char *path = getenv(var);
    if (!path) {
        fprintf(stderr, "%s: %s not set (run through meson test)\n", name, var);
    }
    return path;
}

/* A server echoing @p pattern (its reply topic made too) and no client, for a case that
 * runs the ksf tool against it. False, after a line saying why, when meson did not set
 * KSF_TOOL. */
static bool
tool_world(ksft_world *w, const char *pattern)
{
    if (!meson_path("KSF_TOOL", pattern)) {
        return false;
    }
    char reply[64];
    snprintf(reply, sizeof reply, "%s.reply", pattern);
    const char *const topics[] = {pattern, reply, NULL};
    const ksft_handler handlers[] = {{pattern}, {NULL}};
    ksft_world_open(
        w, &(ksft_world_spec){.topics = topics, .handlers = handlers, .no_client = true});
    return true;
}

KSFT_TEST(test_usability_call_tool, 90)
{
    ksft_world w;
    if (!tool_world(&w, "u.tool")) {
        return;
    }
    char args[512], err[8192];
    const char *mock = "--set consumer.fetch.wait.max.ms=5";
    /* -v: a summary line on success (it printed nothing). */
    snprintf(args, sizeof args, "call u.tool '{\"a\":1}' -v --brokers %s %s",
             ksft_broker_address(w.broker), mock);
    ck_assert_int_eq(ksft_run_tool("KSF_TOOL", "", args, KSFT_STDERR, err, sizeof err),
                     0);
    ck_assert_msg(strstr(err, "ksf call: u.tool: answered after "), "stderr: %s", err);
    ck_assert_msg(strstr(err, "ksf debug client: reply pattern=u.tool"), "stderr: %s",
                  err);
    /* KSF_LOG without -v. */
    snprintf(args, sizeof args, "call u.tool 1 --brokers %s %s",
             ksft_broker_address(w.broker), mock);
    ck_assert_int_eq(ksft_run_tool("KSF_TOOL", "KSF_LOG=debug,logfmt", args, KSFT_STDERR,
                                   err, sizeof err),
                     0);
    ck_assert_msg(strstr(err, "level=debug component=client msg=reply pattern=u.tool"),
                  "stderr: %s", err);
    ck_assert_int_eq(
        ksft_run_tool("KSF_TOOL", "KSF_LOG=shout", args, KSFT_STDERR, err, sizeof err),
        2);
    ck_assert_msg(strstr(err, "environment variable KSF_LOG \"shout\""), "stderr: %s",
                  err);
    /* Nothing listens: exit 4 within seconds, naming the address. */
    char addr[64], want[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", dead_port());
    snprintf(args, sizeof args, "call u.tool 1 --brokers %s", addr);
    int64_t t0 = ksft_now_ms();
    ck_assert_int_eq(ksft_run_tool("KSF_TOOL", "", args, KSFT_STDERR, err, sizeof err),
                     4);
    ck_assert_int_lt(ksft_now_ms() - t0, ksft_scaled_ms(9000));
    snprintf(want, sizeof want,
             "ksf call: no broker of \"%s\" answered within 5000 ms (%s refused", addr,
             addr);
    ck_assert_msg(strstr(err, want), "stderr: %s", err);
    ksft_world_close(&w);
}
END_TEST

/* An interrupted ksf bench reports what it measured (it printed nothing). */
KSFT_TEST(test_usability_bench_interrupted, 90)
{
    ksft_world w;
    if (!tool_world(&w, "u.bench")) {
        return;
    }
    char dir[] = "/tmp/ksf-bench-XXXXXX", cmd[2048], out[4096];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    /* Interrupt once it reported "running" (bounded: 30 s), after a second of load. */
    snprintf(cmd, sizeof cmd,
             "\"%s\" bench u.bench --duration 60 --concurrency 4 --brokers %s "
             "--set consumer.fetch.wait.max.ms=5 >%s/out 2>%s/err & pid=$!; i=0; "
             "until grep -q running %s/err || [ $i -ge 600 ]; do sleep 0.05; i=$((i+1)); "
             "done; sleep 1; kill -INT $pid; wait $pid; echo \"rc=$?\"; cat %s/out; "
             "rm -r %s",
             getenv("KSF_TOOL"), ksft_broker_address(w.broker), dir, dir, dir, dir, dir);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    pclose(p);
    static const char head[] = "rc=130\nsend u.bench, concurrency 4\n  count     ";
    ck_assert_msg(!strncmp(out, head, sizeof head - 1), "output: %s", out);
    long count = atol(out + sizeof head - 1);
    ck_assert_msg(count > 0, "output: %s", out);
    ck_assert_ptr_nonnull(strstr(out, "  timeouts  0\n"));
    ksft_world_close(&w);
}
END_TEST

/* ---- the README sample, as compiled from README.md --------------------------------- */

/* It serves, says when it is ready, answers, and stops on SIGTERM with status 0. */
KSFT_TEST(test_usability_readme_sample, 90)
{
    const char *sample = meson_path("KSF_README_SAMPLE", "readme_sample");
    if (!sample) {
        return;
    }
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, "hero.kill.dragon", 1);
    ksft_broker_create_topic(b, "hero.kill.dragon.reply", 1);
    char err[2048];
    ksft_program c;
    ksft_program_start(&c, sample, NULL, ksft_broker_address(b));
    ksft_program_expect_line(&c, "hero server: ready\n"); /* blocks until ready */
    ksf_config *cfg = ksft_config(b);
    ksf_client *cli = ksft_client(cfg);
    json_t *items = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_call(cli, "hero.kill.dragon", NULL, WAIT_MS, &items, &ei),
                     KSF_OK);
    char *text = json_dumps(items, JSON_COMPACT | JSON_PRESERVE_ORDER);
    ck_assert_str_eq(text, "[{\"id\":1,\"name\":\"Mythical Sword\"}]");
    free(text);
    json_decref(items);
    ksf_client_destroy(cli);
    ck_assert_int_eq(ksft_program_stop(&c, true, 20000, NULL, 0, err, sizeof err), 0);
    ck_assert_str_eq(err, "");

    /* No broker: it says so within broker.unreachable.timeout.ms (5 s) and exits 1. */
    char addr[64], want[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", dead_port());
    ksft_program_start(&c, sample, NULL, addr);
    ck_assert_int_eq(ksft_program_stop(&c, false, 15000, NULL, 0, err, sizeof err), 1);
    snprintf(want, sizeof want,
             "hero server: no broker of \"%s\" answered within 5000 ms", addr);
    ck_assert_msg(!strncmp(err, want, strlen(want)), "stderr: %s", err);
    ksf_config_destroy(cfg);
    ksft_broker_stop(b);
}
END_TEST

/* ---- default group ids keep unrelated services apart --------------------------------
 */

/* A second, different service starting (the README sample, another program) does not
 * stop this one: they used to share nestjs-group-server and rebalance together. */
KSFT_TEST(test_usability_services_apart, 90)
{
    const char *sample = meson_path("KSF_README_SAMPLE", "services_apart");
    if (!sample) {
        return;
    }
    static const char *const patterns[] = {"u.one", NULL};
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, "u.one", 2);
    ksft_broker_create_topic(b, "u.one.reply", 1);
    ksft_broker_create_topic(b, "hero.kill.dragon", 2);
    const char *const kv[][2] = {{"brokers", ksft_broker_address(b)},
                                 {"consumer.fetch.wait.max.ms", "5"},
                                 {"consumer.session.timeout.ms", "6000"}};
    ksf_config *cfg = ksft_config_from(kv, KSFT_NKV(kv)); /* no group.id: the default */
    ksf_server *srv = ksft_echo_server(cfg, patterns);
    ck_assert_str_eq(srv->group_id, "test_usability-server");
    ksft_service s = {0};
    ksft_service_start(&s, srv, WAIT_MS);
    ksf_client *cli = ksft_client(cfg);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_connect(cli, WAIT_MS, &ei), KSF_OK);
    json_t *out = NULL;
    ck_assert_int_eq(ksf_client_call(cli, "u.one", NULL, WAIT_MS, &out, &ei), KSF_OK);
    json_decref(out);
    ksft_program c;
    ksft_program_start(&c, sample, NULL, ksft_broker_address(b));
    /* For 8 s (its join takes ~3 s; a shared group's rebalance 5 s more), every call
     * is answered within 2 s. */
    int calls = 0;
    for (int64_t until = ksft_now_ms() + 8000; ksft_now_ms() < until; calls++) {
        ksf_err e = ksf_client_call(cli, "u.one", NULL, 2000, &out, &ei);
        ck_assert_msg(e == KSF_OK, "call %d while another service joined: %s", calls,
                      ei.text);
        json_decref(out);
    }
    ksft_program_expect_line(&c, "hero server: ready\n");
    ck_assert_int_eq(ksft_program_stop(&c, true, 20000, NULL, 0, NULL, 0), 0);
    ksf_client_destroy(cli);
    ksft_service_stop(&s);
    ksf_config_destroy(cfg);
    ksft_broker_stop(b);
}
END_TEST

KSFT_MAIN("usability")
