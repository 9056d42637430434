#include "kafka/consumer.h"

#include "base/alloc.h"
#include "base/errinfo.h"

#include <librdkafka/rdkafka.h>

ksfi_kafka_in
ksfi_kafka_in_of(const rd_kafka_message_t *m)
{
    rd_kafka_timestamp_type_t type;
    int64_t ts = rd_kafka_message_timestamp(m, &type);
    ksfi_kafka_in in = {
        .topic = rd_kafka_topic_name(m->rkt),
        .partition = m->partition,
        .offset = m->offset,
        .timestamp_ms = type == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts,
        .key = m->key,
        .key_len = m->key ? m->key_len : 0,
        .value = m->payload,
        .len = m->payload ? m->len : 0,
    };
    return in;
}

void
ksfi_kafka_message_free(rd_kafka_message_t *m)
{
    if (m) {
        rd_kafka_message_destroy(m);
    }
}

ksf_err
ksfi_kafka_tps_of(const rd_kafka_topic_partition_list_t *l, ksfi_kafka_tp **out,
                  size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!l || l->cnt <= 0) {
        return KSF_OK;
    }
    ksfi_kafka_tp *v = ksfi_calloc((size_t)l->cnt, sizeof *v);
    if (!v) {
        return KSF_ENOMEM;
    }
    for (int i = 0; i < l->cnt; i++) {
        v[i] = (ksfi_kafka_tp){l->elems[i].topic, l->elems[i].partition};
    }
    *out = v;
    *n = (size_t)l->cnt;
    return KSF_OK;
}

ksf_err
ksfi_kafka_store_offsets(rd_kafka_t *rk, const ksfi_kafka_tpo *v, size_t n,
                         ksf_errinfo *ei)
{
    if (n == 0) {
        return KSF_OK;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_topic_partition_list_add(l, v[i].topic, v[i].partition)->offset =
            v[i].offset;
    }
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(rk, l);
    ksf_err e = KSF_OK;
    /* The call's own error is the first failed partition's; name that partition. */
    for (int i = 0; err && i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *t = &l->elems[i];
        if (t->err) {
            e = ksfi_fail_kafka(ei, t->err, "storing offset %s[%d]@%lld: %s", t->topic,
                                (int)t->partition, (long long)t->offset,
                                rd_kafka_err2str(t->err));
            break;
        }
    }
    if (err && !e) {
        e = ksfi_fail_kafka(ei, err,
                            "storing offsets of %zu partition(s) (%s[%d]...): %s", n,
                            v[0].topic, (int)v[0].partition, rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(l);
    return e;
}

ksf_err
ksfi_kafka_pause(rd_kafka_t *rk, const char *topic, int32_t partition, bool pause,
                 ksf_errinfo *ei)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition);
    rd_kafka_resp_err_t err =
        pause ? rd_kafka_pause_partitions(rk, l) : rd_kafka_resume_partitions(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        return ksfi_fail_kafka(ei, err, "%s %s[%d]: %s", pause ? "pausing" : "resuming",
                               topic, (int)partition, rd_kafka_err2str(err));
    }
    return KSF_OK;
}

ksf_err
ksfi_kafka_seek(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t offset,
                ksf_errinfo *ei)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
    rd_kafka_error_t *kerr = rd_kafka_seek_partitions(rk, l, 0);
    rd_kafka_topic_partition_list_destroy(l);
    if (kerr) {
        ksf_err e = ksfi_fail_kafka(ei, rd_kafka_error_code(kerr), "seeking %s[%d]: %s",
                                    topic, (int)partition, rd_kafka_error_string(kerr));
        rd_kafka_error_destroy(kerr);
        return e;
    }
    return KSF_OK;
}
