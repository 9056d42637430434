/*
 * bench/kafka_reset, which gives each scenario of `bench/run --broker kafka` a broker as
 * if fresh: its argument errors everywhere, and on real Kafka (KSF_TEST_KAFKA) that
 * afterwards the named topics exist with their partition counts and are empty, and that
 * a consumer group is gone with its committed offsets. The embedded broker has no admin
 * API, so there the real-Kafka case says it is skipped. The tool is run as a child
 * process (KSF_KAFKA_RESET, set by meson).
 */
#include "broker.h"

#include "proc.h"
#include "raw_kafka.h"
#include "suite.h"

#include <check.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define TOPIC_A "ksft.reset.a"
#define TOPIC_B "ksft.reset.b"
#define GROUP "ksft-reset-group"

KSFT_TEST(test_bench_reset_argument_errors, 30)
{
    static const char *const cases[][2] = {
        {"", "Usage: kafka_reset BROKERS NAME:PARTITIONS..."},
        {"127.0.0.1:1", "Usage: kafka_reset BROKERS NAME:PARTITIONS..."},
        {"127.0.0.1:1 topic", "topic: expected NAME:PARTITIONS"},
        {"127.0.0.1:1 topic:0", "topic:0: expected NAME:PARTITIONS"},
        {"127.0.0.1:1 a:1 topic:x", "topic:x: expected NAME:PARTITIONS"},
    };
    ksft_assert_usage_errors("KSF_KAFKA_RESET", cases, KSFT_NKV(cases));
}
END_TEST

static rd_kafka_t *
client(rd_kafka_type_t type, const char *brokers, const char *group)
{
    const char *const kv[][2] = {{"group.id", group}, {"enable.auto.commit", "false"}};
    return ksft_rd_new(type, ksft_rd_conf(brokers, kv, group ? 2 : 0), "test client");
}

/* The partition count of @p topic in the cluster's metadata (0: not listed). */
static int
partitions(rd_kafka_t *rk, const char *topic)
{
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    ck_assert_msg(!e, "metadata of %s: %s", topic, rd_kafka_err2str(e));
    int n = md->topic_cnt == 1 && !md->topics[0].err ? md->topics[0].partition_cnt : 0;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return n;
}

static void
assert_watermarks(rd_kafka_t *rk, const char *topic, int partition, int64_t want_hi)
{
    int64_t lo = -1, hi = -1;
    rd_kafka_resp_err_t e =
        rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi, 10000);
    ck_assert_msg(!e, "watermarks of %s[%d]: %s", topic, partition, rd_kafka_err2str(e));
    ck_assert_msg(lo == 0 && hi == want_hi, "%s[%d]: offsets %lld..%lld, want 0..%lld",
                  topic, partition, (long long)lo, (long long)hi, (long long)want_hi);
}

/* The offset GROUP has committed for TOPIC_A [1]. */
static int64_t
committed(const char *brokers)
{
    rd_kafka_t *c = client(RD_KAFKA_CONSUMER, brokers, GROUP);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, TOPIC_A, 1);
    rd_kafka_resp_err_t e = rd_kafka_committed(c, l, 10000);
    ck_assert_msg(!e, "committed offsets of %s: %s", GROUP, rd_kafka_err2str(e));
    int64_t off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(c);
    return off;
}

/* True when the cluster lists consumer group @p name. */
static bool
group_listed(rd_kafka_t *rk, const char *name)
{
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *o =
        rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS);
    rd_kafka_ListConsumerGroups(rk, o, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    ck_assert_msg(ev && !rd_kafka_event_error(ev), "listing consumer groups: %s",
                  ev ? rd_kafka_event_error_string(ev) : "no answer in 30 s");
    size_t n = 0;
    const rd_kafka_ConsumerGroupListing_t **g = rd_kafka_ListConsumerGroups_result_valid(
        rd_kafka_event_ListConsumerGroups_result(ev), &n);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        found = found || !strcmp(rd_kafka_ConsumerGroupListing_group_id(g[i]), name);
    }
    rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_queue_destroy(q);
    return found;
}

KSFT_TEST(test_bench_reset_on_kafka, 120)
{
    if (!ksft_real_kafka()) {
        printf("%s: skipped: needs real Kafka (KSF_TEST_KAFKA); the embedded broker has "
               "no admin API\n",
               __func__);
        return;
    }
    ksft_broker *b = ksft_broker_start();
    const char *addr = ksft_broker_address(b);
    char args[512], out[1024];
    snprintf(args, sizeof args, "%s " TOPIC_A ":3 " TOPIC_B ":1", addr);

    /* From nothing: both topics are created. */
    ck_assert_int_eq(
        ksft_run_tool("KSF_KAFKA_RESET", "", args, KSFT_STDOUT, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "2 topic(s) created empty"), "first reset said \"%s\"",
                  out);

    /* Fill TOPIC_A [1] with 5 messages and commit offset 3 for GROUP there. */
    rd_kafka_t *p = client(RD_KAFKA_PRODUCER, addr, NULL);
    static char value[] = "x";
    for (int i = 0; i < 5; i++) {
        rd_kafka_resp_err_t pe =
            rd_kafka_producev(p, RD_KAFKA_V_TOPIC(TOPIC_A), RD_KAFKA_V_PARTITION(1),
                              RD_KAFKA_V_VALUE(value, 1), RD_KAFKA_V_END);
        ck_assert_msg(!pe, "produce: %s", rd_kafka_err2str(pe));
    }
    ck_assert_int_eq(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_watermarks(p, TOPIC_A, 1, 5);
    rd_kafka_t *c = client(RD_KAFKA_CONSUMER, addr, GROUP);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, TOPIC_A, 1)->offset = 3;
    rd_kafka_resp_err_t e = rd_kafka_commit(c, l, 0);
    ck_assert_msg(!e, "commit: %s", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(c);
    ck_assert_int_eq(committed(addr), 3);
    ck_assert_msg(group_listed(p, GROUP), "group %s not listed after its commit", GROUP);

    /* The reset deletes the group (at least it) and leaves the topics empty. */
    ck_assert_int_eq(
        ksft_run_tool("KSF_KAFKA_RESET", "", args, KSFT_STDOUT, out, sizeof out), 0);
    int groups = -1;
    ck_assert_msg(sscanf(out, "reset: %d consumer group(s) deleted", &groups) == 1 &&
                      groups >= 1,
                  "second reset said \"%s\", want at least 1 group deleted", out);
    ck_assert_int_eq(partitions(p, TOPIC_A), 3);
    ck_assert_int_eq(partitions(p, TOPIC_B), 1);
    for (int i = 0; i < 3; i++) {
        assert_watermarks(p, TOPIC_A, i, 0);
    }
    assert_watermarks(p, TOPIC_B, 0, 0);
    ck_assert_msg(!group_listed(p, GROUP), "group %s still listed after the reset",
                  GROUP);
    ck_assert_int_eq(committed(addr), RD_KAFKA_OFFSET_INVALID);
    rd_kafka_destroy(p);
    ksft_broker_stop(b);
}
END_TEST

KSFT_MAIN("bench_reset")
