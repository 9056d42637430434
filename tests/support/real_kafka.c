#include "real_kafka.h"
#include "broker.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ADMIN_TIMEOUT_MS 30000
/* How often topics still listed after their deletion are deleted again, and how many
 * times a topic found with the wrong partition count is deleted and created again. */
#define RE_DELETE_MS 5000
#define RECREATE_TRIES 3

static const struct rd_kafka_metadata *
metadata(rd_kafka_t *rk, rd_kafka_topic_t *only)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, only ? 0 : 1, only, &md, 10000);
    ck_assert_msg(!e, "real Kafka at %s: metadata: %s (is the broker up?)",
                  ksft_real_kafka(), rd_kafka_err2str(e));
    return md;
}

static void
pause_ms(int ms)
{
    nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

int
ksft_kafka_broker_count(rd_kafka_t *rk)
{
    const struct rd_kafka_metadata *md = metadata(rk, NULL);
    int n = md->broker_cnt;
    rd_kafka_metadata_destroy(md);
    return n;
}

/* Run one admin request already queued on @p q and return its event (the caller
 * destroys it). */
static rd_kafka_event_t *
admin_result(rd_kafka_queue_t *q, const char *what)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ADMIN_TIMEOUT_MS + 5000);
    ck_assert_msg(ev != NULL, "real Kafka: %s: no answer within %d ms", what,
                  ADMIN_TIMEOUT_MS + 5000);
    ck_assert_msg(!rd_kafka_event_error(ev), "real Kafka: %s: %s", what,
                  rd_kafka_event_error_string(ev));
    return ev;
}

static rd_kafka_AdminOptions_t *
admin_options(rd_kafka_t *rk, rd_kafka_admin_op_t op)
{
    char err[256];
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, op);
    rd_kafka_AdminOptions_set_operation_timeout(o, ADMIN_TIMEOUT_MS, err, sizeof err);
    rd_kafka_AdminOptions_set_request_timeout(o, ADMIN_TIMEOUT_MS, err, sizeof err);
    return o;
}

/* The user topics in the metadata: names not starting with "__". */
static size_t
user_topics(rd_kafka_t *rk, char ***names)
{
    const struct rd_kafka_metadata *md = metadata(rk, NULL);
    *names = calloc((size_t)md->topic_cnt + 1, sizeof **names);
    size_t n = 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strncmp(md->topics[i].topic, "__", 2) != 0) {
            (*names)[n++] = strdup(md->topics[i].topic);
        }
    }
    rd_kafka_metadata_destroy(md);
    return n;
}

static void
free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

/* How many partitions @p topic has, all with a leader (-1: not listed; -2: listed but
 * some partition has no leader or an error yet). From a metadata request for ALL
 * topics: a request naming a topic would make the broker auto-create it
 * (auto.create.topics.enable, with num.partitions) if it does not exist yet. */
static int
topic_partitions(rd_kafka_t *rk, const char *topic)
{
    const struct rd_kafka_metadata *md = metadata(rk, NULL);
    int found = -1;
    for (int t = 0; t < md->topic_cnt && found == -1; t++) {
        const struct rd_kafka_metadata_topic *mt = &md->topics[t];
        if (strcmp(mt->topic, topic) != 0) {
            continue;
        }
        found = mt->err ? -2 : mt->partition_cnt;
        for (int i = 0; found >= 0 && i < mt->partition_cnt; i++) {
            if (mt->partitions[i].leader < 0 || mt->partitions[i].err) {
                found = -2;
            }
        }
    }
    rd_kafka_metadata_destroy(md);
    return found;
}

static void
delete_topics(rd_kafka_t *rk, char **names, size_t n, const char *what)
{
    rd_kafka_DeleteTopic_t **del = calloc(n, sizeof *del);
    for (size_t i = 0; i < n; i++) {
        del[i] = rd_kafka_DeleteTopic_new(names[i]);
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *o = admin_options(rk, RD_KAFKA_ADMIN_OP_DELETETOPICS);
    rd_kafka_DeleteTopics(rk, del, n, o, q);
    rd_kafka_event_t *ev = admin_result(q, what);
    size_t nres = 0;
    const rd_kafka_topic_result_t **res = rd_kafka_DeleteTopics_result_topics(
        rd_kafka_event_DeleteTopics_result(ev), &nres);
    for (size_t i = 0; i < nres; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
        ck_assert_msg(!e || e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
                      "real Kafka: deleting topic %s: %s",
                      rd_kafka_topic_result_name(res[i]), rd_kafka_err2str(e));
    }
    rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_queue_destroy(q);
    rd_kafka_DeleteTopic_destroy_array(del, n);
    free(del);
}

void
ksft_kafka_delete_user_topics(rd_kafka_t *rk)
{
    char **names;
    size_t n = user_topics(rk, &names);
    if (n == 0) {
        free(names);
        return;
    }
    delete_topics(rk, names, n, "deleting the earlier cases' topics");
    free_names(names, n);
    /* Deletion completes in the controller; wait until no broker lists them. A topic
     * listed again after a while was re-created since (a metadata request naming it,
     * from a client that had not seen the deletion yet, auto-creates it): delete what
     * is listed again every RE_DELETE_MS. */
    int64_t deadline = ksft_now_ms() + ADMIN_TIMEOUT_MS;
    int64_t re_delete = ksft_now_ms() + RE_DELETE_MS;
    for (;;) {
        size_t left = user_topics(rk, &names);
        if (left == 0) {
            free(names);
            return;
        }
        if (ksft_now_ms() >= re_delete && ksft_now_ms() < deadline) {
            fprintf(stderr,
                    "real Kafka: %zu topic(s) listed again after deletion (first: %s); "
                    "deleting them again\n",
                    left, names[0]);
            delete_topics(rk, names, left, "deleting re-created topics");
            re_delete = ksft_now_ms() + RE_DELETE_MS;
        }
        if (ksft_now_ms() >= deadline) {
            char listed[512] = "";
            for (size_t i = 0, used = 0; i < left && used < sizeof listed; i++) {
                int w = snprintf(listed + used, sizeof listed - used, "%s%s",
                                 i ? ", " : "", names[i]);
                used += w > 0 ? (size_t)w : 0;
            }
            free_names(names, left);
            ck_abort_msg("real Kafka: %zu deleted topic(s) still listed after %d ms: %s",
                         left, ADMIN_TIMEOUT_MS, listed);
        }
        free_names(names, left);
        pause_ms(50);
    }
}

/* Send one CreateTopics for @p topic; an existing topic is not an error here. */
static void
create_once(rd_kafka_t *rk, const char *topic, int partitions)
{
    char err[256];
    int brokers = ksft_kafka_broker_count(rk);
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(
        topic, partitions, brokers < 3 ? brokers : 3, err, sizeof err);
    ck_assert_msg(nt != NULL, "topic %s: %s", topic, err);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *o = admin_options(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_CreateTopics(rk, &nt, 1, o, q);
    rd_kafka_event_t *ev = admin_result(q, "creating a topic");
    size_t nres = 0;
    const rd_kafka_topic_result_t **res = rd_kafka_CreateTopics_result_topics(
        rd_kafka_event_CreateTopics_result(ev), &nres);
    rd_kafka_resp_err_t e =
        nres == 1 ? rd_kafka_topic_result_error(res[0]) : RD_KAFKA_RESP_ERR__BAD_MSG;
    ck_assert_msg(!e || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS,
                  "real Kafka: creating topic %s (%d partitions): %s", topic, partitions,
                  rd_kafka_err2str(e));
    rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
}

void
ksft_kafka_create_topic(rd_kafka_t *rk, const char *topic, int partitions)
{
    create_once(rk, topic, partitions);
    /* A topic listed with another partition count was auto-created (num.partitions)
     * by a metadata request naming it before our CreateTopics: delete it and create
     * it again, at most RECREATE_TRIES times, saying so. */
    int64_t deadline = ksft_now_ms() + ADMIN_TIMEOUT_MS;
    int tries = 0;
    for (;;) {
        int have = topic_partitions(rk, topic);
        if (have == partitions) {
            return;
        }
        ck_assert_msg(
            ksft_now_ms() < deadline,
            "real Kafka: topic %s has not %d partitions with leaders after %d ms "
            "(listed with %d; -1: not listed, -2: partitions without a leader)",
            topic, partitions, ADMIN_TIMEOUT_MS, have);
        if (have > 0 && tries < RECREATE_TRIES) {
            tries++;
            fprintf(stderr,
                    "real Kafka: topic %s exists with %d partitions, not %d "
                    "(auto-created by someone's metadata request); creating it again\n",
                    topic, have, partitions);
            char *name = (char *)topic;
            delete_topics(rk, &name, 1, "deleting an auto-created topic");
            while (topic_partitions(rk, topic) != -1) {
                ck_assert_msg(ksft_now_ms() < deadline,
                              "real Kafka: topic %s still listed after its deletion",
                              topic);
                pause_ms(50);
            }
            create_once(rk, topic, partitions);
            continue;
        }
        pause_ms(50);
    }
}
