/*
 * Metrics: histogram buckets, lock-free counting from several threads, the Prometheus
 * text (exact lines, label escaping) and a server and a client counting real traffic
 * on the embedded broker.
 */
#include "base/alloc.h"
#include "codec/deadline.h"
#include "fixture.h"
#include "obs/metrics.h"
#include "raw_kafka.h"
#include "service.h"

#include "suite.h"

#include <check.h>
#include <ksf/ksf.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

KSFT_TEST(test_metrics_bucket_edges, 30)
{
    /* Bounds are inclusive (Prometheus le): a value on a bound is in that bucket. */
    ck_assert_uint_eq(ksfi_hist_bucket(0), 0);
    ck_assert_uint_eq(ksfi_hist_bucket(100), 0);
    ck_assert_uint_eq(ksfi_hist_bucket(101), 1);
    ck_assert_uint_eq(ksfi_hist_bucket(250), 1);
    ck_assert_uint_eq(ksfi_hist_bucket(251), 2);
    ck_assert_uint_eq(ksfi_hist_bucket(1000000), 12);
    ck_assert_uint_eq(ksfi_hist_bucket(10000000), 15);
    ck_assert_uint_eq(ksfi_hist_bucket(10000001), KSFI_HIST_EDGES); /* +Inf */
    ck_assert_uint_eq(ksfi_hist_bucket(UINT64_MAX), KSFI_HIST_EDGES);
    for (size_t i = 0; i < KSFI_HIST_EDGES; i++) {
        ck_assert_uint_eq(ksfi_hist_bucket(ksfi_hist_edges_us[i]), i);
        ck_assert_uint_eq(ksfi_hist_bucket(ksfi_hist_edges_us[i] + 1), i + 1);
        if (i > 0) {
            ck_assert_uint_gt(ksfi_hist_edges_us[i], ksfi_hist_edges_us[i - 1]);
        }
    }
}
END_TEST

#define THREADS 4
#define PER_THREAD 100000

static void *
hammer(void *arg)
{
    ksfi_pmetrics *m = arg;
    for (uint64_t i = 0; i < PER_THREAD; i++) {
        ksfi_pmetrics_inc(m, KSFI_M_REQUESTS);
        ksfi_hist_observe(&m->latency, i % 3 == 0 ? 50 : 20000000);
    }
    return NULL;
}

KSFT_TEST(test_metrics_concurrent_counts_are_exact, 30)
{
    ksfi_pmetrics *m = ksfi_pmetrics_new("p");
    ck_assert_ptr_nonnull(m);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(pthread_create(&t[i], NULL, hammer, m), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    uint64_t small = 0;
    for (uint64_t i = 0; i < PER_THREAD; i++) {
        small += i % 3 == 0;
    }
    uint64_t big = PER_THREAD - small;
    ck_assert_uint_eq(atomic_load(&m->c[KSFI_M_REQUESTS]), THREADS * PER_THREAD);
    ck_assert_uint_eq(atomic_load(&m->latency.counts[0]), THREADS * small);
    ck_assert_uint_eq(atomic_load(&m->latency.counts[KSFI_HIST_EDGES]), THREADS * big);
    ck_assert_uint_eq(atomic_load(&m->latency.sum_us),
                      THREADS * (small * 50 + big * 20000000));
    ksfi_free(m);
}
END_TEST

/* Render into a string with open_memstream; the caller frees it. */
typedef struct memout {
    char *text;
    size_t len;
    FILE *f;
} memout;

static FILE *
mem_open(memout *m)
{
    m->text = NULL;
    m->len = 0;
    m->f = open_memstream(&m->text, &m->len);
    ck_assert_ptr_nonnull(m->f);
    return m->f;
}

static char *
mem_close(memout *m)
{
    fclose(m->f);
    return m->text;
}

KSFT_TEST(test_metrics_prometheus_text_and_escaping, 10)
{
    ksfi_pmetrics *a = ksfi_pmetrics_new("odd \"quoted\" \\path\\\nnext");
    ksfi_pmetrics *b = ksfi_pmetrics_new("a.plain");
    ck_assert(a && b);
    for (int i = 0; i < 3; i++) {
        ksfi_pmetrics_inc(a, KSFI_M_REQUESTS);
    }
    ksfi_hist_observe(&b->latency, 100);      /* le 0.0001 */
    ksfi_hist_observe(&b->latency, 1000001);  /* le 2.5 */
    ksfi_hist_observe(&b->latency, 99000000); /* +Inf */
    const ksfi_pmetrics *items[] = {a, b};
    ksfi_metrics_view v;
    ck_assert_int_eq(ksfi_metrics_view_init(&v, items, 2), KSF_OK);
    memout m;
    FILE *f = mem_open(&m);
    ksfi_prom_counter c = {"ksf_server_requests_total", "Requests.", KSFI_M_REQUESTS};
    ksfi_prom_counters(f, &v, &c);
    ksfi_prom_histogram(f, &v, "ksf_x_seconds", "Latency.");
    char *text = mem_close(&m);
    /* Sorted by pattern: "a.plain" < "odd...". */
    const char *want = "# HELP ksf_server_requests_total Requests.\n"
                       "# TYPE ksf_server_requests_total counter\n"
                       "ksf_server_requests_total{pattern=\"a.plain\"} 0\n"
                       "ksf_server_requests_total{pattern=\"odd \\\"quoted\\\" "
                       "\\\\path\\\\\\nnext\"} 3\n"
                       "# HELP ksf_x_seconds Latency.\n"
                       "# TYPE ksf_x_seconds histogram\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.0001\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.00025\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.0005\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.001\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.0025\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.005\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.01\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.025\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.05\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.1\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.25\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"0.5\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"1\"} 1\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"2.5\"} 2\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"5\"} 2\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"10\"} 2\n"
                       "ksf_x_seconds_bucket{pattern=\"a.plain\",le=\"+Inf\"} 3\n"
                       "ksf_x_seconds_sum{pattern=\"a.plain\"} 100.000101\n"
                       "ksf_x_seconds_count{pattern=\"a.plain\"} 3\n";
    ck_assert_msg(!strncmp(text, want, strlen(want)), "got:\n%s", text);
    /* The escaped pattern's histogram follows, all zero. */
    ck_assert_ptr_nonnull(strstr(text, "ksf_x_seconds_count{pattern=\"odd \\\"quoted\\\" "
                                       "\\\\path\\\\\\nnext\"} 0\n"));
    free(text);
    ksfi_metrics_view_free(&v);
    ksfi_free(a);
    ksfi_free(b);
}
END_TEST

KSFT_TEST(test_metrics_null_arguments, 10)
{
    json_t *j = NULL;
    ck_assert_int_eq(ksf_server_write_prometheus(NULL, stdout), KSF_EINVAL);
    ck_assert_int_eq(ksf_client_write_prometheus(NULL, stdout), KSF_EINVAL);
    ck_assert_int_eq(ksf_server_metrics_json(NULL, &j), KSF_EINVAL);
    ck_assert_int_eq(ksf_client_metrics_json(NULL, &j), KSF_EINVAL);
    ck_assert_ptr_null(j);
}
END_TEST

/* ---- a server and a client on the embedded broker -----------------------------------
 */

#define P_ECHO "metrics.echo"
#define P_FAIL "metrics.fail"
#define P_EVENT "metrics.event"
#define P_NOBODY "metrics.nobody"
#define P_SLOW "metrics.slow"
#define N_ECHO 3
#define N_FAIL 2

/* Answers after the caller gave up: a late reply. */
static ksf_err
slow_handler(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    ksft_sleep_ms(600);
    *reply = json_string("late");
    return KSF_OK;
}

static atomic_int events_seen;

/* The value of the line starting with @p prefix (the whole series name), or -1. */
static long long
series(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, prefix, n) && p[n] == ' ') {
            return atoll(p + n + 1);
        }
    }
    return -1;
}

/* One series line and the value it must have. */
typedef struct want_series {
    const char *series;
    long long value;
} want_series;

/* Each of the @p n series of @p want has exactly its value in @p text. */
static void
expect_series(const char *text, const want_series *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(series(text, want[i].series) == want[i].value,
                      "%s: %lld, want %lld", want[i].series, series(text, want[i].series),
                      want[i].value);
    }
}

#define PAT(name, pattern) name "{pattern=\"" pattern "\"}"

/* Every bucket line of @p pattern's histogram @p name is >= the one before, and the
 * +Inf one equals _count. Returns _count. */
static long long
check_histogram(const char *text, const char *name, const char *pattern)
{
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s_bucket{pattern=\"%s\",le=\"", name, pattern);
    long long prev = 0, buckets = 0;
    for (const char *p = strstr(text, prefix); p; p = strstr(p + 1, prefix)) {
        long long v = atoll(strchr(p, '}') + 2);
        ck_assert_int_ge(v, prev);
        prev = v;
        buckets++;
    }
    ck_assert_int_eq(buckets, KSFI_HIST_EDGES + 1);
    snprintf(prefix, sizeof prefix, "%s_count{pattern=\"%s\"}", name, pattern);
    ck_assert_int_eq(series(text, prefix), prev);
    return prev;
}

static char *
server_text(ksf_server *srv)
{
    memout m;
    FILE *f = mem_open(&m);
    ck_assert_int_eq(ksf_server_write_prometheus(srv, f), KSF_OK);
    return mem_close(&m);
}

/* Wait until the server's replies_total for @p pattern is @p want (delivery reports
 * come after the client may already have its reply). */
static char *
server_text_when(ksf_server *srv, const char *line, long long want)
{
    ksft_deadline until = ksft_deadline_in(10000);
    for (;;) {
        char *text = server_text(srv);
        if (series(text, line) == want || !ksft_deadline_wait(&until)) {
            return text;
        }
        free(text);
    }
}

static void
send_all(ksf_client *cli)
{
    ksf_errinfo ei = {0};
    for (int i = 0; i < N_ECHO; i++) {
        json_t *req = json_pack("{s:i}", "i", i), *rep = NULL;
        ck_assert_msg(ksf_client_call(cli, P_ECHO, req, 10000, &rep, &ei) == KSF_OK, "%s",
                      ei.text);
        json_decref(req);
        json_decref(rep);
    }
    for (int i = 0; i < N_FAIL; i++) {
        json_t *rep = NULL;
        ck_assert_int_eq(ksf_client_call(cli, P_FAIL, NULL, 10000, &rep, &ei),
                         KSF_EREMOTE);
        json_decref(rep);
    }
    json_t *rep = NULL;
    ck_assert_int_eq(ksf_client_call(cli, P_NOBODY, NULL, 300, &rep, &ei), KSF_ETIMEDOUT);
    ck_assert_int_eq(ksf_client_call(cli, P_SLOW, NULL, 200, &rep, &ei), KSF_ETIMEDOUT);
    ck_assert_int_eq(ksf_client_emit(cli, P_EVENT, NULL, NULL, NULL, NULL, &ei), KSF_OK);
    ck_assert_int_eq(ksf_client_flush(cli, 5000, &ei), KSF_OK);
}

static void
check_server(ksf_server *srv)
{
    ksft_deadline until = ksft_deadline_in(10000);
    while (atomic_load(&events_seen) < 1 && ksft_deadline_wait(&until)) {
    }
    char *t =
        server_text_when(srv, "ksf_server_replies_total{pattern=\"" P_FAIL "\"}", N_FAIL);
    static const want_series want[] = {
        {PAT("ksf_server_requests_total", P_ECHO), N_ECHO},
        {PAT("ksf_server_requests_total", P_FAIL), N_FAIL},
        {PAT("ksf_server_requests_total", P_EVENT), 0},
        {PAT("ksf_server_events_total", P_EVENT), 1},
        {PAT("ksf_server_errors_total", P_ECHO), 0},
        {PAT("ksf_server_errors_total", P_FAIL), N_FAIL},
        {PAT("ksf_server_replies_total", P_ECHO), N_ECHO},
        {"ksf_server_no_handler_total", 0},
    };
    expect_series(t, want, sizeof want / sizeof want[0]);
    long long n = check_histogram(t, "ksf_server_handler_duration_seconds", P_ECHO) +
                  check_histogram(t, "ksf_server_handler_duration_seconds", P_FAIL);
    ck_assert_int_eq(n, N_ECHO + N_FAIL);
    ck_assert_int_eq(check_histogram(t, "ksf_server_handler_duration_seconds", P_EVENT),
                     1);
    ck_assert_ptr_nonnull(strstr(t, "# TYPE ksf_server_handler_duration_seconds "
                                    "histogram\n"));
    free(t);
    json_t *j = NULL;
    ck_assert_int_eq(ksf_server_metrics_json(srv, &j), KSF_OK);
    json_t *echo = json_object_get(json_object_get(j, "patterns"), P_ECHO);
    ck_assert_int_eq(json_integer_value(json_object_get(echo, "requests")), N_ECHO);
    json_t *h = json_object_get(echo, "handler_duration");
    ck_assert_int_eq(json_integer_value(json_object_get(h, "count")), N_ECHO);
    ck_assert_uint_eq(json_array_size(json_object_get(h, "counts")), KSFI_HIST_EDGES + 1);
    json_decref(j);
}

static void
check_client(ksf_client *cli)
{
    ksf_client_stats st;
    ksft_deadline until = ksft_deadline_in(10000);
    do { /* the slow handler's reply comes about 0.4 s after its timeout */
        ksf_client_get_stats(cli, &st);
    } while (st.late_replies < 1 && ksft_deadline_wait(&until));
    memout m;
    FILE *f = mem_open(&m);
    ck_assert_int_eq(ksf_client_write_prometheus(cli, f), KSF_OK);
    char *t = mem_close(&m);
    static const want_series want[] = {
        {PAT("ksf_client_requests_total", P_ECHO), N_ECHO},
        {PAT("ksf_client_replies_total", P_ECHO), N_ECHO},
        {PAT("ksf_client_remote_errors_total", P_FAIL), N_FAIL},
        {PAT("ksf_client_replies_total", P_FAIL), 0},
        {PAT("ksf_client_timeouts_total", P_NOBODY), 1},
        {PAT("ksf_client_timeouts_total", P_ECHO), 0},
        {PAT("ksf_client_late_replies_total", P_ECHO), 0},
        {PAT("ksf_client_late_replies_total", P_SLOW), 1},
        {PAT("ksf_client_timeouts_total", P_SLOW), 1},
        {"ksf_client_in_flight", 0},
        {"ksf_client_events_emitted_total", 1},
        {"ksf_client_send_failures_total", 0},
        {"ksf_client_emit_failures_total", 0},
    };
    expect_series(t, want, sizeof want / sizeof want[0]);
    ck_assert_int_eq(check_histogram(t, "ksf_client_request_duration_seconds", P_ECHO),
                     N_ECHO);
    ck_assert_int_eq(check_histogram(t, "ksf_client_request_duration_seconds", P_FAIL),
                     N_FAIL);
    ck_assert_int_eq(check_histogram(t, "ksf_client_request_duration_seconds", P_NOBODY),
                     0);
    ck_assert_int_ge(series(t, "ksf_client_reply_group_rebalances_total"), 1);
    /* One owned partition of each of the four reply topics (4 partitions each). */
    int owned = 0;
    for (const char *p = strstr(t, "ksf_client_reply_partition{"); p;
         p = strstr(p + 1, "ksf_client_reply_partition{")) {
        ck_assert_ptr_nonnull(strstr(p, "state=\"owned\"} 1\n"));
        owned++;
    }
    ck_assert_int_eq(owned, 4);
    ck_assert_ptr_nonnull(
        strstr(t, "ksf_client_reply_partition{topic=\"" P_ECHO ".reply\",partition=\""));
    free(t);
    json_t *j = NULL;
    ck_assert_int_eq(ksf_client_metrics_json(cli, &j), KSF_OK);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "reply_partitions")), 4);
    json_t *fail = json_object_get(json_object_get(j, "patterns"), P_FAIL);
    ck_assert_int_eq(json_integer_value(json_object_get(fail, "remote_errors")), N_FAIL);
    json_decref(j);
}

KSFT_TEST(test_metrics_server_and_client_count_traffic, 60)
{
    static const char *const topics[] = {P_ECHO ":4",       P_FAIL ":4",
                                         P_EVENT ":4",      P_NOBODY ":4",
                                         P_SLOW ":4",       P_ECHO ".reply:4",
                                         P_FAIL ".reply:4", P_NOBODY ".reply:4",
                                         P_SLOW ".reply:4", NULL};
    static const ksft_handler handlers[] = {{P_ECHO},
                                            {P_FAIL, ksft_refuse},
                                            {P_EVENT, ksft_count, &events_seen, true},
                                            {P_SLOW, slow_handler},
                                            {NULL}};
    ksft_world w;
    static const char *const replies_of[] = {P_ECHO, P_FAIL, P_NOBODY, P_SLOW, NULL};
    ksft_world_open(&w, &(ksft_world_spec){.topics = topics,
                                           .handlers = handlers,
                                           .subscribe = replies_of});
    send_all(w.cli);
    check_server(w.srv);
    check_client(w.cli);
    ksft_world_close(&w);
}
END_TEST

/* ---- the server's shedding and deadline counters ----------------------------------- */

KSFT_TEST(test_metrics_server_shed_and_expired, 60)
{
    static const ksft_handler handlers[] = {
        {"mx.slow", slow_handler}, {"mx.ev", ksft_count, &events_seen, true}, {NULL}};
    ksft_world w;
    ksft_world_open(
        &w, &(ksft_world_spec){.topics = (const char *const[]){"mx.slow", "mx.ev", NULL},
                               .handlers = handlers,
                               .subscribe = (const char *const[]){"mx.slow", NULL}});
    /* Shed: once the server knows the handler takes 600 ms, a request with 150 ms left
     * is answered with the overload error instead of being run. */
    ksft_call_expect(w.cli, "mx.slow", NULL, KSF_OK, "\"late\"", 5000);
    json_t *out = NULL;
    ck_assert_int_eq(ksf_client_call(w.cli, "mx.slow", NULL, 150, &out, NULL),
                     KSF_EREMOTE);
    json_decref(out);
    /* Expired: two events whose ksf_deadline passed 5 s ago are skipped unhandled. */
    char past[21];
    size_t plen = ksfi_deadline_format(ksfi_wall_ms() - 5000, past);
    ksfi_header h_past[] = {{"ksf_deadline", past, plen}};
    ksft_producer *p = ksft_producer_new(ksft_broker_address(w.broker));
    ksft_produce(p, "mx.ev", 0, NULL, 0, "{}", 2, h_past, 1, false);
    ksft_produce(p, "mx.ev", 0, NULL, 0, "{}", 2, h_past, 1, true);
    ksft_producer_destroy(p);
    ksf_server_stats st = KSFT_WAIT_SERVER_STAT(w.srv, expired, 2, 10000);
    ck_assert_uint_eq(st.expired, 2);
    ck_assert_uint_eq(st.shed, 1);
    ck_assert_uint_eq(st.events, 0);

    /* The unlabelled families, byte for byte, in their order. */
    char *t = server_text(w.srv);
    const char *tail = strstr(t, "# HELP ksf_server_no_handler_total");
    ck_assert_ptr_nonnull(tail);
    ck_assert_str_eq(
        tail,
        "# HELP ksf_server_no_handler_total Messages on a topic without a handler.\n"
        "# TYPE ksf_server_no_handler_total counter\n"
        "ksf_server_no_handler_total 0\n"
        "# HELP ksf_server_malformed_total Messages skipped because their headers could "
        "not be used.\n"
        "# TYPE ksf_server_malformed_total counter\n"
        "ksf_server_malformed_total 0\n"
        "# HELP ksf_server_reply_failures_total Reply produces that failed for good.\n"
        "# TYPE ksf_server_reply_failures_total counter\n"
        "ksf_server_reply_failures_total 0\n"
        "# HELP ksf_server_offset_resets_total Partitions whose committed offset was out "
        "of range, so the consumer resumed elsewhere.\n"
        "# TYPE ksf_server_offset_resets_total counter\n"
        "ksf_server_offset_resets_total 0\n"
        "# HELP ksf_server_offset_reset_skipped_total Messages skipped by those resets: "
        "deleted before they were read.\n"
        "# TYPE ksf_server_offset_reset_skipped_total counter\n"
        "ksf_server_offset_reset_skipped_total 0\n"
        "# HELP ksf_server_reply_refused_total Requests skipped because the reply policy "
        "refused their reply topic.\n"
        "# TYPE ksf_server_reply_refused_total counter\n"
        "ksf_server_reply_refused_total 0\n"
        "# HELP ksf_server_refused_total Messages a middleware's before callback "
        "refused: "
        "their handler did not run.\n"
        "# TYPE ksf_server_refused_total counter\n"
        "ksf_server_refused_total 0\n"
        "# HELP ksf_server_expired_total Messages skipped unhandled because their "
        "ksf_deadline had passed.\n"
        "# TYPE ksf_server_expired_total counter\n"
        "ksf_server_expired_total 2\n"
        "# HELP ksf_server_shed_total Requests answered at once with the overload error: "
        "their deadline left less time than the handler's recent run time.\n"
        "# TYPE ksf_server_shed_total counter\n"
        "ksf_server_shed_total 1\n"
        "# HELP ksf_server_throttled_total Messages that waited because their pattern "
        "was "
        "at its concurrency limit.\n"
        "# TYPE ksf_server_throttled_total counter\n"
        "ksf_server_throttled_total 0\n"
        "# HELP ksf_server_budget_exceeded_total Requests answered with the time-budget "
        "error: their handler ran past server.handler.timeout.ms.\n"
        "# TYPE ksf_server_budget_exceeded_total counter\n"
        "ksf_server_budget_exceeded_total 0\n"
        "# HELP ksf_server_late_discarded_total Handler results discarded because they "
        "came after their time-budget error.\n"
        "# TYPE ksf_server_late_discarded_total counter\n"
        "ksf_server_late_discarded_total 0\n"
        "# HELP ksf_server_event_retries_total Event handler runs repeated after a "
        "failure.\n"
        "# TYPE ksf_server_event_retries_total counter\n"
        "ksf_server_event_retries_total 0\n"
        "# HELP ksf_server_dead_lettered_total Failed events produced to their "
        "dead-letter topic and acknowledged.\n"
        "# TYPE ksf_server_dead_lettered_total counter\n"
        "ksf_server_dead_lettered_total 0\n"
        "# HELP ksf_server_dlq_failures_total Dead-letter produces that failed; each is "
        "tried again, nothing dropped.\n"
        "# TYPE ksf_server_dlq_failures_total counter\n"
        "ksf_server_dlq_failures_total 0\n"
        "# HELP ksf_server_partition_pauses_total Times a partition was paused because "
        "its window of unfinished messages was full.\n"
        "# TYPE ksf_server_partition_pauses_total counter\n"
        "ksf_server_partition_pauses_total 0\n");
    free(t);

    /* The JSON names the same values, in the same order, after "patterns". */
    json_t *j = NULL;
    ck_assert_int_eq(ksf_server_metrics_json(w.srv, &j), KSF_OK);
    json_t *slow = json_object_get(json_object_get(j, "patterns"), "mx.slow");
    ck_assert_int_eq(json_integer_value(json_object_get(slow, "requests")), 1);
    ck_assert_int_eq(json_object_del(j, "patterns"), 0);
    char *text = ksft_json_text(j);
    ck_assert_str_eq(text, "{\"no_handler\":0,\"malformed\":0,\"reply_failures\":0,"
                           "\"offset_resets\":0,\"offset_reset_skipped\":0,"
                           "\"reply_refused\":0,\"refused\":0,\"expired\":2,\"shed\":1,"
                           "\"throttled\":0,\"budget_exceeded\":0,"
                           "\"late_discarded\":0,\"event_retries\":0,"
                           "\"dead_lettered\":0,\"dlq_failures\":0,"
                           "\"partition_pauses\":0}");
    free(text);
    json_decref(j);
    ksft_world_close(&w);
}
END_TEST

/* ---- the client's failures ------------------------------------------------------- */

typedef struct emit_result {
    atomic_int calls;
    ksf_err err;
    char text[KSF_ERRINFO_TEXT_SIZE];
} emit_result;

static void
on_emit(ksf_err err, const char *text, void *user)
{
    emit_result *r = user;
    r->err = err;
    snprintf(r->text, sizeof r->text, "%s", text ? text : "");
    atomic_fetch_add(&r->calls, 1);
}

KSFT_TEST(test_metrics_client_failures, 60)
{
    KSFT_NEEDS_MOCK("Produce refused by the broker");
    static const char *const topics[] = {"mf.ev", "mf.call", "mf.call.reply", NULL};
    static const ksft_handler handlers[] = {{"mf.call"}, {NULL}};
    ksft_world w;
    ksft_world_open(
        &w, &(ksft_world_spec){.topics = topics,
                               .handlers = handlers,
                               .subscribe = (const char *const[]){"mf.call", NULL}});
    rd_kafka_mock_cluster_t *mc = ksft_broker_mock(w.broker);
    /* The next Produce request (the event's) is refused for good. */
    rd_kafka_mock_push_request_errors(mc, 0, 1,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    emit_result ev = {0};
    ck_assert_int_eq(ksf_client_emit(w.cli, "mf.ev", NULL, NULL, on_emit, &ev, NULL),
                     KSF_OK);
    ck_assert_int_eq(ksft_wait_atomic(&ev.calls, 1, 10000), 1);
    ck_assert_int_eq(ev.err, KSF_EKAFKA);
    ck_assert_msg(strstr(ev.text, "event to mf.ev failed: "), "%s", ev.text);
    /* Then the request's. */
    rd_kafka_mock_push_request_errors(mc, 0, 1,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    ksft_outcome o = {0};
    ck_assert_int_eq(
        ksf_client_send(w.cli, "mf.call", NULL, NULL, ksft_outcome_cb, &o, NULL), KSF_OK);
    ksft_outcome_wait(&o, 10000);
    ck_assert_int_eq(o.err, KSF_EKAFKA);
    ck_assert_msg(strstr(o.text, "request to mf.call failed: "), "%s", o.text);
    ksft_outcome_reset(&o);
    /* The counters say what happened (librdkafka refuses the next produce to a
     * refused topic at once for a while, so nothing more is sent there). */
    KSFT_ASSERT_CLIENT_STATS(w.cli, .sent = 1, .send_failures = 1, .emit_failures = 1);
    json_t *j = NULL;
    ck_assert_int_eq(ksf_client_metrics_json(w.cli, &j), KSF_OK);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "send_failures")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "emit_failures")), 1);
    json_decref(j);
    memout m;
    FILE *f = mem_open(&m);
    ck_assert_int_eq(ksf_client_write_prometheus(w.cli, f), KSF_OK);
    char *t = mem_close(&m);
    static const want_series want[] = {{"ksf_client_send_failures_total", 1},
                                       {"ksf_client_emit_failures_total", 1},
                                       {"ksf_client_events_emitted_total", 0}};
    expect_series(t, want, sizeof want / sizeof want[0]);
    free(t);
    ksft_world_close(&w);
}
END_TEST

KSFT_MAIN("metrics")
