#include "service.h"

#include "broker.h"
#include "suite.h"

#include <check.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void
ksft_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

ksf_err
ksft_echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    *reply = data ? json_incref((json_t *)data) : NULL;
    return KSF_OK;
}

ksf_err
ksft_crash(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    (void)reply;
    return KSF_EPROTO;
}

ksf_err
ksft_refuse(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    return ksf_ctx_reply_error(ctx, "refused");
}

ksf_err
ksft_count(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    atomic_fetch_add((atomic_int *)ksf_ctx_user(ctx), 1);
    return KSF_OK;
}

ksf_err
ksft_reply_error_object(ksf_ctx *ctx, int code, const char *message)
{
    json_t *err = json_pack("{s:i, s:s}", "code", code, "message", message);
    ksf_err e = ksf_ctx_reply_error_json(ctx, err);
    json_decref(err);
    return e;
}

ksf_err
ksft_stream_ints(ksf_ctx *ctx, int first, int step, int count)
{
    for (int i = 0; i < count; i++) {
        json_t *v = json_integer(first + i * step);
        ksf_err e = ksf_ctx_stream(ctx, v, NULL);
        json_decref(v);
        if (e) {
            return e;
        }
    }
    return KSF_OK;
}

ksf_server *
ksft_server(const ksf_config *cfg)
{
    ksf_server *srv = NULL;
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_server_new(&srv, cfg, &ei) == KSF_OK, "%s", ei.text);
    return srv;
}

ksf_server *
ksft_echo_server(const ksf_config *cfg, const char *const *patterns)
{
    ksf_server *srv = ksft_server(cfg);
    ksf_errinfo ei = {0};
    for (size_t i = 0; patterns[i]; i++) {
        ck_assert_msg(ksf_server_on_message(srv, patterns[i], ksft_echo, NULL, &ei) ==
                          KSF_OK,
                      "%s", ei.text);
    }
    return srv;
}

static void
on_ready(ksf_server *srv, void *user)
{
    (void)srv;
    atomic_fetch_add(&((ksft_service *)user)->ready, 1);
}

static void *
run_main(void *arg)
{
    ksft_service *s = arg;
    s->run_err = ksf_server_run(s->srv, &s->ei);
    atomic_store(&s->exited, 1);
    return NULL;
}

void
ksft_service_start(ksft_service *s, ksf_server *srv, int timeout_ms)
{
    s->srv = srv;
    s->run_err = KSF_OK;
    atomic_store(&s->ready, 0);
    atomic_store(&s->exited, 0);
    ksf_server_set_ready_cb(srv, on_ready, s);
    ck_assert_int_eq(pthread_create(&s->thread, NULL, run_main, s), 0);
    s->running = true;
    KSFT_WAIT_UNTIL(atomic_load(&s->ready) || atomic_load(&s->exited), timeout_ms,
                    "the server's ready callback");
    ck_assert_msg(atomic_load(&s->ready) == 1,
                  "the server's run returned %s before it was ready: %s",
                  ksf_strerror(s->run_err), s->ei.text);
}

void
ksft_service_stop(ksft_service *s)
{
    if (s->running) {
        ksf_server_stop(s->srv);
        pthread_join(s->thread, NULL);
        s->running = false;
        ck_assert_msg(s->run_err == KSF_OK, "run: %s", s->ei.text);
    }
    ksf_server_destroy(s->srv);
    s->srv = NULL;
}

/* ---- one request's callbacks --------------------------------------------------- */

void
ksft_outcome_cb(const ksf_reply *r, void *user)
{
    ksft_outcome *o = user;
    if (atomic_load(&o->calls) == 0) {
        o->err = r->err;
        snprintf(o->text, sizeof o->text, "%s", r->text ? r->text : "");
        o->value = r->value ? json_incref((json_t *)r->value) : NULL;
        o->raw_len = r->raw_len;
        o->raw = calloc(1, r->raw_len + 1);
        ck_assert_ptr_nonnull(o->raw);
        if (r->raw_len) {
            memcpy(o->raw, r->raw, r->raw_len);
        }
        o->at_ms = ksft_now_ms();
    }
    atomic_fetch_add(&o->calls, 1); /* last: the test reads the fields after this */
}

void
ksft_outcome_wait(ksft_outcome *o, int timeout_ms)
{
    KSFT_WAIT_UNTIL(atomic_load(&o->calls) > 0, timeout_ms, "a request's callback");
    ksft_sleep_ms(50); /* a second callback would show up here */
    ck_assert_int_eq(atomic_load(&o->calls), 1);
}

void
ksft_outcome_reset(ksft_outcome *o)
{
    json_decref(o->value);
    free(o->raw);
    memset(o, 0, sizeof *o);
}

/* ---- calls with exact answers --------------------------------------------------- */

char *
ksft_json_text(const json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER)
                   : strdup("(null)");
    ck_assert_ptr_nonnull(text);
    return text;
}

void
ksft_call_expect(ksf_client *cli, const char *pattern, const char *request, ksf_err want,
                 const char *want_json, int timeout_ms)
{
    json_t *req = request ? json_loads(request, JSON_DECODE_ANY, NULL) : NULL;
    ck_assert_msg(!request || req, "%s: the request is not JSON: %s", pattern, request);
    json_t *out = NULL;
    ksf_errinfo ei = {0};
    ksf_err e = ksf_client_call(cli, pattern, req, timeout_ms, &out, &ei);
    ck_assert_msg(e == want, "%s: %s (%s), want %s", pattern, ksf_strerror(e), ei.text,
                  ksf_strerror(want));
    char *text = ksft_json_text(out);
    ck_assert_msg(!strcmp(text, want_json), "%s: got %s, want %s", pattern, text,
                  want_json);
    free(text);
    json_decref(out);
    json_decref(req);
}

/* Every reply of one streamed request as text, and whether the last one came. */
typedef struct stream_text {
    pthread_mutex_t lock;
    char text[1024];
    ksf_err last_err; /* the last reply's */
    atomic_int done;
} stream_text;

static void
stream_text_cb(const ksf_reply *r, void *user)
{
    stream_text *s = user;
    char *t = ksft_json_text(r->value);
    pthread_mutex_lock(&s->lock);
    size_t len = strlen(s->text);
    snprintf(s->text + len, sizeof s->text - len, "%s%s|", t, r->done ? "(done)" : "");
    pthread_mutex_unlock(&s->lock);
    free(t);
    if (r->done) {
        s->last_err = r->err;
        atomic_store(&s->done, 1); /* last: the test reads last_err after it */
    }
}

void
ksft_stream_expect(ksf_client *cli, const char *pattern, json_t *request,
                   const ksf_send_opts *opts, ksf_err want_err, const char *want,
                   int timeout_ms)
{
    stream_text s = {.lock = PTHREAD_MUTEX_INITIALIZER};
    ksf_errinfo ei = {0};
    ksf_err e = ksf_client_send(cli, pattern, request, opts, stream_text_cb, &s, &ei);
    ck_assert_msg(e == KSF_OK, "%s: %s (%s)", pattern, ksf_strerror(e), ei.text);
    KSFT_WAIT_UNTIL(atomic_load(&s.done), timeout_ms, "the last reply of %s", pattern);
    pthread_mutex_lock(&s.lock);
    ck_assert_msg(!strcmp(s.text, want), "%s: got %s, want %s", pattern, s.text, want);
    ck_assert_msg(s.last_err == want_err, "%s: %s, want %s", pattern,
                  ksf_strerror(s.last_err), ksf_strerror(want_err));
    pthread_mutex_unlock(&s.lock);
}

/* ---- tally ------------------------------------------------------------------------ */

void
ksft_tally_init(ksft_tally *t, size_t n)
{
    memset(t, 0, sizeof *t);
    t->n = n;
    t->calls = calloc(n, sizeof *t->calls);
    ck_assert_ptr_nonnull(t->calls);
}

void
ksft_tally_free(ksft_tally *t)
{
    free(t->calls);
    t->calls = NULL;
}

/* The user pointer of request i: the tally plus the index, packed in a small struct. */
typedef struct ticket {
    ksft_tally *t;
    size_t i;
} ticket;

static void
on_reply(const ksf_reply *r, void *user)
{
    ticket *k = user;
    ksft_tally *t = k->t;
    if (atomic_fetch_add(&t->calls[k->i], 1) > 0) {
        atomic_fetch_add(&t->extra_calls, 1);
        return; /* the ticket is freed by the first call */
    }
    switch (r->err) {
    case KSF_OK: {
        json_t *i = json_object_get(r->value, "i");
        if (!json_is_integer(i) || (size_t)json_integer_value(i) != k->i) {
            atomic_fetch_add(&t->wrong_value, 1);
        }
        atomic_fetch_add(&t->ok, 1);
        break;
    }
    case KSF_ETIMEDOUT:
        atomic_fetch_add(&t->timedout, 1);
        break;
    case KSF_ECLOSED:
        atomic_fetch_add(&t->closed, 1);
        break;
    case KSF_EKAFKA:
        atomic_fetch_add(&t->kafka, 1);
        break;
    case KSF_EREMOTE:
        atomic_fetch_add(&t->remote, 1);
        break;
    default:
        atomic_fetch_add(&t->other, 1);
        break;
    }
    if (!r->done) {
        atomic_fetch_add(&t->other, 1);
    }
    free(k);
    atomic_fetch_add(&t->finished, 1); /* last: waiters then read the counts */
}

ksf_err
ksft_tally_send(ksft_tally *t, ksf_client *cli, const char *pattern, size_t i,
                int timeout_ms, int give_up_ms)
{
    ck_assert_uint_lt(i, t->n);
    json_t *v = json_pack("{s:I}", "i", (json_int_t)i);
    ticket *k = malloc(sizeof *k);
    ck_assert_ptr_nonnull(k);
    *k = (ticket){t, i};
    ksf_send_opts o = {.timeout_ms = timeout_ms};
    int64_t until = ksft_now_ms() + give_up_ms;
    ksf_err e;
    while ((e = ksf_client_send(cli, pattern, v, &o, on_reply, k, NULL)) == KSF_EBUSY &&
           ksft_now_ms() < until) {
        ksft_sleep_ms(1); /* back-pressure: wait for replies to make room */
    }
    json_decref(v);
    if (e != KSF_OK) {
        free(k);
    }
    return e;
}

/* One sender thread of ksft_tally_send_threads: indexes [from, to). */
typedef struct tally_sender {
    ksft_tally *t;
    ksf_client *cli;
    const char *pattern;
    size_t from, to;
    int timeout_ms;
    size_t failed;
    pthread_t thread;
} tally_sender;

static void *
tally_sender_main(void *arg)
{
    tally_sender *s = arg;
    for (size_t i = s->from; i < s->to; i++) {
        s->failed +=
            ksft_tally_send(s->t, s->cli, s->pattern, i, s->timeout_ms, 0) != KSF_OK;
    }
    return NULL;
}

size_t
ksft_tally_send_threads(ksft_tally *t, ksf_client *cli, const char *pattern, int threads,
                        int timeout_ms)
{
    ck_assert_int_gt(threads, 0);
    tally_sender *s = calloc((size_t)threads, sizeof *s);
    ck_assert_ptr_nonnull(s);
    size_t share = (t->n + (size_t)threads - 1) / (size_t)threads;
    for (int k = 0; k < threads; k++) {
        size_t from = (size_t)k * share, to = from + share;
        s[k] = (tally_sender){.t = t,
                              .cli = cli,
                              .pattern = pattern,
                              .from = from < t->n ? from : t->n,
                              .to = to < t->n ? to : t->n,
                              .timeout_ms = timeout_ms};
        ck_assert_int_eq(pthread_create(&s[k].thread, NULL, tally_sender_main, &s[k]), 0);
    }
    size_t failed = 0;
    for (int k = 0; k < threads; k++) {
        pthread_join(s[k].thread, NULL);
        failed += s[k].failed;
    }
    free(s);
    return failed;
}

size_t
ksft_tally_finished(ksft_tally *t)
{
    return atomic_load(&t->finished);
}

size_t
ksft_tally_wait(ksft_tally *t, size_t want, int timeout_ms)
{
    ksft_deadline d = ksft_deadline_in(timeout_ms);
    size_t n;
    while ((n = ksft_tally_finished(t)) < want && ksft_deadline_wait(&d)) {
    }
    return n;
}

ksf_client *
ksft_client(const ksf_config *cfg)
{
    ksf_client *cli = NULL;
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_client_new(&cli, cfg, &ei) == KSF_OK, "%s", ei.text);
    return cli;
}

long
ksft_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) {
            rss = 0;
        }
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

bool
ksft_rss_meaningful(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return false;
#else
    return !ksft_under_valgrind();
#endif
}

int
ksft_wait_atomic(atomic_int *counter, int n, int timeout_ms)
{
    ksft_deadline d = ksft_deadline_in(timeout_ms);
    while (atomic_load(counter) < n && ksft_deadline_wait(&d)) {
    }
    return atomic_load(counter);
}

ksf_server_stats
ksft_wait_server_stat(ksf_server *srv, size_t offset, uint64_t n, int timeout_ms)
{
    ksf_server_stats st;
    int64_t until = ksft_now_ms() + ksft_scaled_ms(timeout_ms);
    ck_assert(offset + sizeof(uint64_t) <= sizeof st);
    for (;;) {
        /* First a pause: the counters that follow the awaited one settle with it. */
        ksft_sleep_ms(5);
        ksf_server_get_stats(srv, &st);
        uint64_t v;
        memcpy(&v, (const char *)&st + offset, sizeof v);
        if (v >= n || ksft_now_ms() >= until) {
            return st;
        }
    }
}

/* ---- counters, exactly ------------------------------------------------------------ */

/* One counter of a stats struct: its name and where it is. */
typedef struct stat_field {
    const char *name;
    size_t offset;
    bool narrow; /* uint32_t, not uint64_t */
} stat_field;

#define CLIENT_STAT(f, narrow)                                                           \
    {                                                                                    \
#f, offsetof(ksf_client_stats, f), narrow                                        \
    }
#define SERVER_STAT(f)                                                                   \
    {                                                                                    \
#f, offsetof(ksf_server_stats, f), false                                         \
    }

static uint64_t
stat_at(const void *stats, const stat_field *f)
{
    const char *at = (const char *)stats + f->offset;
    return f->narrow ? *(const uint32_t *)(const void *)at
                     : *(const uint64_t *)(const void *)at;
}

/* Every counter of @p fields equal in @p got and @p want; else one failure naming all
 * that differ. */
static void
assert_stats(const char *what, const char *where, const stat_field *fields, size_t n,
             const void *got, const void *want)
{
    char diff[1024] = "";
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t g = stat_at(got, &fields[i]), w = stat_at(want, &fields[i]);
        if (g != w && len < sizeof diff) {
            len += (size_t)snprintf(diff + len, sizeof diff - len,
                                    " %s %llu (want %llu);", fields[i].name,
                                    (unsigned long long)g, (unsigned long long)w);
        }
    }
    ck_assert_msg(!diff[0], "%s counters, expected {%s} (others 0):%s", what, where,
                  diff);
}

void
ksft_assert_client_stats(ksf_client *cli, ksf_client_stats want, const char *where)
{
    static const stat_field fields[] = {CLIENT_STAT(sent, false),
                                        CLIENT_STAT(replies, false),
                                        CLIENT_STAT(remote_errors, false),
                                        CLIENT_STAT(timeouts, false),
                                        CLIENT_STAT(late_replies, false),
                                        CLIENT_STAT(unknown_replies, false),
                                        CLIENT_STAT(duplicate_replies, false),
                                        CLIENT_STAT(emitted, false),
                                        CLIENT_STAT(send_failures, false),
                                        CLIENT_STAT(emit_failures, false),
                                        CLIENT_STAT(in_flight, true)};
    ksf_client_stats got;
    ksf_client_get_stats(cli, &got);
    assert_stats("client", where, fields, sizeof fields / sizeof fields[0], &got, &want);
}

void
ksft_assert_server_stats(ksf_server *srv, ksf_server_stats want, const char *where)
{
    static const stat_field fields[] = {
        SERVER_STAT(requests),       SERVER_STAT(events),
        SERVER_STAT(replies),        SERVER_STAT(errors),
        SERVER_STAT(no_handler),     SERVER_STAT(malformed),
        SERVER_STAT(reply_failures), SERVER_STAT(expired),
        SERVER_STAT(throttled),      SERVER_STAT(budget_exceeded),
        SERVER_STAT(late_discarded), SERVER_STAT(event_retries),
        SERVER_STAT(dead_lettered),  SERVER_STAT(dlq_failures),
        SERVER_STAT(offset_resets),  SERVER_STAT(offset_reset_skipped),
        SERVER_STAT(reply_refused),  SERVER_STAT(shed),
        SERVER_STAT(refused),        SERVER_STAT(partition_pauses)};
    ksf_server_stats got;
    ksf_server_get_stats(srv, &got);
    assert_stats("server", where, fields, sizeof fields / sizeof fields[0], &got, &want);
    ksft_assert_server_export(srv);
}

void
ksft_assert_server_export(ksf_server *srv)
{
    /* Every counter the metrics export without a pattern label (ksf.h). */
    static const stat_field fields[] = {SERVER_STAT(no_handler),
                                        SERVER_STAT(malformed),
                                        SERVER_STAT(reply_failures),
                                        SERVER_STAT(offset_resets),
                                        SERVER_STAT(offset_reset_skipped),
                                        SERVER_STAT(reply_refused),
                                        SERVER_STAT(refused),
                                        SERVER_STAT(expired),
                                        SERVER_STAT(shed),
                                        SERVER_STAT(throttled),
                                        SERVER_STAT(budget_exceeded),
                                        SERVER_STAT(late_discarded),
                                        SERVER_STAT(event_retries),
                                        SERVER_STAT(dead_lettered),
                                        SERVER_STAT(dlq_failures),
                                        SERVER_STAT(partition_pauses)};
    ksf_server_stats st;
    ksf_server_get_stats(srv, &st);
    json_t *j = NULL;
    ck_assert_int_eq(ksf_server_metrics_json(srv, &j), KSF_OK);
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(ksf_server_write_prometheus(srv, f), KSF_OK);
    ck_assert_int_eq(fclose(f), 0);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        unsigned long long want = (unsigned long long)stat_at(&st, &fields[i]);
        const json_t *v = json_object_get(j, fields[i].name);
        ck_assert_msg(json_is_integer(v) &&
                          (unsigned long long)json_integer_value(v) == want,
                      "metrics JSON \"%s\": want %llu", fields[i].name, want);
        char line[96];
        snprintf(line, sizeof line, "\nksf_server_%s_total %llu\n", fields[i].name, want);
        ck_assert_msg(strstr(text, line), "Prometheus text has no line \"%.*s\"",
                      (int)strlen(line) - 2, line + 1);
    }
    /* Nothing unlabelled beyond them, and the per-pattern values under "patterns". */
    ck_assert_uint_eq(json_object_size(j), sizeof fields / sizeof fields[0] + 1);
    free(text);
    json_decref(j);
}
