/*
 * bench/run --broker kafka runs every scenario on one long-lived Kafka broker (a fresh
 * JVM per scenario would measure the broker's JIT warm-up, see docs/benchmarks.md).
 * This gives each scenario what a fresh broker would: no consumer groups, and the
 * benchmark's topics empty, with every partition led.
 *
 *   kafka_reset BROKERS NAME:PARTITIONS...
 *
 * deletes every consumer group (all of them are the benchmark's: the broker is its
 * own), deletes the named topics, waits until no broker lists them, creates them again
 * and waits until every partition has a leader; prints "reset: ..." and exits 0, or
 * names what failed and exits 1. Bounded: each step gives up after 30 s.
 */
#include "../tools/measure.h"

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STEP_MS 30000
#define MAX_TOPICS 16

typedef struct topic {
    char name[256];
    int partitions;
} topic;

static void
die(const char *what, const char *why)
{
    fprintf(stderr, "kafka_reset: %s: %s\n", what, why);
    exit(1);
}

static rd_kafka_AdminOptions_t *
options(rd_kafka_t *rk, rd_kafka_admin_op_t op)
{
    char err[256];
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, op);
    rd_kafka_AdminOptions_set_request_timeout(o, STEP_MS, err, sizeof err);
    if (op == RD_KAFKA_ADMIN_OP_DELETETOPICS || op == RD_KAFKA_ADMIN_OP_CREATETOPICS) {
        rd_kafka_AdminOptions_set_operation_timeout(o, STEP_MS, err, sizeof err);
    }
    return o;
}

/* Wait for the one answer queued on @p q; the caller destroys it. */
static rd_kafka_event_t *
answer(rd_kafka_queue_t *q, const char *what)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, STEP_MS + 5000);
    if (!ev) {
        die(what, "no answer from the broker within 35 s");
    }
    if (rd_kafka_event_error(ev)) {
        die(what, rd_kafka_event_error_string(ev));
    }
    return ev;
}

/* Delete every consumer group. A group that still has members (a process of the last
 * scenario that did not leave) cannot be deleted: say so, as the next scenario's
 * rebalance then waits for that member's session to time out. */
static size_t
delete_groups(rd_kafka_t *rk)
{
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *o = options(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS);
    rd_kafka_ListConsumerGroups(rk, o, q);
    rd_kafka_event_t *ev = answer(q, "listing consumer groups");
    const rd_kafka_ListConsumerGroups_result_t *res =
        rd_kafka_event_ListConsumerGroups_result(ev);
    size_t n = 0;
    const rd_kafka_ConsumerGroupListing_t **groups =
        rd_kafka_ListConsumerGroups_result_valid(res, &n);
    rd_kafka_DeleteGroup_t **del = calloc(n + 1, sizeof *del);
    for (size_t i = 0; i < n; i++) {
        del[i] =
            rd_kafka_DeleteGroup_new(rd_kafka_ConsumerGroupListing_group_id(groups[i]));
    }
    rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(o);
    if (n > 0) {
        o = options(rk, RD_KAFKA_ADMIN_OP_DELETEGROUPS);
        rd_kafka_DeleteGroups(rk, del, n, o, q);
        ev = answer(q, "deleting consumer groups");
        size_t nres = 0;
        const rd_kafka_group_result_t **gr = rd_kafka_DeleteGroups_result_groups(
            rd_kafka_event_DeleteGroups_result(ev), &nres);
        for (size_t i = 0; i < nres; i++) {
            const rd_kafka_error_t *e = rd_kafka_group_result_error(gr[i]);
            if (e && rd_kafka_error_code(e) != RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND) {
                fprintf(stderr, "kafka_reset: warning: group %s not deleted: %s\n",
                        rd_kafka_group_result_name(gr[i]), rd_kafka_error_string(e));
            }
        }
        rd_kafka_event_destroy(ev);
        rd_kafka_AdminOptions_destroy(o);
        rd_kafka_DeleteGroup_destroy_array(del, n);
    }
    free(del);
    rd_kafka_queue_destroy(q);
    return n;
}

/* How many of @p t are listed (with_leaders: and have all their partitions led). */
static int
listed(rd_kafka_t *rk, const topic *t, int nt, bool with_leaders)
{
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, 10000);
    if (e) {
        die("metadata", rd_kafka_err2str(e));
    }
    int found = 0;
    for (int k = 0; k < nt; k++) {
        for (int i = 0; i < md->topic_cnt; i++) {
            const struct rd_kafka_metadata_topic *mt = &md->topics[i];
            if (strcmp(mt->topic, t[k].name) ||
                mt->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
                continue;
            }
            bool ok = !with_leaders || (!mt->err && mt->partition_cnt == t[k].partitions);
            for (int p = 0; ok && p < mt->partition_cnt; p++) {
                ok = mt->partitions[p].leader >= 0 && !mt->partitions[p].err;
            }
            found += ok;
        }
    }
    rd_kafka_metadata_destroy(md);
    return found;
}

static void
wait_listed(rd_kafka_t *rk, const topic *t, int nt, int want, const char *what)
{
    for (int64_t deadline = ksf_tool_mono_ms() + STEP_MS;
         listed(rk, t, nt, want > 0) != want;) {
        if (ksf_tool_mono_ms() > deadline) {
            die(what, "not done after 30 s");
        }
        ksf_tool_sleep_ms(20);
    }
}

static void
delete_topics(rd_kafka_t *rk, const topic *t, int nt)
{
    rd_kafka_DeleteTopic_t *del[MAX_TOPICS];
    for (int i = 0; i < nt; i++) {
        del[i] = rd_kafka_DeleteTopic_new(t[i].name);
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *o = options(rk, RD_KAFKA_ADMIN_OP_DELETETOPICS);
    rd_kafka_DeleteTopics(rk, del, (size_t)nt, o, q);
    rd_kafka_event_t *ev = answer(q, "deleting topics");
    size_t n = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
        if (e && e != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            die(rd_kafka_topic_result_name(res[i]), rd_kafka_err2str(e));
        }
    }
    rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_queue_destroy(q);
    rd_kafka_DeleteTopic_destroy_array(del, (size_t)nt);
    wait_listed(rk, t, nt, 0, "deleted topics still listed");
}

/* Create @p t; true when done, false while the broker still finishes its deletion. */
static bool
create_topic(rd_kafka_t *rk, const topic *t)
{
    char err[256];
    rd_kafka_NewTopic_t *nt =
        rd_kafka_NewTopic_new(t->name, t->partitions, 1, err, sizeof err);
    if (!nt) {
        die(t->name, err);
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *o = options(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_CreateTopics(rk, &nt, 1, o, q);
    rd_kafka_event_t *ev = answer(q, "creating topics");
    size_t n = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    rd_kafka_resp_err_t e =
        n == 1 ? rd_kafka_topic_result_error(res[0]) : RD_KAFKA_RESP_ERR__BAD_MSG;
    if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        die(t->name, rd_kafka_err2str(e));
    }
    rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return !e;
}

int
main(int argc, char **argv)
{
    topic t[MAX_TOPICS];
    int nt = argc - 2;
    if (argc < 3 || nt > MAX_TOPICS) {
        fprintf(stderr, "Usage: kafka_reset BROKERS NAME:PARTITIONS... (at most %d)\n",
                MAX_TOPICS);
        return 2;
    }
    for (int i = 0; i < nt; i++) {
        const char *colon = strrchr(argv[i + 2], ':');
        t[i].partitions = colon ? atoi(colon + 1) : 0;
        if (!colon || t[i].partitions < 1 || colon - argv[i + 2] >= 256) {
            fprintf(stderr, "kafka_reset: %s: expected NAME:PARTITIONS\n", argv[i + 2]);
            return 2;
        }
        snprintf(t[i].name, sizeof t[i].name, "%.*s", (int)(colon - argv[i + 2]),
                 argv[i + 2]);
    }
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof err)) {
        die("bootstrap.servers", err);
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        die("rd_kafka_new", err);
    }
    size_t groups = delete_groups(rk);
    delete_topics(rk, t, nt);
    for (int i = 0; i < nt; i++) {
        /* Deleted and no longer listed, yet "already exists": something named it in a
         * Metadata request in between, which auto-creates it (seen once in a 3-round
         * run on Kafka 4.4). Delete it again rather than wait for nothing. */
        for (int64_t deadline = ksf_tool_mono_ms() + STEP_MS; !create_topic(rk, &t[i]);) {
            if (ksf_tool_mono_ms() > deadline) {
                die(t[i].name, "still exists 30 s after its deletion");
            }
            fprintf(stderr,
                    "kafka_reset: warning: %s was created again after its "
                    "deletion; deleting it once more\n",
                    t[i].name);
            ksf_tool_sleep_ms(50);
            delete_topics(rk, &t[i], 1);
        }
    }
    wait_listed(rk, t, nt, nt, "created topics without a leader for every partition");
    rd_kafka_destroy(rk);
    printf("reset: %zu consumer group(s) deleted, %d topic(s) created empty\n", groups,
           nt);
    return 0;
}
