/*
 * `ksf bench`: argument errors, and short real runs against a ksf server on the mock
 * broker with exact counts (the tool is run as a child process through KSF_TOOL).
 */
#include "fixture.h"

#include "proc.h"
#include "raw_kafka.h"
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

KSFT_TEST(test_bench_argument_errors, 30)
{
    /* {arguments, a fragment of the stderr sentence} */
    static const char *const cases[][2] = {
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
        {"bench " PATTERN " --count 5 --emit --raw-reply",
         "--raw-reply is for requests: an event has no reply"},
    };
    ksft_assert_usage_errors("KSF_TOOL", cases, KSFT_NKV(cases));
    char out[2048];
    ck_assert_int_eq(
        ksft_run_tool("KSF_TOOL", "", "bench --help", KSFT_STDOUT, out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "Usage: ksf bench PATTERN"));
}
END_TEST

/* ---- a real server --------------------------------------------------------------- */

/* A broker and an echo server on PATTERN (4 partitions), serving; ksf bench is the
 * client. */
static void
env_start(ksft_world *v)
{
    static const char *const topics[] = {PATTERN ":4", PATTERN ".reply:4", "bench.event",
                                         NULL};
    static const ksft_handler echo[] = {{PATTERN}, {NULL}};
    ksft_world_open(
        v, &(ksft_world_spec){.topics = topics, .handlers = echo, .no_client = true});
}

/* Run ksf bench with @p args against @p v; its last stdout line as JSON. */
static json_t *
bench_json(ksft_world *v, const char *args, int want_rc)
{
    char cmd[768], out[8192];
    snprintf(
        cmd, sizeof cmd,
        "bench %s --json --brokers %s --set consumer.fetch.wait.max.ms=5 2>/dev/null",
        args, ksft_broker_address(v->broker));
    int rc = ksft_run_tool("KSF_TOOL", "", cmd, KSFT_STDOUT, out, sizeof out);
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

KSFT_TEST(test_bench_real_run, 60)
{
    ksft_world v;
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
    ksft_world_close(&v);
}
END_TEST

/* --raw-reply: replies undecoded, the payload sent as bytes; an object, a string and
 * a null payload all come back OK, each request handled once. */
KSFT_TEST(test_bench_raw_reply, 60)
{
    ksft_world v;
    env_start(&v);
    static const char *const payloads[] = {"'{\"n\":1}'", "plain", ""};
    for (int i = 0; i < 3; i++) {
        char args[160];
        /* The static reply partition: a reply-group rebalance per run would cost the
         * mock's session timeout each. */
        snprintf(args, sizeof args,
                 PATTERN " %s --count 100 --concurrency 8 --raw-reply --set "
                         "client.reply.provider=static",
                 payloads[i]);
        json_t *j = bench_json(&v, args, 0);
        assert_result(j, 100, 100, 0, 0);
        json_decref(j);
        ksf_server_stats st;
        ksf_server_get_stats(v.srv, &st);
        ck_assert_uint_eq(st.requests, 100 * (uint64_t)(i + 1));
    }
    ksft_world_close(&v);
}
END_TEST

/* Events as a default ksf_client_emit sends them: no ksf_deadline unless --timeout-ms
 * was given; --raw-value sends the payload's bytes as they were encoded once. Read back
 * from the topic: the exact value and the headers of every event. */
KSFT_TEST(test_bench_event_headers, 60)
{
    ksft_world v;
    env_start(&v);
    json_t *j = bench_json(
        &v, "bench.event '{\"e\":1}' --emit --raw-value --count 20 --concurrency 4", 0);
    assert_result(j, 20, 20, 0, 0);
    json_decref(j);
    j = bench_json(&v, "bench.event '{\"e\":2}' --emit --count 10 --timeout-ms 60000", 0);
    assert_result(j, 10, 10, 0, 0);
    json_decref(j);
    ksft_collector *c =
        ksft_collector_new(ksft_broker_address(v.broker), "bench.event", 0);
    for (int i = 0; i < 100 && ksft_collector_count(c) < 30; i++) {
        ksft_collector_poll(c, 100);
    }
    ck_assert_uint_eq(ksft_collector_count(c), 30);
    int64_t now = (int64_t)time(NULL) * 1000;
    for (size_t i = 0; i < 30; i++) {
        const ksft_msg *m = ksft_collector_at(c, i);
        const char *want = i < 20 ? "{\"e\":1}" : "{\"e\":2}";
        ck_assert_uint_eq(m->len, strlen(want));
        ck_assert_mem_eq(m->value, want, m->len);
        const void *dv;
        size_t dl;
        bool has = ksft_msg_header(m, "ksf_deadline", &dv, &dl);
        ck_assert_msg(has == (i >= 20), "event %zu: ksf_deadline %s", i,
                      has ? "present" : "missing");
        if (has) { /* now + 60 s when sent, in epoch ms */
            char text[24] = {0};
            ck_assert_uint_lt(dl, sizeof text);
            memcpy(text, dv, dl);
            long long at = atoll(text);
            ck_assert_int_gt(at, now + 50000);
            ck_assert_int_le(at, now + 61000);
        }
    }
    ksft_collector_destroy(c);
    ksft_world_close(&v);
}
END_TEST

KSFT_TEST(test_bench_timeouts_counted, 60)
{
    ksft_world v;
    env_start(&v);
    /* Nobody serves bench.nobody: every request times out, and exit status 1 says so. */
    ksft_broker_create_topic(v.broker, "bench.nobody", 1);
    ksft_broker_create_topic(v.broker, "bench.nobody.reply", 1);
    json_t *j =
        bench_json(&v, "bench.nobody --count 3 --concurrency 3 --timeout-ms 300", 1);
    assert_result(j, 3, 0, 0, 3);
    ck_assert_int_ge(num(j, "p50_us"), 290000); /* deadlines are kept in whole ms */
    json_decref(j);
    ksft_world_close(&v);
}
END_TEST

KSFT_MAIN("bench")
