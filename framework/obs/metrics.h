/*
 * Per-pattern metrics: counters and a latency histogram per pattern, updated lock-free
 * from any thread (relaxed atomics: each value is exact, a snapshot of several is not
 * one instant), rendered as Prometheus text (exposition format 0.0.4) or JSON.
 *
 * A pattern's record is allocated once, when the pattern is first known (a server's
 * handler registration, a client's first send to it), and lives until its owner is
 * destroyed, so the hot path only does atomic adds.
 */
#ifndef KSF_METRICS_H
#define KSF_METRICS_H

#include <ksf/ksf.h>

#include <stdatomic.h>
#include <stdio.h>

/* Finite bucket upper bounds; a last, implicit bucket is +Inf. */
#define KSFI_HIST_EDGES 16

/* The finite bounds in microseconds, ascending: 100 us .. 10 s in 1-2.5-5 steps. */
extern const uint64_t ksfi_hist_edges_us[KSFI_HIST_EDGES];

typedef struct ksfi_hist {
    atomic_uint_least64_t counts[KSFI_HIST_EDGES + 1]; /* per bucket, not cumulative */
    atomic_uint_least64_t sum_us;
} ksfi_hist;

/* The bucket of a @p us microseconds observation: the first whose bound is >= it
 * (Prometheus's le is inclusive); KSFI_HIST_EDGES for +Inf. */
size_t ksfi_hist_bucket(uint64_t us);

/* Count one observation. Threads: any; lock-free. */
void ksfi_hist_observe(ksfi_hist *h, uint64_t us);

/* Counter slots of a pattern. The server uses the first four, the client the rest. */
typedef enum ksfi_metric {
    KSFI_M_REQUESTS = 0, /* server: request messages handled */
    KSFI_M_REPLIES,      /* server: reply messages acknowledged by the broker */
    KSFI_M_ERRORS,       /* server: error replies and failed event handlers */
    KSFI_M_EVENTS,       /* server: event messages handled */
    KSFI_M_SENT = 0,     /* client: requests produced */
    KSFI_M_ANSWERED,     /* client: requests answered with a value */
    KSFI_M_REMOTE_ERRORS,
    KSFI_M_TIMEOUTS,
    KSFI_M_LATE,
    KSFI_M_COUNT = 5,
} ksfi_metric;

typedef struct ksfi_pmetrics {
    struct ksfi_pmetrics *next; /* the owner's list */
    atomic_uint_least64_t c[KSFI_M_COUNT];
    ksfi_hist latency;
    char pattern[]; /* NUL-terminated */
} ksfi_pmetrics;

/* A zeroed record for @p pattern, or NULL on ENOMEM. Free it with ksfi_free. */
ksfi_pmetrics *ksfi_pmetrics_new(const char *pattern);

/* Add one to counter @p which; a NULL @p m is ignored (allocation failed earlier). */
void ksfi_pmetrics_inc(ksfi_pmetrics *m, ksfi_metric which);

/* Microseconds on the monotonic clock, for latencies. */
uint64_t ksfi_metrics_now_us(void);

/* ---- rendering -----------------------------------------------------------------------
 */

/* One per-pattern counter family: its name, help and slot. */
typedef struct ksfi_prom_counter {
    const char *name;
    const char *help;
    ksfi_metric which;
} ksfi_prom_counter;

/* A consistent view of the patterns to render, sorted by pattern. */
typedef struct ksfi_metrics_view {
    const ksfi_pmetrics **items;
    size_t count;
} ksfi_metrics_view;

/* Collect @p n records (borrowed) sorted by pattern. Errors: KSF_ENOMEM. */
ksf_err ksfi_metrics_view_init(ksfi_metrics_view *v, const ksfi_pmetrics *const *items,
                               size_t n);
void ksfi_metrics_view_free(ksfi_metrics_view *v);

/* Write @p s escaped as a Prometheus label value (\\, \" and \n). */
void ksfi_prom_label_value(FILE *f, const char *s);

/* "# HELP" and "# TYPE" lines of a family. */
void ksfi_prom_header(FILE *f, const char *name, const char *help, const char *type);

/* A counter family with one line per pattern of @p v. */
void ksfi_prom_counters(FILE *f, const ksfi_metrics_view *v, const ksfi_prom_counter *c);

/* A histogram family (@p name without suffixes) of every pattern's latency. */
void ksfi_prom_histogram(FILE *f, const ksfi_metrics_view *v, const char *name,
                         const char *help);

/* An unlabelled single-value family. */
void ksfi_prom_scalar(FILE *f, const char *name, const char *help, const char *type,
                      uint64_t value);

/* The per-pattern part of a writer: each counter family of @p counters (@p n of them),
 * then the latency histogram @p hist_name. */
void ksfi_prom_patterns(FILE *f, const ksfi_metrics_view *v,
                        const ksfi_prom_counter *counters, size_t n,
                        const char *hist_name, const char *hist_help);

/* One unlabelled value of a writer, named once for the text and the JSON: its family
 * name, help and type ("counter" or "gauge"), its JSON key, and the value read now. */
typedef struct ksfi_scalar {
    const char *name;
    const char *help;
    const char *type;
    const char *json_key;
    uint64_t value;
} ksfi_scalar;

/* Each of the @p n values of @p s as a single-value family, in order. */
void ksfi_prom_scalars(FILE *f, const ksfi_scalar *s, size_t n);

/* Set each of the @p n values of @p s in @p obj under its JSON key, in order. Returns
 * 0, or -1 when one could not be set (ENOMEM). */
int ksfi_scalars_json(json_t *obj, const ksfi_scalar *s, size_t n);

/*
 * {"<pattern>": {"<counter name>": n, ..., "<hist_key>": {"le_seconds": [...],
 * "counts": [cumulative, +Inf last], "sum_seconds": s, "count": n}}} for @p v, with
 * the counters named by @p names (NULL entries skipped). Returns NULL on ENOMEM.
 */
json_t *ksfi_metrics_patterns_json(const ksfi_metrics_view *v,
                                   const char *const names[KSFI_M_COUNT],
                                   const char *hist_key);

/* ---- what the client shows (client.c fills it, client_metrics_export.c renders it) -
 */

typedef struct ksfi_client_part {
    char *topic;
    int32_t partition;
    bool draining; /* revoked, still fetched until its requests are answered */
} ksfi_client_part;

typedef struct ksfi_client_metrics {
    ksf_client_stats stats;
    uint64_t rebalances;
    const ksfi_pmetrics **patterns; /* borrowed: live until the client is destroyed */
    size_t npatterns;
    ksfi_client_part *parts; /* owned copies */
    size_t nparts;
} ksfi_client_metrics;

/* Snapshot @p cli's metrics. Errors: KSF_ENOMEM. */
ksf_err ksfi_client_metrics_collect(ksf_client *cli, ksfi_client_metrics *out);
void ksfi_client_metrics_free(ksfi_client_metrics *m);

/* 0 when every write to @p f succeeded, else KSF_EINVAL (the stream reported an error).
 */
ksf_err ksfi_prom_result(FILE *f);

#endif
