/*
 * The client's public metrics calls: its metrics as Prometheus text or JSON. Beside
 * what it observes (client.c fills ksfi_client_metrics); obs/metrics.c supplies the
 * counters and the rendering. The families are tables so that the text and the JSON
 * name the same things.
 */
#include "base/alloc.h"
#include "obs/metrics.h"

#include <inttypes.h>
#include <string.h>

static const ksfi_prom_counter client_counters[] = {
    {"ksf_client_requests_total", "Requests produced, by pattern.", KSFI_M_SENT},
    {"ksf_client_replies_total", "Requests answered with a value, by pattern.",
     KSFI_M_ANSWERED},
    {"ksf_client_remote_errors_total", "Requests answered with an error, by pattern.",
     KSFI_M_REMOTE_ERRORS},
    {"ksf_client_timeouts_total", "Requests that timed out, by pattern.",
     KSFI_M_TIMEOUTS},
    {"ksf_client_late_replies_total",
     "Replies that arrived after their request had timed out, by pattern.", KSFI_M_LATE},
};

static const char *const client_json_names[KSFI_M_COUNT] = {
    "sent", "replies", "remote_errors", "timeouts", "late_replies"};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static void
client_partitions(FILE *f, const ksfi_client_metrics *m)
{
    ksfi_prom_header(
        f, "ksf_client_reply_partition",
        "1 for each reply partition this client holds now; state=\"draining\" "
        "once revoked, until its requests are answered.",
        "gauge");
    for (size_t i = 0; i < m->nparts; i++) {
        fputs("ksf_client_reply_partition{topic=\"", f);
        ksfi_prom_label_value(f, m->parts[i].topic);
        fprintf(f, "\",partition=\"%" PRId32 "\",state=\"%s\"} 1\n",
                m->parts[i].partition, m->parts[i].draining ? "draining" : "owned");
    }
}

/* What both client writers start with: the arguments checked (@p out only tested for
 * NULL), the client's metrics and their view. On KSF_OK the caller frees both. */
static ksf_err
client_begin(ksf_client *cli, const void *out, ksfi_client_metrics *m,
             ksfi_metrics_view *v)
{
    if (!cli || !out) {
        return KSF_EINVAL;
    }
    if (ksfi_client_metrics_collect(cli, m)) {
        return KSF_ENOMEM;
    }
    if (ksfi_metrics_view_init(v, m->patterns, m->npatterns)) {
        ksfi_client_metrics_free(m);
        return KSF_ENOMEM;
    }
    return KSF_OK;
}

/* The client's unlabelled values, in their output order (the reply partitions stand
 * after the first): the one place that names them, for the text and the JSON alike. */
enum { CLIENT_SCALARS = 7 };

static void
client_scalars(const ksfi_client_metrics *m, ksfi_scalar out[CLIENT_SCALARS])
{
    const ksfi_scalar s[CLIENT_SCALARS] = {
        {"ksf_client_in_flight", "Requests awaiting their final reply.", "gauge",
         "in_flight", m->stats.in_flight},
        {"ksf_client_reply_group_rebalances_total",
         "Assignments received from the reply group (the first join included).",
         "counter", "rebalances", m->rebalances},
        {"ksf_client_unknown_replies_total",
         "Replies with a correlation id this client never sent.", "counter",
         "unknown_replies", m->stats.unknown_replies},
        {"ksf_client_duplicate_replies_total", "Replies for requests already answered.",
         "counter", "duplicate_replies", m->stats.duplicate_replies},
        {"ksf_client_events_emitted_total", "Events acknowledged by the broker.",
         "counter", "emitted", m->stats.emitted},
        {"ksf_client_send_failures_total",
         "Requests ended by a local error instead of a reply: not produced or not "
         "delivered.",
         "counter", "send_failures", m->stats.send_failures},
        {"ksf_client_emit_failures_total", "Events whose delivery failed.", "counter",
         "emit_failures", m->stats.emit_failures},
    };
    memcpy(out, s, sizeof s);
}

ksf_err
ksf_client_write_prometheus(ksf_client *cli, FILE *out)
{
    ksfi_client_metrics m;
    ksfi_metrics_view v;
    ksf_err e = client_begin(cli, out, &m, &v);
    if (e) {
        return e;
    }
    ksfi_scalar scalars[CLIENT_SCALARS];
    client_scalars(&m, scalars);
    ksfi_prom_patterns(out, &v, client_counters, COUNT_OF(client_counters),
                       "ksf_client_request_duration_seconds",
                       "Round trip from producing a request to its final reply "
                       "(values and remote errors; not timeouts), by pattern.");
    ksfi_prom_scalars(out, scalars, 1);
    client_partitions(out, &m);
    ksfi_prom_scalars(out, scalars + 1, CLIENT_SCALARS - 1);
    ksfi_metrics_view_free(&v);
    ksfi_client_metrics_free(&m);
    return ksfi_prom_result(out);
}

static json_t *
parts_json(const ksfi_client_metrics *m)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < m->nparts; i++) {
        if (json_array_append_new(a,
                                  json_pack("{s:s, s:i, s:b}", "topic", m->parts[i].topic,
                                            "partition", (int)m->parts[i].partition,
                                            "draining", m->parts[i].draining))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

ksf_err
ksf_client_metrics_json(ksf_client *cli, json_t **out)
{
    ksfi_client_metrics m;
    ksfi_metrics_view v;
    if (out) {
        *out = NULL; /* also for KSF_EINVAL and KSF_ENOMEM */
    }
    ksf_err e = client_begin(cli, out, &m, &v);
    if (e) {
        return e;
    }
    ksfi_scalar scalars[CLIENT_SCALARS];
    client_scalars(&m, scalars);
    json_t *patterns =
        ksfi_metrics_patterns_json(&v, client_json_names, "request_duration");
    json_t *parts = parts_json(&m);
    /* "o" steals even on failure; parts is released here whatever happened. */
    *out = json_pack("{s:o?}", "patterns", patterns);
    bool ok = *out && patterns && parts && !ksfi_scalars_json(*out, scalars, 1) &&
              !json_object_set_new(*out, "reply_partitions", json_incref(parts)) &&
              !ksfi_scalars_json(*out, scalars + 1, CLIENT_SCALARS - 1);
    json_decref(parts);
    if (!ok) {
        json_decref(*out);
        *out = NULL;
    }
    ksfi_metrics_view_free(&v);
    ksfi_client_metrics_free(&m);
    return *out ? KSF_OK : KSF_ENOMEM;
}
