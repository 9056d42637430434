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
#include <string.h>

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

/* The server's unlabelled values, in their output order: the one place that names
 * them, for the text and the JSON alike. Each is the ksf_server_stats field of the same
 * name: ksf_server_<field>_total in the text, "<field>" in the JSON. */
enum { SERVER_SCALARS = 16 };

#define STAT(field, help)                                                                \
    {                                                                                    \
        "ksf_server_" #field "_total", help, "counter", #field, st->field                \
    }

static void
server_scalars(const ksf_server_stats *st, ksfi_scalar out[SERVER_SCALARS])
{
    const ksfi_scalar s[SERVER_SCALARS] = {
        STAT(no_handler, "Messages on a topic without a handler."),
        STAT(malformed, "Messages skipped because their headers could not be used."),
        STAT(reply_failures, "Reply produces that failed for good."),
        STAT(offset_resets, "Partitions whose committed offset was out of range, so the "
                            "consumer resumed elsewhere."),
        STAT(offset_reset_skipped,
             "Messages skipped by those resets: deleted before they were read."),
        STAT(reply_refused,
             "Requests skipped because the reply policy refused their reply topic."),
        STAT(refused, "Messages a middleware's before callback refused: their handler "
                      "did not run."),
        STAT(expired,
             "Messages skipped unhandled because their ksf_deadline had passed."),
        STAT(shed,
             "Requests answered at once with the overload error: their deadline left "
             "less time than the handler's recent run time."),
        STAT(throttled, "Messages that waited because their pattern was at its "
                        "concurrency limit."),
        STAT(budget_exceeded,
             "Requests answered with the time-budget error: their handler ran past "
             "server.handler.timeout.ms."),
        STAT(late_discarded, "Handler results discarded because they came after their "
                             "time-budget error."),
        STAT(event_retries, "Event handler runs repeated after a failure."),
        STAT(dead_lettered,
             "Failed events produced to their dead-letter topic and acknowledged."),
        STAT(dlq_failures,
             "Dead-letter produces that failed; each is tried again, nothing dropped."),
        STAT(partition_pauses, "Times a partition was paused because its window of "
                               "unfinished messages was full."),
    };
    memcpy(out, s, sizeof s);
}

#undef STAT

/*
 * What both server writers start with: the arguments checked (@p out is the writer's
 * destination, only tested for NULL), the handlers' records sorted into @p v, and the
 * unlabelled values. Registration is over once run starts and the handler array is
 * never shrunk, so reading it needs no lock (see server.h). On KSF_OK the caller frees
 * @p v.
 */
static ksf_err
server_begin(ksf_server *srv, const void *out, ksfi_metrics_view *v,
             ksfi_scalar scalars[SERVER_SCALARS])
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
        ksf_server_stats st;
        ksf_server_get_stats(srv, &st);
        server_scalars(&st, scalars);
    }
    return e;
}

ksf_err
ksf_server_write_prometheus(ksf_server *srv, FILE *out)
{
    ksfi_metrics_view v;
    ksfi_scalar scalars[SERVER_SCALARS];
    ksf_err e = server_begin(srv, out, &v, scalars);
    if (e) {
        return e;
    }
    ksfi_prom_patterns(out, &v, server_counters, COUNT_OF(server_counters),
                       "ksf_server_handler_duration_seconds",
                       "Time from handing a message to its handler until the handler "
                       "returned or finished (deferred), by pattern.");
    ksfi_prom_scalars(out, scalars, SERVER_SCALARS);
    ksfi_metrics_view_free(&v);
    return ksfi_prom_result(out);
}

ksf_err
ksf_server_metrics_json(ksf_server *srv, json_t **out)
{
    ksfi_metrics_view v;
    ksfi_scalar scalars[SERVER_SCALARS];
    if (out) {
        *out = NULL; /* also for KSF_EINVAL and KSF_ENOMEM */
    }
    ksf_err e = server_begin(srv, out, &v, scalars);
    if (e) {
        return e;
    }
    json_t *patterns =
        ksfi_metrics_patterns_json(&v, server_json_names, "handler_duration");
    ksfi_metrics_view_free(&v);
    /* "o" steals even on failure, so nothing leaks when pack fails. */
    *out = json_pack("{s:o?}", "patterns", patterns);
    if (*out && (!patterns || ksfi_scalars_json(*out, scalars, SERVER_SCALARS))) {
        json_decref(*out);
        *out = NULL;
    }
    return *out ? KSF_OK : KSF_ENOMEM;
}
