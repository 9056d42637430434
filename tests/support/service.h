/*
 * Helpers for the reliability tests (faults, overload, bad input, soak): a ksf server
 * running on its own thread, and a tally that counts every callback of every request
 * a ksf client sent, so a test can assert "exactly one callback per request" and the
 * exact split between replies, timeouts and errors. Create everything inside the test.
 */
#ifndef KSF_TEST_SERVICE_H
#define KSF_TEST_SERVICE_H

#include <ksf/ksf.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

/* ---- a server on a thread ------------------------------------------------------- */

typedef struct ksft_service {
    ksf_server *srv;
    pthread_t thread;
    bool running;
    ksf_err run_err;
    ksf_errinfo ei;
    atomic_int ready;
    atomic_int exited; /* run returned (a server that fails to start is not waited for) */
} ksft_service;

/* A new server on @p cfg (fails the test on error). */
ksf_server *ksft_server(const ksf_config *cfg);

/* A server from @p cfg with an echo handler on each of @p patterns (NULL-terminated):
 * the reply is the request's value. Fails the test on error. */
ksf_server *ksft_echo_server(const ksf_config *cfg, const char *const *patterns);

/* The echo handler itself, for tests registering their own mix. */
ksf_err ksft_echo(ksf_ctx *ctx, const json_t *data, json_t **reply);

/* A handler that fails unexpectedly: it returns KSF_EPROTO without replying, so the
 * caller sees {"status":"error","message":"Internal server error"}. */
ksf_err ksft_crash(ksf_ctx *ctx, const json_t *data, json_t **reply);

/* A handler that refuses every request: it replies the error "refused", so the caller
 * sees {"status":"error","message":"refused"}. */
ksf_err ksft_refuse(ksf_ctx *ctx, const json_t *data, json_t **reply);

/* A handler that adds one to the atomic_int its user pointer names (ksf_ctx_user) and
 * replies nothing: an event handler, or a request answered with null, that a test
 * counts. */
ksf_err ksft_count(ksf_ctx *ctx, const json_t *data, json_t **reply);

/* For handlers: ksf_ctx_reply_error_json with the object {"code": @p code,
 * "message": @p message} (NestJS's RpcException with an object); its result. */
ksf_err ksft_reply_error_object(ksf_ctx *ctx, int code, const char *message);

/* For stream handlers: ksf_ctx_stream @p count integers, @p first, first + @p step,
 * ...; returns the first error ksf_ctx_stream gave (the rest are then not sent). */
ksf_err ksft_stream_ints(ksf_ctx *ctx, int first, int step, int count);

/* Run @p srv on a thread and wait up to @p timeout_ms for its ready callback. */
void ksft_service_start(ksft_service *s, ksf_server *srv, int timeout_ms);

/* Stop, join (asserting run returned KSF_OK) and destroy. Safe when not started. */
void ksft_service_stop(ksft_service *s);

/* ---- every callback of every request ------------------------------------------- */

typedef struct ksft_tally {
    size_t n;
    atomic_uint *calls; /* callbacks per request index */
    atomic_uint ok, timedout, closed, kafka, remote, other, extra_calls;
    atomic_uint wrong_value; /* an OK reply whose value is not the request's */
    atomic_size_t finished;  /* requests with at least one callback */
} ksft_tally;

void ksft_tally_init(ksft_tally *t, size_t n);
void ksft_tally_free(ksft_tally *t);

/* Send request @p i of @p t to @p pattern with the value {"i": i}; retries KSF_EBUSY
 * until @p give_up_ms from now. Returns the final ksf_client_send result. */
ksf_err ksft_tally_send(ksft_tally *t, ksf_client *cli, const char *pattern, size_t i,
                        int timeout_ms, int give_up_ms);

/* Send all t->n requests of @p t (ksft_tally_send, no retry on KSF_EBUSY) from
 * @p threads threads at once, each its own contiguous share of the indexes, and join
 * them: many callers on one client. Returns how many sends failed. */
size_t ksft_tally_send_threads(ksft_tally *t, ksf_client *cli, const char *pattern,
                               int threads, int timeout_ms);

/* Requests that got at least one callback. */
size_t ksft_tally_finished(ksft_tally *t);

/* Wait until @p want requests got a callback or @p timeout_ms passed; returns count. */
size_t ksft_tally_wait(ksft_tally *t, size_t want, int timeout_ms);

/* ---- one request's callbacks ----------------------------------------------------- */

/* What the first callback of one request said, and how many callbacks came. Zero it,
 * pass ksft_outcome_cb and its address to ksf_client_send, then ksft_outcome_wait. */
typedef struct ksft_outcome {
    atomic_int calls; /* set last: the fields below are complete once it is > 0 */
    ksf_err err;
    char text[KSF_ERRINFO_TEXT_SIZE];
    json_t *value; /* a new reference, or NULL */
    char *raw;     /* a NUL-terminated copy of the reply bytes */
    size_t raw_len;
    int64_t at_ms; /* ksft_now_ms() of the first callback */
} ksft_outcome;

/* The ksf_reply_fn that fills the ksft_outcome at @p user (first callback only). */
void ksft_outcome_cb(const ksf_reply *r, void *user);

/* Wait up to ksft_scaled_ms(@p timeout_ms) for the first callback, then fail the test
 * unless exactly one came (a second one would have come with the first). */
void ksft_outcome_wait(ksft_outcome *o, int timeout_ms);

/* Release its value and bytes and zero it for the next request. */
void ksft_outcome_reset(ksft_outcome *o);

/* ---- calls with exact answers --------------------------------------------------- */

/* The compact JSON text of @p v, keys in their order ("(null)" for NULL); free() it. */
char *ksft_json_text(const json_t *v);

/* ksf_client_call @p pattern with the JSON text @p request (NULL: no value), waiting
 * up to @p timeout_ms; fail the test unless the result is @p want and the reply (or the
 * remote error) is exactly the JSON text @p want_json. */
void ksft_call_expect(ksf_client *cli, const char *pattern, const char *request,
                      ksf_err want, const char *want_json, int timeout_ms);

/* ksf_client_send @p pattern with @p request (borrowed; NULL: no value) and @p opts,
 * wait up to @p timeout_ms for its last reply, and fail the test unless that reply's
 * err is @p want_err and all its replies, as text "value|value|last(done)|"
 * (ksft_json_text of each, "(done)" after the last), are exactly @p want. For streamed
 * replies, and for headers or a traceparent that ksf_client_call cannot send. */
void ksft_stream_expect(ksf_client *cli, const char *pattern, json_t *request,
                        const ksf_send_opts *opts, ksf_err want_err, const char *want,
                        int timeout_ms);

/* ---- waiting on a condition ------------------------------------------------------ */

/* Wait until @p counter reaches @p n, for at most ksft_scaled_ms(@p timeout_ms);
 * returns its last value. */
int ksft_wait_atomic(atomic_int *counter, int n, int timeout_ms);

/* Wait until the uint64_t counter at @p offset in @p srv's ksf_server_stats reaches
 * @p n, for at most ksft_scaled_ms(@p timeout_ms); returns the last stats read. Use
 * KSFT_WAIT_SERVER_STAT, which names the field. */
ksf_server_stats ksft_wait_server_stat(ksf_server *srv, size_t offset, uint64_t n,
                                       int timeout_ms);
#define KSFT_WAIT_SERVER_STAT(srv, field, n, timeout_ms)                                 \
    ksft_wait_server_stat((srv), offsetof(ksf_server_stats, field), (n), (timeout_ms))

/* ---- counters, exactly ------------------------------------------------------------ */

/* Fail the test unless every counter of @p cli is the one in @p want (a counter @p want
 * does not name is 0), naming each that differs. Use KSFT_ASSERT_CLIENT_STATS. */
void ksft_assert_client_stats(ksf_client *cli, ksf_client_stats want, const char *where);
#define KSFT_ASSERT_CLIENT_STATS(cli, ...)                                               \
    ksft_assert_client_stats((cli), (ksf_client_stats){__VA_ARGS__}, #__VA_ARGS__)

/* The same for a server's counters. Use KSFT_ASSERT_SERVER_STATS. */
void ksft_assert_server_stats(ksf_server *srv, ksf_server_stats want, const char *where);
#define KSFT_ASSERT_SERVER_STATS(srv, ...)                                               \
    ksft_assert_server_stats((srv), (ksf_server_stats){__VA_ARGS__}, #__VA_ARGS__)

/* Fail the test unless the server's metrics export (JSON and Prometheus text) shows each
 * unlabelled counter with its ksf_server_stats value now. The server must be quiet (no
 * counter may move between the reads). KSFT_ASSERT_SERVER_STATS also runs it. */
void ksft_assert_server_export(ksf_server *srv);

/* ---- misc ------------------------------------------------------------------------ */

void ksft_sleep_ms(int ms);

/* A client from @p cfg (fails the test on error). */
ksf_client *ksft_client(const ksf_config *cfg);

/* Resident set size of this process in KiB (from /proc/self/statm). */
long ksft_rss_kib(void);

/* False when RSS says nothing about what ksf keeps: under ASan (its quarantine keeps
 * freed memory resident) or valgrind (shadow memory grows with the heap). Tests that
 * bound RSS skip only that bound then; every other assertion still runs. */
bool ksft_rss_meaningful(void);

#endif
