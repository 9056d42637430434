/*
 * `ksf bench`: argument errors, and short real runs against a ksf server on the mock
 * broker with exact counts (the tool is run as a child process through KSF_TOOL).
 */
#include "broker.h"

#include "suite.h"

#include <check.h>
#include <ksf/ksf.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#define PATTERN "bench.echo"

/* Run the ksf tool through the shell; returns its exit status, stdout in @p out. */
static int
run_tool(const char *args, char *out, size_t size)
{
    const char *tool = getenv("KSF_TOOL");
    char cmd[1024];
    ck_assert_ptr_nonnull(tool);
    snprintf(cmd, sizeof cmd, "\"%s\" %s", tool, args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_bench_argument_errors)
{
    static const struct {
        const char *args;
        const char *err; /* a fragment of the stderr sentence */
    } cases[] = {
        {"bench", "missing PATTERN"},
        {"bench " PATTERN, "exactly one of --count N and --duration S"},
        {"bench " PATTERN " --count 5 --duration 1", "exactly one of"},
        {"bench " PATTERN " --count 0", "--count \"0\": expected 1..1000000000"},
        {"bench " PATTERN " --count 5 --concurrency 0", "--concurrency \"0\": expected"},
        {"bench " PATTERN " --duration -1", "--duration \"-1\": expected seconds"},
        {"bench " PATTERN " --count 5 --timeout-ms x", "--timeout-ms \"x\""},
        {"bench 'bad topic' --count 5", "is not a Kafka topic name"},
        {"bench " PATTERN " --count 5 --bogus",
         "unknown option or missing value: --bogus"},
        {"bench " PATTERN " --count 5 --set nope=1", "nope"},
        /* the --brokers/--set flags are ksf_config_set_from_args()'s */
        {"bench " PATTERN " --count 5 --set",
         "ksf bench: flag --set needs a value: --set KEY=VALUE"},
        {"bench " PATTERN " --count 5 --brokers=kafka",
         "ksf bench: flag --brokers: brokers \"kafka\": missing :port"},
        {"bench " PATTERN " x y --count 5", "unexpected argument \"y\""},
    };
    char args[512], out[2048];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(args, sizeof args, "%s 2>&1 >/dev/null", cases[i].args);
        int rc = run_tool(args, out, sizeof out);
        ck_assert_msg(rc == 2, "ksf %s: exit %d, want 2", cases[i].args, rc);
        ck_assert_msg(strstr(out, cases[i].err), "ksf %s: stderr \"%s\" lacks \"%s\"",
                      cases[i].args, out, cases[i].err);
    }
    ck_assert_int_eq(run_tool("bench --help", out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "Usage: ksf bench PATTERN"));
}
END_TEST

/* ---- a real server --------------------------------------------------------------- */

typedef struct env {
    ksft_broker *b;
    ksf_server *srv;
    pthread_t thread;
    pthread_mutex_t m;
    pthread_cond_t c;
    bool ready;
} env;

static ksf_err
echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    *reply = data ? json_incref((json_t *)data) : NULL;
    return KSF_OK;
}

static void
on_ready(ksf_server *srv, void *user)
{
    (void)srv;
    env *v = user;
    pthread_mutex_lock(&v->m);
    v->ready = true;
    pthread_cond_signal(&v->c);
    pthread_mutex_unlock(&v->m);
}

static void *
serve(void *arg)
{
    env *v = arg;
    ksf_server_run(v->srv, NULL);
    return NULL;
}

/* Start a broker and an echo server on PATTERN; returns once it serves. */
static void
env_start(env *v)
{
    memset(v, 0, sizeof *v);
    pthread_mutex_init(&v->m, NULL);
    pthread_cond_init(&v->c, NULL);
    v->b = ksft_broker_start();
    ksft_broker_create_topic(v->b, PATTERN, 4);
    ksft_broker_create_topic(v->b, PATTERN ".reply", 4);
    ksft_broker_create_topic(v->b, "bench.event", 1);
    ksf_config *cfg = ksft_config(v->b);
    ck_assert_int_eq(ksf_server_new(&v->srv, cfg, NULL), KSF_OK);
    ksf_config_destroy(cfg);
    ck_assert_int_eq(ksf_server_on_message(v->srv, PATTERN, echo, NULL, NULL), KSF_OK);
    ksf_server_set_ready_cb(v->srv, on_ready, v);
    ck_assert_int_eq(pthread_create(&v->thread, NULL, serve, v), 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&v->m);
    while (!v->ready && pthread_cond_timedwait(&v->c, &v->m, &until) == 0) {
    }
    bool ready = v->ready;
    pthread_mutex_unlock(&v->m);
    ck_assert_msg(ready, "the echo server did not get ready in 20 s");
}

static void
env_stop(env *v)
{
    ksf_server_stop(v->srv);
    pthread_join(v->thread, NULL);
    ksf_server_destroy(v->srv);
    ksft_broker_stop(v->b);
}

/* Run ksf bench with @p args against @p v; its last stdout line as JSON. */
static json_t *
bench_json(env *v, const char *args, int want_rc)
{
    char cmd[768], out[8192];
    snprintf(
        cmd, sizeof cmd,
        "bench %s --json --brokers %s --set consumer.fetch.wait.max.ms=5 2>/dev/null",
        args, ksft_broker_address(v->b));
    int rc = run_tool(cmd, out, sizeof out);
    ck_assert_msg(rc == want_rc, "ksf %s: exit %d, want %d; stdout:\n%s", cmd, rc,
                  want_rc, out);
    size_t n = strlen(out);
    ck_assert_msg(n > 1 && out[n - 1] == '\n', "no output line: %s", out);
    out[n - 1] = '\0';
    char *last = strrchr(out, '\n');
    json_error_t jerr;
    json_t *j = json_loads(last ? last + 1 : out, 0, &jerr);
    ck_assert_msg(j != NULL, "last line is not JSON (%s): %s", jerr.text, out);
    return j;
}

static long
num(const json_t *j, const char *key)
{
    const json_t *v = json_object_get(j, key);
    ck_assert_msg(json_is_number(v), "field %s missing", key);
    return (long)json_number_value(v);
}

/* count/ok/errors/timeouts exactly, percentiles ordered, a positive rate, an RSS. */
static void
assert_result(const json_t *j, long count, long ok, long errors, long timeouts)
{
    ck_assert_int_eq(num(j, "count"), count);
    ck_assert_int_eq(num(j, "ok"), ok);
    ck_assert_int_eq(num(j, "errors"), errors);
    ck_assert_int_eq(num(j, "timeouts"), timeouts);
    ck_assert_int_le(num(j, "p50_us"), num(j, "p90_us"));
    ck_assert_int_le(num(j, "p90_us"), num(j, "p99_us"));
    ck_assert_int_le(num(j, "p99_us"), num(j, "max_us"));
    ck_assert_int_gt(num(j, "p50_us"), 0);
    ck_assert(json_number_value(json_object_get(j, "rps")) > 0);
    /* The process's own peak RSS (bench/run cannot read it after the exit): a process
     * with librdkafka's threads holds megabytes, and far less than a gigabyte. */
    ck_assert_int_gt(num(j, "peak_rss_kb"), 1024);
    ck_assert_int_lt(num(j, "peak_rss_kb"), 1024 * 1024);
}

START_TEST(test_bench_real_run)
{
    env v;
    env_start(&v);
    json_t *j = bench_json(&v, PATTERN " '{\"n\":1}' --count 200 --concurrency 8", 0);
    assert_result(j, 200, 200, 0, 0);
    ck_assert_int_eq(num(j, "concurrency"), 8);
    json_decref(j);
    ksf_server_stats st;
    ksf_server_get_stats(v.srv, &st);
    ck_assert_uint_eq(st.requests, 200); /* exactly as many handled as sent */
    j = bench_json(&v, PATTERN " --duration 0.5 --concurrency 4", 0);
    ck_assert_int_gt(num(j, "count"), 0);
    assert_result(j, num(j, "count"), num(j, "count"), 0, 0);
    json_decref(j);
    j = bench_json(&v, "bench.event '{\"e\":1}' --emit --count 50 --concurrency 10", 0);
    assert_result(j, 50, 50, 0, 0);
    json_decref(j);
    env_stop(&v);
}
END_TEST

START_TEST(test_bench_timeouts_counted)
{
    env v;
    env_start(&v);
    /* Nobody serves bench.nobody: every request times out, and exit status 1 says so. */
    ksft_broker_create_topic(v.b, "bench.nobody", 1);
    ksft_broker_create_topic(v.b, "bench.nobody.reply", 1);
    json_t *j =
        bench_json(&v, "bench.nobody --count 3 --concurrency 3 --timeout-ms 300", 1);
    assert_result(j, 3, 0, 0, 3);
    ck_assert_int_ge(num(j, "p50_us"), 290000); /* deadlines are kept in whole ms */
    json_decref(j);
    env_stop(&v);
}
END_TEST

int
main(void)
{
    const ksft_case cases[] = {
        {"argument_errors", test_bench_argument_errors, 30},
        {"real_run", test_bench_real_run, 60},
        {"timeouts_counted", test_bench_timeouts_counted, 60},
    };
    return KSFT_RUN("bench", cases);
}
