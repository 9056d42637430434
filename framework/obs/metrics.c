#include "obs/metrics.h"

#include "base/alloc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* 1-2.5-5 steps: about three buckets a decade, from a fast in-process handler to a
 * request that is about to hit the default 30 s timeout's order of magnitude. */
const uint64_t ksfi_hist_edges_us[KSFI_HIST_EDGES] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

/* The same bounds as Prometheus le texts (seconds), written once so the output is
 * exact and locale-independent. */
static const char *const edge_text[KSFI_HIST_EDGES] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "5",    "10",
};

size_t
ksfi_hist_bucket(uint64_t us)
{
    size_t lo = 0, hi = KSFI_HIST_EDGES; /* the answer is in [lo, hi] */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (us <= ksfi_hist_edges_us[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

void
ksfi_hist_observe(ksfi_hist *h, uint64_t us)
{
    atomic_fetch_add_explicit(&h->counts[ksfi_hist_bucket(us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

ksfi_pmetrics *
ksfi_pmetrics_new(const char *pattern)
{
    size_t n = strlen(pattern);
    ksfi_pmetrics *m = ksfi_calloc(1, sizeof *m + n + 1);
    if (m) {
        memcpy(m->pattern, pattern, n + 1);
    }
    return m;
}

void
ksfi_pmetrics_inc(ksfi_pmetrics *m, ksfi_metric which)
{
    if (m) {
        atomic_fetch_add_explicit(&m->c[which], 1, memory_order_relaxed);
    }
}

uint64_t
ksfi_metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t
load(const atomic_uint_least64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

/* ---- views ---------------------------------------------------------------------------
 */

static int
by_pattern(const void *a, const void *b)
{
    const ksfi_pmetrics *x = *(const ksfi_pmetrics *const *)a;
    const ksfi_pmetrics *y = *(const ksfi_pmetrics *const *)b;
    return strcmp(x->pattern, y->pattern);
}

ksf_err
ksfi_metrics_view_init(ksfi_metrics_view *v, const ksfi_pmetrics *const *items, size_t n)
{
    v->items = NULL;
    v->count = 0;
    if (n == 0) {
        return KSF_OK;
    }
    if (!(v->items = ksfi_calloc(n, sizeof *v->items))) {
        return KSF_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (items[i]) {
            v->items[v->count++] = items[i];
        }
    }
    /* Sorted so that successive scrapes and tests read the same order. */
    qsort(v->items, v->count, sizeof *v->items, by_pattern);
    return KSF_OK;
}

void
ksfi_metrics_view_free(ksfi_metrics_view *v)
{
    ksfi_free(v->items);
    v->items = NULL;
    v->count = 0;
}

/* ---- Prometheus text ------------------------------------------------------------------
 */

void
ksfi_prom_label_value(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\') {
            fputs("\\\\", f);
        } else if (*s == '"') {
            fputs("\\\"", f);
        } else if (*s == '\n') {
            fputs("\\n", f);
        } else {
            fputc(*s, f);
        }
    }
}

void
ksfi_prom_header(FILE *f, const char *name, const char *help, const char *type)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
pattern_label(FILE *f, const char *name, const char *suffix, const ksfi_pmetrics *m)
{
    fprintf(f, "%s%s{pattern=\"", name, suffix);
    ksfi_prom_label_value(f, m->pattern);
    fputc('"', f);
}

void
ksfi_prom_counters(FILE *f, const ksfi_metrics_view *v, const ksfi_prom_counter *c)
{
    ksfi_prom_header(f, c->name, c->help, "counter");
    for (size_t i = 0; i < v->count; i++) {
        pattern_label(f, c->name, "", v->items[i]);
        fprintf(f, "} %" PRIu64 "\n", load(&v->items[i]->c[c->which]));
    }
}

/* Seconds from microseconds, exactly: "1.000250". */
static void
put_seconds(FILE *f, uint64_t us)
{
    fprintf(f, "%" PRIu64 ".%06" PRIu64, us / 1000000u, us % 1000000u);
}

void
ksfi_prom_histogram(FILE *f, const ksfi_metrics_view *v, const char *name,
                    const char *help)
{
    ksfi_prom_header(f, name, help, "histogram");
    for (size_t i = 0; i < v->count; i++) {
        const ksfi_pmetrics *m = v->items[i];
        uint64_t cum = 0;
        /* Read each bucket once: _count is the +Inf bucket, so they always agree. */
        for (size_t b = 0; b <= KSFI_HIST_EDGES; b++) {
            cum += load(&m->latency.counts[b]);
            pattern_label(f, name, "_bucket", m);
            fprintf(f, ",le=\"%s\"} %" PRIu64 "\n",
                    b < KSFI_HIST_EDGES ? edge_text[b] : "+Inf", cum);
        }
        pattern_label(f, name, "_sum", m);
        fputs("} ", f);
        put_seconds(f, load(&m->latency.sum_us));
        fputc('\n', f);
        pattern_label(f, name, "_count", m);
        fprintf(f, "} %" PRIu64 "\n", cum);
    }
}

void
ksfi_prom_scalar(FILE *f, const char *name, const char *help, const char *type,
                 uint64_t value)
{
    ksfi_prom_header(f, name, help, type);
    fprintf(f, "%s %" PRIu64 "\n", name, value);
}

void
ksfi_prom_patterns(FILE *f, const ksfi_metrics_view *v, const ksfi_prom_counter *counters,
                   size_t n, const char *hist_name, const char *hist_help)
{
    for (size_t i = 0; i < n; i++) {
        ksfi_prom_counters(f, v, &counters[i]);
    }
    ksfi_prom_histogram(f, v, hist_name, hist_help);
}

void
ksfi_prom_scalars(FILE *f, const ksfi_scalar *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ksfi_prom_scalar(f, s[i].name, s[i].help, s[i].type, s[i].value);
    }
}

ksf_err
ksfi_prom_result(FILE *f)
{
    return ferror(f) ? KSF_EINVAL : KSF_OK;
}

/* ---- JSON
 * ------------------------------------------------------------------------------ */

static json_t *
hist_json(const ksfi_hist *h)
{
    json_t *le = json_array(), *counts = json_array();
    uint64_t cum = 0;
    for (size_t b = 0; le && counts && b <= KSFI_HIST_EDGES; b++) {
        cum += load(&h->counts[b]);
        json_array_append_new(counts, json_integer((json_int_t)cum));
        if (b < KSFI_HIST_EDGES) {
            json_array_append_new(le, json_real((double)ksfi_hist_edges_us[b] / 1e6));
        }
    }
    return json_pack("{s:o?, s:o?, s:f, s:I}", "le_seconds", le, "counts", counts,
                     "sum_seconds", (double)load(&h->sum_us) / 1e6, "count",
                     (json_int_t)cum);
}

static json_t *
pattern_json(const ksfi_pmetrics *m, const char *const names[KSFI_M_COUNT],
             const char *hist_key)
{
    json_t *o = json_object();
    if (!o || json_object_set_new(o, hist_key, hist_json(&m->latency))) {
        json_decref(o);
        return NULL;
    }
    for (size_t k = 0; k < KSFI_M_COUNT; k++) {
        if (names[k] &&
            json_object_set_new(o, names[k], json_integer((json_int_t)load(&m->c[k])))) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *
ksfi_metrics_patterns_json(const ksfi_metrics_view *v,
                           const char *const names[KSFI_M_COUNT], const char *hist_key)
{
    json_t *all = json_object();
    for (size_t i = 0; all && i < v->count; i++) {
        if (json_object_set_new(all, v->items[i]->pattern,
                                pattern_json(v->items[i], names, hist_key))) {
            json_decref(all);
            return NULL;
        }
    }
    return all;
}

int
ksfi_scalars_json(json_t *obj, const ksfi_scalar *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (json_object_set_new(obj, s[i].json_key,
                                json_integer((json_int_t)s[i].value))) {
            return -1;
        }
    }
    return 0;
}
