/*
 * Deadlines and trace context end to end through the embedded broker: what a handler
 * sees, what the reply carries (exact header bytes), propagation through a handler
 * calling a second service, expired work skipped and committed, late replies counted.
 */
#include "fixture.h"
#include "raw_kafka.h"
#include "service.h"

#include "codec/wire.h"
#include "obs/trace.h"
#include "server/deadline.h"

#include "server_probe.h"
#include "suite.h"

#include <check.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TP_SPEC "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#define TRACE_SPEC "0af7651916cd43dd8448eb211c80319c"
#define GROUP "nestjs-group-server"
#define WAIT_MS 15000

/* What one handler call saw, recorded for the test thread. */
typedef struct seen {
    char id[64];
    char trace_id[33], span_id[17], parent[17], traceparent[56], tracestate[64];
    bool has_parent, has_state;
    int64_t deadline, remaining;
    ksf_err inner_err; /* a nested call's result, when the handler makes one */
} seen;

#define SEEN_MAX 16
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static seen seen_log[SEEN_MAX];
static atomic_int seen_count;
static ksf_client *inner_client; /* the client the "a" handler calls "b" through */

static void
record(ksf_ctx *ctx, const seen *extra)
{
    seen s = extra ? *extra : (seen){0};
    const char *id = ksf_ctx_correlation_id(ctx);
    snprintf(s.id, sizeof s.id, "%s", id ? id : ksf_ctx_topic(ctx));
    snprintf(s.trace_id, sizeof s.trace_id, "%s", ksf_ctx_trace_id(ctx));
    snprintf(s.span_id, sizeof s.span_id, "%s", ksf_ctx_span_id(ctx));
    snprintf(s.traceparent, sizeof s.traceparent, "%s", ksf_ctx_traceparent(ctx));
    s.has_parent = ksf_ctx_parent_span_id(ctx) != NULL;
    snprintf(s.parent, sizeof s.parent, "%s",
             s.has_parent ? ksf_ctx_parent_span_id(ctx) : "");
    s.has_state = ksf_ctx_tracestate(ctx) != NULL;
    snprintf(s.tracestate, sizeof s.tracestate, "%s",
             s.has_state ? ksf_ctx_tracestate(ctx) : "");
    s.deadline = ksf_ctx_deadline_ms(ctx);
    if (!extra) {
        s.remaining = ksf_ctx_remaining_ms(ctx);
    }
    pthread_mutex_lock(&seen_lock);
    int n = atomic_load(&seen_count);
    if (n < SEEN_MAX) {
        seen_log[n] = s;
        atomic_store(&seen_count, n + 1);
    }
    pthread_mutex_unlock(&seen_lock);
}

/* The seen entry whose id (correlation id or topic) is @p id, or NULL. */
static const seen *
find_seen(const char *id)
{
    int n = atomic_load(&seen_count);
    for (int i = 0; i < n; i++) {
        if (!strcmp(seen_log[i].id, id)) {
            return &seen_log[i];
        }
    }
    return NULL;
}

static size_t
count_seen(const char *id)
{
    size_t c = 0;
    int n = atomic_load(&seen_count);
    for (int i = 0; i < n; i++) {
        c += !strcmp(seen_log[i].id, id);
    }
    return c;
}

/* With CK_FORK=no (valgrind) every test runs in one process: start from nothing. */
static void
reset_seen(void)
{
    pthread_mutex_lock(&seen_lock);
    memset(seen_log, 0, sizeof seen_log);
    atomic_store(&seen_count, 0);
    pthread_mutex_unlock(&seen_lock);
    inner_client = NULL;
}

static ksf_err
h_record(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    record(ctx, NULL);
    *reply = json_string("ok");
    return KSF_OK;
}

/* Service "dl.a": calls "dl.b" twice, with a long and a short timeout. */
static ksf_err
h_a(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    seen s = {.remaining = ksf_ctx_remaining_ms(ctx)};
    json_t *out = NULL, *in = json_string("long");
    s.inner_err = ksf_client_call(inner_client, "dl.b", in, 20000, &out, NULL);
    json_decref(out);
    json_decref(in);
    out = NULL;
    in = json_string("short");
    ksf_err e2 = ksf_client_call(inner_client, "dl.b", in, 3000, &out, NULL);
    json_decref(out);
    json_decref(in);
    if (!s.inner_err) {
        s.inner_err = e2;
    }
    /* An event from the handler: the trace goes on, the deadline does not. */
    in = json_string("inner");
    ksf_err e3 = ksf_client_emit(inner_client, "dl.ev", in, NULL, NULL, NULL, NULL);
    json_decref(in);
    if (!s.inner_err) {
        s.inner_err = e3;
    }
    record(ctx, &s);
    *reply = json_string("a");
    return KSF_OK;
}

/* Service "dl.b": records which of A's calls this is under the payload's name. */
static ksf_err
h_b(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    seen s = {.remaining = ksf_ctx_remaining_ms(ctx)};
    snprintf(s.id, sizeof s.id, "%s", json_string_value(data));
    record(ctx, &s);
    pthread_mutex_lock(&seen_lock);
    int n = atomic_load(&seen_count);
    snprintf(seen_log[n - 1].id, sizeof seen_log[n - 1].id, "b.%s",
             json_string_value(data));
    pthread_mutex_unlock(&seen_lock);
    *reply = json_string("b");
    return KSF_OK;
}

/* Events on "dl.ev": recorded as "ev.<payload string>". */
static ksf_err
h_ev(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    seen s = {.remaining = ksf_ctx_remaining_ms(ctx)};
    record(ctx, &s);
    pthread_mutex_lock(&seen_lock);
    int n = atomic_load(&seen_count);
    snprintf(seen_log[n - 1].id, sizeof seen_log[n - 1].id, "ev.%s",
             json_is_string(data) ? json_string_value(data) : "?");
    pthread_mutex_unlock(&seen_lock);
    return KSF_OK;
}

/* Poll until an entry with @p id was recorded or @p timeout_ms passed. */
static const seen *
wait_seen_id(const char *id, int timeout_ms)
{
    ksft_deadline until = ksft_deadline_in(timeout_ms);
    const seen *s;
    while (!(s = find_seen(id)) && ksft_deadline_wait(&until)) {
    }
    return s;
}

/* ---- propagation through a second service -------------------------------------- */

KSFT_TEST(test_deadline_propagates_through_a_handler, 60)
{
    reset_seen();
    static const ksft_handler handlers[] = {
        {"dl.a", h_a}, {"dl.b", h_b}, {"dl.ev", h_ev, NULL, true}, {NULL}};
    ksft_world w;
    ksft_world_open(&w, &(ksft_world_spec){.topics = (const char *const[]){"dl.ev", NULL},
                                           .lazy_client = true});
    inner_client = w.extra = ksft_client(w.cfg);
    ksft_world_serve(&w, ksft_world_server(&w, handlers));
    ksf_errinfo ei = {0};
    /* Reply partitions first, so no group join eats into A's time budget. */
    ck_assert(!ksf_client_subscribe_to_response_of(inner_client, "dl.b", &ei));
    ck_assert(!ksf_client_subscribe_to_response_of(w.cli, "dl.a", &ei));
    ck_assert_msg(ksf_client_connect(inner_client, 20000, &ei) == KSF_OK, "%s", ei.text);
    ck_assert_msg(ksf_client_connect(w.cli, 20000, &ei) == KSF_OK, "%s", ei.text);

    /* The caller bridges from its own tracer: it supplies the context. */
    ksft_outcome d = {0};
    ksf_send_opts o = {.timeout_ms = 12000, .traceparent = TP_SPEC, .tracestate = "k=v"};
    int64_t sent_at = ksfi_wall_ms();
    ck_assert_msg(ksf_client_send(w.cli, "dl.a", NULL, &o, ksft_outcome_cb, &d, &ei) ==
                      KSF_OK,
                  "%s", ei.text);
    ksft_outcome_wait(&d, WAIT_MS);
    ck_assert_int_eq(d.err, KSF_OK);
    ksft_outcome_reset(&d);

    /* An event the caller emits with a timeout carries a deadline of its own. */
    json_t *timed = json_string("timed");
    ksf_send_opts eo = {.timeout_ms = 60000};
    int64_t emitted_at = ksfi_wall_ms();
    ck_assert(!ksf_client_emit(w.cli, "dl.ev", timed, &eo, NULL, NULL, &ei));
    json_decref(timed);
    const seen *ev = wait_seen_id("ev.inner", WAIT_MS);
    const seen *ev_timed = wait_seen_id("ev.timed", WAIT_MS);
    ck_assert_ptr_nonnull(ev);
    ck_assert_ptr_nonnull(ev_timed);

    const seen *a = NULL, *bl = find_seen("b.long"), *bs = find_seen("b.short");
    for (int i = 0; i < atomic_load(&seen_count); i++) {
        if (strncmp(seen_log[i].id, "b.", 2) && strncmp(seen_log[i].id, "ev.", 3)) {
            a = &seen_log[i];
        }
    }
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(bl);
    ck_assert_ptr_nonnull(bs);
    ck_assert_int_eq(a->inner_err, KSF_OK);
    /* A continues the caller's trace; its parent is the caller's span. */
    ck_assert_str_eq(a->trace_id, TRACE_SPEC);
    ck_assert_str_eq(a->parent, "b7ad6b7169203331");
    ck_assert_str_eq(a->tracestate, "k=v");
    /* A's deadline is the send time + 12 s, by the wall clock of this host. */
    ck_assert(a->deadline >= sent_at + 12000 && a->deadline <= ksfi_wall_ms() + 12000);
    ck_assert(a->remaining > 0 && a->remaining <= 12000);
    /* B is in the same trace, a hop further: a new parent, neither A's nor the
     * caller's, and the tracestate came along. */
    for (int i = 0; i < 2; i++) {
        const seen *x = i ? bs : bl;
        ck_assert_str_eq(x->trace_id, TRACE_SPEC);
        ck_assert(x->has_parent);
        ck_assert_str_ne(x->parent, "b7ad6b7169203331");
        ck_assert_str_ne(x->parent, a->span_id);
        ck_assert_str_ne(x->span_id, a->span_id);
        ck_assert_str_eq(x->tracestate, "k=v");
    }
    ck_assert_str_ne(bl->parent, bs->parent);
    /* The 20 s call was cut to A's remaining time: the same absolute deadline. The 3 s
     * call kept its own, shorter one. */
    ck_assert_int_eq(bl->deadline, a->deadline);
    ck_assert(bl->remaining <= a->remaining);
    ck_assert(bs->deadline < a->deadline);
    ck_assert(bs->remaining <= 3000);
    /* The handler's event: same trace, its own span, no deadline. */
    ck_assert_str_eq(ev->trace_id, TRACE_SPEC);
    ck_assert(ev->has_parent);
    ck_assert_str_ne(ev->parent, a->span_id);
    ck_assert_str_ne(ev->parent, bl->parent);
    ck_assert_int_eq(ev->deadline, 0);
    ck_assert_int_eq(ev->remaining, INT64_MAX);
    /* The caller's timed event: a new trace (whose parent is the emitting client's
     * span), a deadline 60 s after the emit. */
    ck_assert_str_ne(ev_timed->trace_id, TRACE_SPEC);
    ck_assert(ev_timed->has_parent);
    ck_assert(ev_timed->deadline >= emitted_at + 60000 &&
              ev_timed->deadline <= ksfi_wall_ms() + 60000);

    ksft_world_close(&w);
}
END_TEST

/* ---- the reply's trace headers, byte for byte ------------------------------------ */

/* A request as a raw producer sends it, with extra headers. */
static void
raw_request(ksft_producer *p, const char *topic, const char *id, const ksfi_header *extra,
            size_t nextra)
{
    ksfi_header h[8];
    char pbuf[12];
    size_t n = ksfi_request_headers(id, KSFT_PROBE_REPLY, 0, pbuf, h);
    if (nextra) { /* extra may be NULL: memcpy's source must not be */
        memcpy(h + n, extra, nextra * sizeof *h);
    }
    ksft_produce(p, topic, 0, NULL, 0, "{}", 2, h, n + nextra, true);
}

KSFT_TEST(test_deadline_reply_trace_headers, 60)
{
    reset_seen();
    /* One reply topic for every pattern, as a Spring caller names its own. */
    ksft_probe pr;
    ksft_probe_open(
        &pr, &(ksft_world_spec){
                 .topics = (const char *const[]){"tr.echo", NULL},
                 .handlers = (const ksft_handler[]){{"tr.echo", h_record}, {NULL}}});
    ksft_producer *p = pr.prod;
    ksft_collector *c = pr.replies;

    char dl[21];
    int64_t deadline = ksfi_wall_ms() + 30000;
    size_t dlen = ksfi_deadline_format(deadline, dl);
    ksfi_header good[] = {{"traceparent", TP_SPEC, 55},
                          {"tracestate", "congo=t61rcWkgMzE", 17},
                          {"ksf_deadline", dl, dlen}};
    raw_request(p, "tr.echo", "good", good, 3);
    /* Uppercase hex: invalid, so a new trace, and its tracestate goes with it; a
     * deadline that is not digits is ignored: the request runs with none. */
    ksfi_header bad[] = {
        {"traceparent", "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", 55},
        {"tracestate", "congo=t61rcWkgMzE", 17},
        {"ksf_deadline", "soon", 4}};
    raw_request(p, "tr.echo", "bad", bad, 3);
    ck_assert_uint_eq(ksft_collector_wait_id(c, "good", 1, WAIT_MS), 1);
    ck_assert_uint_eq(ksft_collector_wait_id(c, "bad", 1, WAIT_MS), 1);

    const seen *g = find_seen("good"), *x = find_seen("bad");
    ck_assert_ptr_nonnull(g);
    ck_assert_ptr_nonnull(x);
    ck_assert_str_eq(g->trace_id, TRACE_SPEC);
    ck_assert_str_eq(g->parent, "b7ad6b7169203331");
    ck_assert_int_eq(g->deadline, deadline);
    ck_assert(g->remaining > 0 && g->remaining <= 30000);
    /* The reply: kafka_correlationId, is-disposed, then the handler span's
     * traceparent and the tracestate, exactly. */
    const ksft_msg *m = ksft_collector_get_id(c, "good", 0);
    char want[56];
    snprintf(want, sizeof want, "00-" TRACE_SPEC "-%s-01", g->span_id);
    ck_assert_str_eq(g->traceparent, want);
    ck_assert_uint_eq(m->nhdrs, 4);
    ck_assert_str_eq(m->hdrs[0].name, KSFI_HDR_CORRELATION_ID);
    ck_assert_str_eq(m->hdrs[1].name, KSFI_HDR_NEST_IS_DISPOSED);
    ck_assert_str_eq(m->hdrs[2].name, "traceparent");
    ck_assert_uint_eq(m->hdrs[2].len, 55);
    ck_assert_int_eq(memcmp(m->hdrs[2].value, want, 55), 0);
    ck_assert_str_eq(m->hdrs[3].name, "tracestate");
    ck_assert_uint_eq(m->hdrs[3].len, 17);
    ck_assert_int_eq(memcmp(m->hdrs[3].value, "congo=t61rcWkgMzE", 17), 0);

    ck_assert(!x->has_parent);
    ck_assert(!x->has_state);
    ck_assert_str_ne(x->trace_id, TRACE_SPEC);
    ck_assert_uint_eq(strlen(x->trace_id), 32);
    ck_assert_int_eq(x->deadline, 0);
    ck_assert_int_eq(x->remaining, INT64_MAX);
    m = ksft_collector_get_id(c, "bad", 0);
    snprintf(want, sizeof want, "00-%s-%s-01", x->trace_id, x->span_id);
    ck_assert_uint_eq(m->nhdrs, 3);
    ck_assert_int_eq(memcmp(m->hdrs[2].value, want, 55), 0);
    ksf_server_stats st;
    ksf_server_get_stats(pr.w.srv, &st);
    ck_assert_uint_eq(st.requests, 2);
    ck_assert_uint_eq(st.expired, 0);

    ksft_probe_close(&pr);
}
END_TEST

/* ---- trace.headers=false on the server ------------------------------------------- */

/* Records what it sees, then emits "lean.ev" through inner_client (trace.headers=false
 * there too): that event must carry no trace context of the handler's. */
static ksf_err
h_lean(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    json_t *ev = json_string(ksf_ctx_correlation_id(ctx));
    seen s = {.inner_err =
                  ksf_client_emit(inner_client, "lean.ev", ev, NULL, NULL, NULL, NULL)};
    json_decref(ev);
    record(ctx, &s);
    *reply = json_string("ok");
    return KSF_OK;
}

/* The reply carries exactly NestJS's headers; the handler still sees the incoming
 * trace continued (or a new one), never NULL; its own sends carry no traceparent. */
KSFT_TEST(test_deadline_trace_headers_off, 60)
{
    reset_seen();
    static const char *const off[][2] = {{"trace.headers", "false"}};
    ksft_probe pr;
    ksft_probe_open(&pr, &(ksft_world_spec){
                             .topics = (const char *const[]){"tr.lean", "lean.ev", NULL},
                             KSFT_SETTINGS(off)});
    inner_client = pr.w.extra = ksft_client(pr.w.cfg);
    ksft_world_serve(&pr.w, ksft_world_server(&pr.w, (const ksft_handler[]){
                                                         {"tr.lean", h_lean}, {NULL}}));
    ksft_collector *events =
        ksft_collector_new(ksft_broker_address(pr.w.broker), "lean.ev", 0);
    ksfi_header traced[] = {{"traceparent", TP_SPEC, 55}, {"tracestate", "k=v", 3}};
    raw_request(pr.prod, "tr.lean", "traced", traced, 2);
    raw_request(pr.prod, "tr.lean", "untraced", NULL, 0);
    ck_assert_uint_eq(ksft_collector_wait_id(pr.replies, "traced", 1, WAIT_MS), 1);
    ck_assert_uint_eq(ksft_collector_wait_id(pr.replies, "untraced", 1, WAIT_MS), 1);
    for (int i = 0; i < 2; i++) {
        const char *id = i ? "untraced" : "traced";
        const ksft_msg *m = ksft_collector_get_id(pr.replies, id, 0);
        ksft_assert_bytes(m->value, m->len, "ok", 2, "value");
        ck_assert_uint_eq(m->nhdrs, 2);
        ck_assert_str_eq(m->hdrs[0].name, KSFI_HDR_CORRELATION_ID);
        ksft_assert_bytes(m->hdrs[0].value, m->hdrs[0].len, id, strlen(id), id);
        ck_assert_str_eq(m->hdrs[1].name, KSFI_HDR_NEST_IS_DISPOSED);
        ksft_assert_bytes(m->hdrs[1].value, m->hdrs[1].len, "\0", 1, "is-disposed");
    }
    const seen *t = find_seen("traced"), *u = find_seen("untraced");
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(u);
    ck_assert_int_eq(t->inner_err, KSF_OK);
    ck_assert_str_eq(t->trace_id, TRACE_SPEC);
    ck_assert(t->has_parent);
    ck_assert_str_eq(t->parent, "b7ad6b7169203331");
    ck_assert_str_eq(t->tracestate, "k=v");
    char want[56];
    snprintf(want, sizeof want, "00-" TRACE_SPEC "-%s-01", t->span_id);
    ck_assert_str_eq(t->traceparent, want);
    ck_assert_str_ne(t->span_id, "b7ad6b7169203331");
    ck_assert(!u->has_parent);
    ck_assert(!u->has_state);
    ksfi_traceparent tp;
    ck_assert(ksfi_traceparent_parse(u->traceparent, strlen(u->traceparent), &tp));
    ck_assert_str_ne(u->trace_id, TRACE_SPEC);
    /* The handlers' events: no headers at all (no deadline: an event without a
     * timeout). */
    ksft_deadline end = ksft_deadline_in(WAIT_MS);
    while (ksft_collector_count(events) < 2 && ksft_deadline_wait(&end)) {
        ksft_collector_poll(events, 50);
    }
    ck_assert_uint_eq(ksft_collector_count(events), 2);
    for (size_t i = 0; i < 2; i++) {
        ck_assert_uint_eq(ksft_collector_at(events, i)->nhdrs, 0);
    }
    ksft_collector_destroy(events);
    ksft_probe_close(&pr);
}
END_TEST

/* ---- expired work is skipped, counted and committed ------------------------------ */

static atomic_int refused_inside; /* nested sends refused for a passed deadline */

/* Runs a request whose deadline passed within the skew: a send from here fails fast. */
static ksf_err
h_late_ok(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    record(ctx, NULL);
    ksf_errinfo ei = {0};
    json_t *out = NULL;
    if (ksf_client_call(inner_client, "ex.never", NULL, 5000, &out, &ei) ==
            KSF_ETIMEDOUT &&
        strstr(ei.text, "deadline passed")) {
        atomic_fetch_add(&refused_inside, 1);
    }
    json_decref(out);
    *reply = json_string("ok");
    return KSF_OK;
}

static ksf_err
h_dispatch_ex(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    const char *id = ksf_ctx_correlation_id(ctx);
    if (id && !strcmp(id, "within-skew")) {
        return h_late_ok(ctx, data, reply);
    }
    return h_record(ctx, data, reply);
}

static const ksft_handler ex_handlers[] = {
    {"ex.t", h_dispatch_ex}, {"ex.ev", h_record, NULL, true}, {NULL}};

KSFT_TEST(test_deadline_expired_is_skipped_and_committed, 60)
{
    reset_seen();
    /* One reply topic for every pattern, as a Spring caller names its own. */
    ksft_probe pr;
    ksft_probe_open(
        &pr, &(ksft_world_spec){.topics = (const char *const[]){"ex.t", "ex.ev", NULL}});
    const char *addr = ksft_broker_address(pr.w.broker);
    inner_client = pr.w.extra = ksft_client(pr.w.cfg);
    ksft_producer *p = pr.prod;
    ksft_collector *c = pr.replies;

    /* A backlog in one partition, handled in order (the server starts at the end of
     * the partitions, as NestJS does, so it must be running first). */
    ksft_world_serve(&pr.w, ksft_world_server(&pr.w, ex_handlers));
    char past[21], skewed[21];
    size_t plen = ksfi_deadline_format(ksfi_wall_ms() - 5000, past);
    ksfi_header h_past[] = {{"ksf_deadline", past, plen}};
    raw_request(p, "ex.t", "expired", h_past, 1);
    ksft_produce(p, "ex.ev", 0, NULL, 0, "{}", 2, h_past, 1, true); /* event */
    /* 300 ms ago: within the default 1000 ms skew tolerance, so it runs. */
    size_t slen = ksfi_deadline_format(ksfi_wall_ms() - 300, skewed);
    ksfi_header h_skew[] = {{"ksf_deadline", skewed, slen}};
    raw_request(p, "ex.t", "within-skew", h_skew, 1);
    raw_request(p, "ex.t", "none", NULL, 0);
    ck_assert_uint_eq(ksft_collector_wait_id(c, "none", 1, WAIT_MS), 1);
    ck_assert_uint_eq(ksft_collector_wait_id(c, "within-skew", 1, WAIT_MS), 1);
    ksf_server_stats st;
    ksft_deadline until = ksft_deadline_in(WAIT_MS);
    do { /* the event is on another partition: wait for its verdict */
        ksf_server_get_stats(pr.w.srv, &st);
    } while (st.expired < 2 && ksft_deadline_wait(&until));
    ck_assert_uint_eq(st.expired, 2);
    ck_assert_uint_eq(st.requests, 2);
    ck_assert_uint_eq(st.events, 0);
    ck_assert_uint_eq(count_seen("expired"), 0);
    ck_assert_uint_eq(count_seen("ex.ev"), 0);
    ck_assert_uint_eq(count_seen("within-skew"), 1);
    ck_assert_uint_eq(count_seen("none"), 1);
    ck_assert_int_eq(atomic_load(&refused_inside), 1);
    ck_assert(find_seen("within-skew")->remaining < 0);
    ksft_world_stop_server(&pr.w);
    /* Skipped, and committed past: no reply went out, and the offsets moved on. */
    ksft_collector_poll(c, 200);
    ck_assert_uint_eq(ksft_collector_count_id(c, "expired"), 0);
    ck_assert_uint_eq(ksft_collector_count(c), 2);
    ck_assert_int_eq(ksft_committed(addr, GROUP, "ex.t", 0), 3);
    ck_assert_int_eq(ksft_committed(addr, GROUP, "ex.ev", 0), 1);

    /* A restarted server resumes after them: the expired request never runs. */
    raw_request(p, "ex.t", "after", NULL, 0);
    ksft_world_serve(&pr.w, ksft_world_server(&pr.w, ex_handlers));
    ck_assert_uint_eq(ksft_collector_wait_id(c, "after", 1, WAIT_MS), 1);
    ksf_server_get_stats(pr.w.srv, &st);
    ck_assert_uint_eq(st.requests, 1);
    ck_assert_uint_eq(st.expired, 0);
    ck_assert_uint_eq(count_seen("expired"), 0);
    ck_assert_uint_eq(count_seen("none"), 1);
    ksft_world_stop_server(&pr.w);

    ksft_probe_close(&pr);
}
END_TEST

/* ---- late replies ----------------------------------------------------------------- */

static ksf_err
h_slow(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    record(ctx, NULL);
    ksft_sleep_ms(1200); /* past the caller's 400 ms */
    *reply = json_string("late");
    return KSF_OK;
}

KSFT_TEST(test_deadline_late_reply_is_counted, 60)
{
    reset_seen();
    ksft_world w;
    ksft_world_open_one(&w, "lt.slow", h_slow);
    ksf_errinfo ei = {0};
    json_t *out = NULL;
    ck_assert_int_eq(ksf_client_call(w.cli, "lt.slow", NULL, 400, &out, &ei),
                     KSF_ETIMEDOUT);
    ck_assert_ptr_null(out);
    ksf_client_stats cs;
    ksft_deadline until = ksft_deadline_in(WAIT_MS);
    do {
        ksf_client_get_stats(w.cli, &cs);
    } while (cs.late_replies < 1 && ksft_deadline_wait(&until));
    KSFT_ASSERT_CLIENT_STATS(w.cli, .sent = 1, .timeouts = 1, .late_replies = 1);
    /* The handler started in time and knew it had at most 400 ms. */
    ck_assert_int_eq(atomic_load(&seen_count), 1);
    const seen *s = &seen_log[0];
    ck_assert(s->remaining > 0 && s->remaining <= 400);
    /* The server counts a reply when the broker acknowledged it, which on real Kafka can
     * come after the client has already read it. */
    KSFT_WAIT_SERVER_STAT(w.srv, replies, 1, WAIT_MS);
    KSFT_ASSERT_SERVER_STATS(w.srv, .requests = 1, .replies = 1);
    ksft_world_close(&w);
}
END_TEST

/* ---- shedding (docs/deadlines.md, "Shedding") ------------------------------------- */

static ksf_err
h_300ms(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    ksft_sleep_ms(300); /* the handler's run time, which shedding learns */
    *reply = json_string("done");
    return KSF_OK;
}

/*
 * A 300 ms handler, once run: a request with 5 s runs; one with 150 ms left is not run
 * but answered at once with the overload error (before its caller's timeout: the old
 * code ran it and the caller timed out); counted in shed and errors, not requests.
 */
KSFT_TEST(test_deadline_cannot_finish_is_shed, 60)
{
    ksft_world w;
    ksft_world_open_one(&w, "sh.slow", h_300ms);
    ksf_errinfo ei = {0};
    json_t *out = NULL;
    ck_assert_msg(ksf_client_call(w.cli, "sh.slow", NULL, 5000, &out, &ei) == KSF_OK,
                  "%s", ei.text);
    ck_assert_str_eq(json_string_value(out), "done");
    json_decref(out);
    out = NULL;

    int64_t t0 = ksft_now_ms();
    ck_assert_int_eq(ksf_client_call(w.cli, "sh.slow", NULL, 150, &out, &ei),
                     KSF_EREMOTE);
    int64_t took = ksft_now_ms() - t0;
    ck_assert_str_eq(json_string_value(json_object_get(out, "status")), "error");
    const char *msg = json_string_value(json_object_get(out, "message"));
    ck_assert_ptr_nonnull(msg);
    long long left = -1, run = -1;
    ck_assert_int_eq(sscanf(msg,
                            "overloaded: request for 'sh.slow' shed: it had %lld ms left "
                            "before its deadline and the handler takes about %lld ms",
                            &left, &run),
                     2);
    char want[512];
    snprintf(want, sizeof want,
             "overloaded: request for 'sh.slow' shed: it had %lld ms left before its "
             "deadline and the handler takes about %lld ms, so it was not run (the "
             "server is behind: retry later or elsewhere)",
             left, run);
    ck_assert_str_eq(msg, want);
    ck_assert(left >= 0 && left <= 150);
    ck_assert(run >= 300 && run < 5000);
    ck_assert_int_lt(took, 150); /* an answer, not the caller's timeout */
    json_decref(out);

    KSFT_WAIT_SERVER_STAT(w.srv, replies, 2, WAIT_MS);
    KSFT_ASSERT_SERVER_STATS(w.srv, .requests = 1, .replies = 2, .errors = 1, .shed = 1);
    KSFT_ASSERT_CLIENT_STATS(w.cli, .sent = 2, .replies = 1, .remote_errors = 1);
    ksft_world_close(&w);
}
END_TEST

KSFT_MAIN("deadline")
