/*
 * The server's public metrics calls: its metrics as Prometheus text or JSON. Beside
 * what it observes (struct ksf_server); obs/metrics.c supplies the counters and the
 * rendering. The families are tables so that the text and the JSON name the same
 * things.
 */
#include "base/alloc.h"
#include "obs/metrics.h"
#include "server/server.h"

#include <inttypes.h>

static const ksfi_prom_counter server_counters[] = {
    {"ksf_server_requests_total", "Request messages handed to the pattern's handler.",
     KSFI_M_REQUESTS},
    {"ksf_server_events_total", "Event messages handed to the pattern's handler.",
     KSFI_M_EVENTS},
    {"ksf_server_replies_total",
     "Reply messages (values, stream items, errors) acknowledged by the broker.",
     KSFI_M_REPLIES},
    {"ksf_server_errors_total",
     "Error replies sent and event handlers that failed, by pattern.", KSFI_M_ERRORS},
};

static const char *const server_json_names[KSFI_M_COUNT] = {"requests", "replies",
                                                            "errors", "events", NULL};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/*
 * What both server writers start with: the arguments checked (@p out is the writer's
 * destination, only tested for NULL), the handlers' records sorted into @p v, and the
 * stats. Registration is over once run starts and the handler array is never shrunk,
 * so reading it needs no lock (see server.h). On KSF_OK the caller frees @p v.
 */
static ksf_err
server_begin(ksf_server *srv, const void *out, ksfi_metrics_view *v, ksf_server_stats *st)
{
    if (!srv || !out) {
        return KSF_EINVAL;
    }
    const ksfi_pmetrics **items =
        ksfi_calloc(srv->nhandlers ? srv->nhandlers : 1, sizeof *items);
    if (!items) {
        return KSF_ENOMEM;
    }
    for (size_t i = 0; i < srv->nhandlers; i++) {
        items[i] = srv->handlers[i].metrics;
    }
    ksf_err e = ksfi_metrics_view_init(v, items, srv->nhandlers);
    ksfi_free(items);
    if (e == KSF_OK) {
        ksf_server_get_stats(srv, st);
    }
    return e;
}

ksf_err
ksf_server_write_prometheus(ksf_server *srv, FILE *out)
{
    ksfi_metrics_view v;
    ksf_server_stats st;
    ksf_err e = server_begin(srv, out, &v, &st);
    if (e) {
        return e;
    }
    for (size_t i = 0; i < COUNT_OF(server_counters); i++) {
        ksfi_prom_counters(out, &v, &server_counters[i]);
    }
    ksfi_prom_histogram(out, &v, "ksf_server_handler_duration_seconds",
                        "Time from handing a message to its handler until the handler "
                        "returned or finished (deferred), by pattern.");
    ksfi_prom_scalar(out, "ksf_server_no_handler_total",
                     "Messages on a topic without a handler.", "counter", st.no_handler);
    ksfi_prom_scalar(out, "ksf_server_malformed_total",
                     "Messages skipped because their headers could not be used.",
                     "counter", st.malformed);
    ksfi_prom_scalar(out, "ksf_server_reply_failures_total",
                     "Reply produces that failed for good.", "counter",
                     st.reply_failures);
    ksfi_prom_scalar(
        out, "ksf_server_offset_resets_total",
        "Partitions whose committed offset was out of range, so the consumer "
        "resumed elsewhere.",
        "counter", st.offset_resets);
    ksfi_prom_scalar(out, "ksf_server_offset_reset_skipped_total",
                     "Messages skipped by those resets: deleted before they were read.",
                     "counter", st.offset_reset_skipped);
    ksfi_prom_scalar(out, "ksf_server_reply_refused_total",
                     "Requests skipped because the reply policy refused their reply "
                     "topic.",
                     "counter", st.reply_refused);
    ksfi_prom_scalar(out, "ksf_server_refused_total",
                     "Messages a middleware's before callback refused: their handler "
                     "did not run.",
                     "counter", st.refused);
    ksfi_metrics_view_free(&v);
    return ksfi_prom_result(out);
}

ksf_err
ksf_server_metrics_json(ksf_server *srv, json_t **out)
{
    ksfi_metrics_view v;
    ksf_server_stats st;
    if (out) {
        *out = NULL; /* also for KSF_EINVAL and KSF_ENOMEM */
    }
    ksf_err e = server_begin(srv, out, &v, &st);
    if (e) {
        return e;
    }
    json_t *patterns =
        ksfi_metrics_patterns_json(&v, server_json_names, "handler_duration");
    ksfi_metrics_view_free(&v);
    *out = patterns ? json_pack("{s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "patterns",
                                patterns, "no_handler", (json_int_t)st.no_handler,
                                "malformed", (json_int_t)st.malformed, "reply_failures",
                                (json_int_t)st.reply_failures, "offset_resets",
                                (json_int_t)st.offset_resets, "offset_reset_skipped",
                                (json_int_t)st.offset_reset_skipped, "reply_refused",
                                (json_int_t)st.reply_refused, "refused",
                                (json_int_t)st.refused)
                    : NULL;
    return *out ? KSF_OK : KSF_ENOMEM;
}
