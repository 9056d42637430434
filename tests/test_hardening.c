/*
 * Hardening (issue 17): what a server does when the broker deleted requests it had not
 * read yet (an out-of-range committed offset), and what a caller can make it do with
 * the reply topic it names.
 */
#include "fixture.h"
#include "raw_kafka.h"
#include "service.h"

#include "suite.h"

#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GROUP "nestjs-group-server"
#define WAIT_MS 20000

/* ---- helpers --------------------------------------------------------------------- */

static rd_kafka_t *
admin_handle(const char *brokers)
{
    return ksft_rd_new(RD_KAFKA_PRODUCER, ksft_rd_conf(brokers, NULL, 0), "admin");
}

static void
watermarks(rd_kafka_t *rk, const char *topic, int64_t *lo, int64_t *hi)
{
    rd_kafka_resp_err_t err =
        rd_kafka_query_watermark_offsets(rk, topic, 0, lo, hi, ksft_scaled_ms(10000));
    ck_assert_msg(!err, "watermarks of %s: %s", topic, rd_kafka_err2str(err));
}

/* Real Kafka: delete @p topic [0] below @p before, as retention would. */
static void
delete_records(rd_kafka_t *rk, const char *topic, int64_t before)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0)->offset = before;
    rd_kafka_DeleteRecords_t *d = rd_kafka_DeleteRecords_new(l);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteRecords(rk, &d, 1, NULL, q);
    rd_kafka_DeleteRecords_destroy(d);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ksft_scaled_ms(20000));
    ck_assert_msg(ev != NULL, "DeleteRecords: no answer");
    ck_assert_msg(!rd_kafka_event_error(ev), "DeleteRecords: %s",
                  rd_kafka_event_error_string(ev));
    const rd_kafka_topic_partition_list_t *r =
        rd_kafka_DeleteRecords_result_offsets(rd_kafka_event_DeleteRecords_result(ev));
    ck_assert_int_eq(r->cnt, 1);
    ck_assert_msg(!r->elems[0].err, "DeleteRecords %s: %s", topic,
                  rd_kafka_err2str(r->elems[0].err));
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
}

static void
send_requests(ksft_producer *p, const char *topic, const char *reply_topic, int from,
              int n, size_t pad)
{
    char *value = malloc(pad + 64);
    ck_assert_ptr_nonnull(value);
    for (int i = from; i < from + n; i++) {
        char id[32];
        snprintf(id, sizeof id, "c-%d", i);
        int len = snprintf(value, pad + 64, "{\"i\":%d,\"pad\":\"", i);
        memset(value + len, 'x', pad);
        memcpy(value + len + pad, "\"}", 2);
        ksft_send_request(p, topic, 0, id, reply_topic, 0, value, (size_t)len + pad + 2,
                          false);
    }
    free(value);
    ksft_producer_flush(p, ksft_scaled_ms(60000));
}

static ksf_server_stats
stats_of(ksf_server *srv)
{
    ksf_server_stats s;
    ksf_server_get_stats(srv, &s);
    return s;
}

/* ---- offsets out of range -----------------------------------------------------------
 */

#define BACKLOG_TOPIC "h.backlog"
#define BACKLOG_N 15000

/*
 * A server answers 10 requests and stops; 15,000 more arrive while it is down, and the
 * broker deletes the oldest of them (the embedded broker's 5 MB per-partition cap; on
 * real Kafka a DeleteRecords, as retention would) including the committed offset. The
 * restarted server must answer every request still on the broker, and count and log
 * what was deleted; before, it jumped to the end and answered none.
 */
KSFT_TEST(test_hardening_backlog_restart, 240)
{
    static const char *const topics[] = {BACKLOG_TOPIC, BACKLOG_TOPIC ".reply", NULL};
    ksft_world w; /* the server starts after the first requests */
    ksft_world_open(&w, &(ksft_world_spec){.topics = topics, .no_client = true});
    const char *brokers = ksft_broker_address(w.broker);
    ksft_producer *p = ksft_producer_new(brokers);

    /* A new group starts at the end: these 5 are history, never handled. */
    send_requests(p, BACKLOG_TOPIC, BACKLOG_TOPIC ".reply", 0, 5, 10);
    static const ksft_handler echo[] = {{BACKLOG_TOPIC}, {NULL}};
    ksft_world_serve(&w, ksft_world_server(&w, echo));
    send_requests(p, BACKLOG_TOPIC, BACKLOG_TOPIC ".reply", 5, 10, 10);
    KSFT_WAIT_SERVER_STAT(w.srv, replies, 10, WAIT_MS);
    ck_assert_int_eq(ksft_wait_committed(brokers, GROUP, BACKLOG_TOPIC, 1, 15, WAIT_MS),
                     15);
    ksf_server_stats st = stats_of(w.srv);
    ck_assert_uint_eq(st.requests, 10);
    ck_assert_uint_eq(st.offset_resets, 0);
    ksft_world_stop_server(&w);

    /* The backlog: ~7.5 MB, past the embedded broker's 5 MB cap. */
    send_requests(p, BACKLOG_TOPIC, BACKLOG_TOPIC ".reply", 15, BACKLOG_N, 400);
    rd_kafka_t *admin = admin_handle(brokers);
    if (!ksft_broker_is_mock(w.broker)) {
        delete_records(admin, BACKLOG_TOPIC, 15 + 4321);
    }
    int64_t lo, hi;
    watermarks(admin, BACKLOG_TOPIC, &lo, &hi);
    ck_assert_int_eq(hi, 15 + BACKLOG_N);
    ck_assert_int_gt(lo, 15); /* the committed offset is gone */
    ck_assert_int_lt(lo, hi - 1000);
    uint64_t waiting = (uint64_t)(hi - lo);

    ksft_world_serve(&w, ksft_world_server(&w, echo)); /* a restart */
    st = KSFT_WAIT_SERVER_STAT(w.srv, replies, waiting, 120000);
    ck_assert_uint_eq(st.requests, waiting);
    ck_assert_uint_eq(st.replies, waiting);
    ck_assert_uint_eq(st.expired, 0);
    ck_assert_uint_eq(st.offset_resets, 1);
    ck_assert_uint_eq(st.offset_reset_skipped, (uint64_t)(lo - 15));
    /* The same numbers in the metrics. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_int_eq(ksf_server_write_prometheus(w.srv, f), KSF_OK);
    fclose(f);
    char want[128];
    ck_assert_ptr_nonnull(strstr(text, "\nksf_server_offset_resets_total 1\n"));
    snprintf(want, sizeof want, "\nksf_server_offset_reset_skipped_total %lld\n",
             (long long)(lo - 15));
    ck_assert_msg(strstr(text, want), "no \"%s\" in:\n%s", want + 1, text);
    free(text);
    json_t *j = NULL;
    ck_assert_int_eq(ksf_server_metrics_json(w.srv, &j), KSF_OK);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "offset_resets")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "offset_reset_skipped")),
                     lo - 15);
    json_decref(j);
    ck_assert_int_eq(ksft_wait_committed(brokers, GROUP, BACKLOG_TOPIC, 1, hi, WAIT_MS),
                     hi);
    rd_kafka_destroy(admin);
    ksft_producer_destroy(p);
    ksft_world_close(&w);
}
END_TEST

/* ---- the reply-topic policy -------------------------------------------------------- */

#define ECHO "h.echo"

/* One request on ECHO [0] answered on @p reply_topic [0]. */
static void
request_to(ksft_producer *p, const char *reply_topic, int i)
{
    char id[32];
    snprintf(id, sizeof id, "r-%d", i);
    ksft_send_request(p, ECHO, 0, id, reply_topic, 0, "{\"attack\":true}", 15, true);
}

/* Counts the server's "reply topic refused" lines and the refusals its count lines say
 * were held back (the log limiter's, docs/logging.md). */
typedef struct refusals {
    atomic_int lines;
    atomic_int held;
} refusals;

static void
count_refusals(void *user, ksf_log_level level, const char *component,
               const char *message)
{
    (void)level, (void)component;
    refusals *r = user;
    unsigned long long n = 0;
    if (sscanf(message, "reply topic refused: %llu similar", &n) == 1) {
        atomic_fetch_add(&r->held, (int)n);
    } else if (!strncmp(message, "reply topic refused: ", 21)) {
        atomic_fetch_add(&r->lines, 1);
    }
}

/*
 * A caller names the reply topic. Before, echo_server wrote the caller's JSON into any
 * legal topic it was given: another service's event topic, a dead-letter topic, its own
 * request topic, __consumer_offsets. Now only <pattern>.reply and server.reply.topics
 * are answered, never internal or the server's own topics, and the distinct names a
 * glob admits are capped; the rest are counted, not handled, and committed past.
 */
KSFT_TEST(test_hardening_reply_policy, 120)
{
    static const char *const allowed[] = {ECHO ".reply", "spring.replies", "team-a",
                                          "team-b",      "team-c",         NULL};
    static const char *const refused[] = {
        "team-d",             /* past server.reply.topics.max (3) */
        "__consumer_offsets", /* Kafka's own */
        ECHO,                 /* the server's request topic (matches h.*) */
        "h.ev",               /* its event topic */
        ECHO ".dlq",          /* its dead-letter topic */
        "hero.dragon.killed", /* someone else's event topic */
    };
    static const char *const topics[] = {ECHO, "h.ev", "hero.dragon.killed", ECHO ".dlq",
                                         NULL};
    static const char *const settings[][2] = {
        {"server.reply.topics", "spring.replies, team-*,h.*"},
        {"server.reply.topics.max", "3"}};
    static const ksft_handler echo[] = {{ECHO}, {"h.ev"}, {NULL}};
    ksft_world w;
    ksft_world_open(
        &w,
        &(ksft_world_spec){.topics = topics, KSFT_SETTINGS(settings), .no_client = true});
    ksft_world_topics(&w, allowed);
    refusals seen = {0};
    ksf_config_set_log(w.cfg, count_refusals, &seen, KSF_LOG_WARNING);
    ksft_world_serve(&w, ksft_world_server(&w, echo));
    const char *brokers = ksft_broker_address(w.broker);
    ksft_producer *p = ksft_producer_new(brokers);

    /* The allowed ones first, so that the glob's three admissions are team-a..c. */
    for (size_t i = 0; allowed[i]; i++) {
        request_to(p, allowed[i], (int)i);
    }
    KSFT_WAIT_SERVER_STAT(w.srv, replies, 5, WAIT_MS);
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        request_to(p, refused[i], 10 + (int)i);
    }
    request_to(p, "team-a", 20); /* admitted before: still answered */
    ksf_server_stats st = KSFT_WAIT_SERVER_STAT(w.srv, replies, 6, WAIT_MS);
    /* A burst of 30 more: the log keeps at most 10 lines a second of them. */
    for (int i = 0; i < 30; i++) {
        char id[32], topic[32];
        snprintf(id, sizeof id, "burst-%d", i);
        snprintf(topic, sizeof topic, "evil.%d", i);
        ksft_send_request(p, ECHO, 0, id, topic, 0, "{}", 2, false);
    }
    ksft_producer_flush(p, ksft_scaled_ms(WAIT_MS));
    ck_assert_int_eq(ksft_wait_committed(brokers, GROUP, ECHO, 1, 42, WAIT_MS), 42);
    st = stats_of(w.srv);
    ck_assert_uint_eq(st.replies, 6);
    ck_assert_uint_eq(st.requests, 6);
    ck_assert_uint_eq(st.reply_refused, 36);
    ck_assert_uint_eq(st.reply_failures, 0);
    ck_assert_uint_eq(st.no_handler, 0);

    /* Nothing was written where it was refused. */
    rd_kafka_t *admin = admin_handle(brokers);
    int64_t lo, hi;
    watermarks(admin, ECHO, &lo, &hi);
    ck_assert_int_eq(hi, 42); /* the requests only */
    const char *const untouched[] = {"h.ev", ECHO ".dlq", "hero.dragon.killed", "team-d"};
    for (size_t i = 0; i < sizeof untouched / sizeof *untouched; i++) {
        if (!strcmp(untouched[i], "team-d") && !ksft_broker_is_mock(w.broker)) {
            continue; /* never created on real Kafka: no watermarks to read */
        }
        watermarks(admin, untouched[i], &lo, &hi);
        ck_assert_msg(hi == 0, "%s has %lld message(s)", untouched[i], (long long)hi);
    }
    watermarks(admin, "team-a", &lo, &hi);
    ck_assert_int_eq(hi, 2);
    rd_kafka_destroy(admin);

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_int_eq(ksf_server_write_prometheus(w.srv, f), KSF_OK);
    fclose(f);
    ck_assert_msg(strstr(text, "\nksf_server_reply_refused_total 36\n"), "%s", text);
    free(text);
    ksft_world_stop_server(&w);
    /* Every refusal is either a line or in a count line (the last at stop). */
    ck_assert_int_eq(atomic_load(&seen.lines) + atomic_load(&seen.held), 36);
    ck_assert_int_lt(atomic_load(&seen.lines), 36);
    ck_assert_int_ge(atomic_load(&seen.lines), 10);
    ksft_producer_destroy(p);
    ksft_world_close(&w);
}
END_TEST

/* server.reply.topics is checked when set. */
KSFT_TEST(test_hardening_reply_topics_config, 10)
{
#define GLOB_ONLY_LAST "' that is not last; only prefix globs (\"prefix*\") are supported"
#define EMPTY_ENTRY                                                                      \
    "server.reply.topics: an empty entry; write a comma list of topic names and "        \
    "prefix* "                                                                           \
    "globs, e.g. \"spring.replies,team-*\""
    static const char *const bad[][2] = {
        {"a*b", "server.reply.topics: entry \"a*b\" has a '*" GLOB_ONLY_LAST},
        {"x,,y", EMPTY_ENTRY},
        {"bad topic",
         "server.reply.topics: pattern \"bad topic\" has character ' ' (byte "
         "0x20) at 3; Kafka topic names allow only A-Z a-z 0-9 . _ -"},
        {"*x", "server.reply.topics: entry \"*x\" has a '*" GLOB_ONLY_LAST},
        {",", EMPTY_ENTRY}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ksft_assert_config_refuses("server.reply.topics", bad[i][0], KSF_EINVAL,
                                   bad[i][1]);
    }
    ksft_assert_config_accepts("server.reply.topics", "a.b, c-*,*", NULL);
    ksft_assert_config_refuses(
        "server.reply.topics.max", "0", KSF_EINVAL,
        "server.reply.topics.max \"0\": expected an integer from 1 "
        "to 1000000");
#undef GLOB_ONLY_LAST
#undef EMPTY_ENTRY
}
END_TEST

KSFT_MAIN("hardening")
