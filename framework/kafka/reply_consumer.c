/*
 * The client's reply consumer (reply_consumer.h) on librdkafka: a consumer handle that
 * is never subscribed (rd_kafka_incremental_assign at explicit offsets), with its
 * consumer queue kept for polling and for waking the poller.
 */
#include "kafka/reply_consumer.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "kafka/consumer.h"
#include "kafka/kafka.h"

#include <string.h>

/* Messages taken from the queue at once after a poll returned one. */
#define BATCH 32
#define HDRS_KEEP 64 /* header views kept between polls, at most */

struct ksfi_reply_consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q; /* the consumer queue: yielded to wake the poller */
    const ksfi_logger *log;
    /* What the last poll took beyond its first message, handed out by the next polls
     * before the queue is asked again (the poller's thread only). */
    rd_kafka_message_t *batch[BATCH];
    size_t nbatch, next;
    ksfi_header *hdrs; /* the current event's header views, reused by every poll */
    size_t hdrs_cap;
};

ksf_err
ksfi_reply_consumer_new(const ksf_config *cfg, const char *client_id,
                        const char *group_id, const ksfi_logger *log,
                        ksfi_reply_consumer **out, ksf_errinfo *ei)
{
    char err[256];
    rd_kafka_conf_t *conf = NULL;
    *out = NULL;
    ksfi_reply_consumer *rc = ksfi_calloc(1, sizeof *rc);
    if (!rc) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    rc->log = log;
    ksf_err e = ksfi_kafka_conf(cfg, KSF_KAFKA_CONSUMER, client_id, group_id, &conf, ei);
    if (!e) {
        /* Reply partitions are assigned by hand at explicit offsets: nothing to commit.
         */
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
        /* End-of-partition events tell where fetching stands (seek after resume) and
         * when a partition's first fetch is done (connect). */
        rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err);
        /* ksfi_kafka_log_cb reads the logger from the opaque. */
        rd_kafka_conf_set_opaque(conf, (void *)log);
        e = ksfi_kafka_consumer_new(conf, "cannot create the reply consumer", &rc->rk,
                                    &rc->q, ei);
    }
    if (e) { /* either step failed: nothing else holds rc yet */
        ksfi_free(rc);
        rc = NULL;
    }
    *out = rc;
    return e;
}

void
ksfi_reply_consumer_destroy(ksfi_reply_consumer *rc)
{
    if (!rc) {
        return;
    }
    while (rc->next < rc->nbatch) {
        rd_kafka_message_destroy(rc->batch[rc->next++]);
    }
    if (rc->q) {
        rd_kafka_queue_destroy(rc->q);
    }
    rd_kafka_consumer_close(rc->rk);
    rd_kafka_destroy(rc->rk);
    ksfi_free(rc->hdrs);
    ksfi_free(rc);
}

ksf_err
ksfi_reply_consumer_poll(ksfi_reply_consumer *rc, int timeout_ms, ksfi_reply_event *ev)
{
    memset(ev, 0, sizeof *ev);
    rd_kafka_message_t *msg;
    if (rc->next < rc->nbatch) {
        msg = rc->batch[rc->next++];
    } else {
        msg = rd_kafka_consumer_poll(rc->rk, timeout_ms);
        if (!msg) {
            return KSF_OK;
        }
        /* What else is waiting, in one go and without waiting: a poll per message
         * locks and signals the queue each time. */
        ssize_t n = rd_kafka_consume_batch_queue(rc->q, 0, rc->batch, BATCH);
        rc->nbatch = n > 0 ? (size_t)n : 0;
        rc->next = 0;
    }
    ev->impl = msg;
    ev->topic = msg->rkt ? rd_kafka_topic_name(msg->rkt) : NULL;
    ev->partition = msg->partition;
    ev->offset = msg->offset;
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        ev->kind = KSFI_REPLY_END;
        return KSF_OK;
    }
    if (msg->err) {
        ev->kind = KSFI_REPLY_ERROR;
        ev->error = rd_kafka_message_errstr(msg);
        return KSF_OK;
    }
    ev->kind = KSFI_REPLY_MESSAGE;
    ev->value = msg->payload;
    ev->len = msg->len;
    /* Into the consumer's own array, grown as needed and kept: an allocation and a
     * free per reply were about 150 instructions of the reply thread. One reply with
     * many headers does not pin its array: past HDRS_KEEP it is made anew each time. */
    if (rc->hdrs_cap > HDRS_KEEP) {
        ksfi_free(rc->hdrs);
        rc->hdrs = NULL;
        rc->hdrs_cap = 0;
    }
    ksf_err e = ksfi_kafka_header_views(msg, &rc->hdrs, &rc->hdrs_cap, &ev->nhdrs);
    ev->hdrs = ev->nhdrs ? rc->hdrs : NULL;
    return e;
}

bool
ksfi_reply_consumer_buffered(const ksfi_reply_consumer *rc)
{
    return rc->next < rc->nbatch;
}

void
ksfi_reply_event_release(ksfi_reply_event *ev)
{
    if (ev->impl) {
        rd_kafka_message_destroy(ev->impl);
    }
    memset(ev, 0, sizeof *ev);
}

void
ksfi_reply_consumer_wake(ksfi_reply_consumer *rc)
{
    rd_kafka_queue_yield(rc->q);
}

/* Resume @p list, seeking each partition whose position is known (reply_consumer.h:
 * a bare resume leaves librdkafka 2.0.2's fetcher asleep for up to 1 s). The offset is
 * the one the resume would fetch from anyway: nothing is skipped. */
static void
resume(ksfi_reply_consumer *rc, rd_kafka_topic_partition_list_t *list,
       ksfi_reply_position_fn position, void *arg)
{
    rd_kafka_resume_partitions(rc->rk, list);
    rd_kafka_topic_partition_list_t *seek = rd_kafka_topic_partition_list_new(list->cnt);
    for (int i = 0; seek && position && i < list->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &list->elems[i];
        int64_t at = position(arg, tp->topic, tp->partition);
        if (at >= 0) {
            rd_kafka_topic_partition_list_add(seek, tp->topic, tp->partition)->offset =
                at;
        }
    }
    if (seek && seek->cnt > 0) {
        rd_kafka_error_t *kerr = rd_kafka_seek_partitions(rc->rk, seek, 0);
        if (kerr) { /* the resume still works, only up to 1 s later */
            ksfi_log(rc->log, KSF_LOG_WARNING, "client", "seek after resume: %s",
                     rd_kafka_error_string(kerr));
            rd_kafka_error_destroy(kerr);
        }
    }
    if (seek) {
        rd_kafka_topic_partition_list_destroy(seek);
    }
}

void
ksfi_reply_consumer_set_paused(ksfi_reply_consumer *rc, bool pause,
                               ksfi_reply_position_fn position, void *arg)
{
    rd_kafka_topic_partition_list_t *list = NULL;
    if (rd_kafka_assignment(rc->rk, &list) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        list->cnt > 0) {
        if (pause) {
            rd_kafka_pause_partitions(rc->rk, list);
        } else {
            resume(rc, list, position, arg);
        }
    }
    if (list) {
        rd_kafka_topic_partition_list_destroy(list);
    }
}

ksf_err
ksfi_reply_consumer_fetch_from_end(ksfi_reply_consumer *rc, const char *topic,
                                   int32_t partition, int64_t deadline, ksf_errinfo *ei)
{
    /* Start at the high watermark: every reply to a request sent from now on is at or
     * after it, and nothing older is replayed (no committed offsets are used). */
    int64_t hi = 0;
    ksf_err e = ksfi_kafka_high_watermark(rc->rk, topic, partition, deadline, &hi, ei);
    if (e) {
        return e;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = hi;
    rd_kafka_error_t *kerr = rd_kafka_incremental_assign(rc->rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (kerr) {
        e = ksfi_kafka_fail(ei, rd_kafka_error_code(kerr), "assign reply partition");
        rd_kafka_error_destroy(kerr);
        return e;
    }
    ksfi_log(rc->log, KSF_LOG_DEBUG, "client", "fetching %s [%d] from offset %lld", topic,
             (int)partition, (long long)hi);
    return KSF_OK;
}

void
ksfi_reply_consumer_unfetch(ksfi_reply_consumer *rc, const char *topic, int32_t partition)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition);
    rd_kafka_error_t *kerr = rd_kafka_incremental_unassign(rc->rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (kerr) {
        ksfi_log(rc->log, KSF_LOG_WARNING, "client", "unassign %s [%d]: %s", topic,
                 (int)partition, rd_kafka_error_string(kerr));
        rd_kafka_error_destroy(kerr);
    }
}

ksf_err
ksfi_reply_consumer_partition_count(ksfi_reply_consumer *rc, const char *topic,
                                    int64_t deadline, int *count, ksf_errinfo *ei)
{
    return ksfi_kafka_partition_count(rc->rk, topic, deadline, count, ei);
}
