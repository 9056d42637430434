#include "obs/trace.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "base/thread_role.h"
#include "codec/deadline.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- random ids ------------------------------------------------------------------- */

/*
 * Ids come from getrandom(2) through a per-thread pool, so a request costs a syscall
 * only every few dozen sends. A forked child must not reuse its parent's pool (both
 * would hand out the same ids): fork bumps a generation that invalidates every pool.
 */
#define POOL_SIZE 512

static atomic_uint fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
on_fork_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
}

static void
register_atfork(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

static _Thread_local struct {
    uint8_t bytes[POOL_SIZE];
    size_t used; /* 0 on a fresh thread: the pool is empty until filled */
    unsigned generation;
    bool filled;
} pool;

/*
 * Fill @p buf from the kernel's CSPRNG. getrandom returns short only on signals; where
 * it fails otherwise (ENOSYS on a pre-3.17 kernel, a seccomp filter) ids need only be
 * unique, not secret, so a splitmix64 stream seeded from the clocks and a counter keeps
 * them coming instead of spinning forever.
 */
static void
fill_random(uint8_t *buf, size_t len)
{
    static atomic_uint_fast64_t fallback_counter;
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n > 0) {
            got += (size_t)n;
        } else if (n == 0 || errno != EINTR) {
            break;
        }
    }
    if (got == len) {
        return;
    }
    struct timespec rt, mt;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mt);
    uint64_t x = (uint64_t)rt.tv_nsec ^ ((uint64_t)mt.tv_nsec << 32) ^
                 (uint64_t)rt.tv_sec * 0x9e3779b97f4a7c15ULL ^
                 atomic_fetch_add(&fallback_counter, 1) << 17 ^ (uintptr_t)buf;
    for (; got < len; got++) {
        x += 0x9e3779b97f4a7c15ULL;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        buf[got] = (uint8_t)(z ^ (z >> 31));
    }
}

static void
random_bytes(uint8_t *out, size_t len)
{
    pthread_once(&atfork_once, register_atfork);
    unsigned gen = atomic_load_explicit(&fork_generation, memory_order_relaxed);
    if (!pool.filled || pool.generation != gen || pool.used + len > POOL_SIZE) {
        fill_random(pool.bytes, POOL_SIZE);
        pool.used = 0;
        pool.generation = gen;
        pool.filled = true;
    }
    memcpy(out, pool.bytes + pool.used, len);
    pool.used += len;
}

static bool
all_zero(const uint8_t *b, size_t len)
{
    uint8_t any = 0; /* no early exit: the loop vectorizes (ids are 8 and 16 bytes) */
    for (size_t i = 0; i < len; i++) {
        any |= b[i];
    }
    return any == 0;
}

/* A random id that is not all zero (the spec's invalid value). */
static void
random_id(uint8_t *out, size_t len)
{
    do {
        random_bytes(out, len);
    } while (all_zero(out, len));
}

void
ksfi_trace_new(ksfi_traceparent *out)
{
    random_id(out->trace_id, sizeof out->trace_id);
    random_id(out->span_id, sizeof out->span_id);
    out->flags = 0x01; /* sampled: without a tracer ksf has no reason to drop it */
}

void
ksfi_trace_child(const ksfi_traceparent *parent, ksfi_traceparent *out)
{
    memcpy(out->trace_id, parent->trace_id, sizeof out->trace_id);
    random_id(out->span_id, sizeof out->span_id);
    out->flags = parent->flags;
}

/* ---- traceparent --------------------------------------------------------------------
 */

/* Each lowercase hex digit's value with bit 4 set (0x10 | value); 0 for anything else
 * (uppercase is invalid too: the spec says lowercase only). The traceparent of every
 * request is parsed, 50 digits: one lookup per digit and one test per id instead of
 * two range tests (or a lookup and a test) per digit. */
static const uint8_t hexval[256] = {
    ['0'] = 0x10, ['1'] = 0x11, ['2'] = 0x12, ['3'] = 0x13, ['4'] = 0x14, ['5'] = 0x15,
    ['6'] = 0x16, ['7'] = 0x17, ['8'] = 0x18, ['9'] = 0x19, ['a'] = 0x1a, ['b'] = 0x1b,
    ['c'] = 0x1c, ['d'] = 0x1d, ['e'] = 0x1e, ['f'] = 0x1f,
};

/* Parse 2 * @p len lowercase hex characters into @p out (written even when invalid). */
static bool
parse_hex(const unsigned char *s, uint8_t *out, size_t len)
{
    unsigned ok = 0x10; /* stays set while every digit had bit 4 */
    for (size_t i = 0; i < len; i++) {
        unsigned hi = hexval[s[2 * i]], lo = hexval[s[2 * i + 1]];
        ok &= hi & lo;
        out[i] = (uint8_t)(hi << 4 | (lo & 0xf));
    }
    return ok != 0;
}

bool
ksfi_traceparent_parse(const void *value, size_t len, ksfi_traceparent *out)
{
    const unsigned char *s = value;
    uint8_t version;
    ksfi_traceparent tp;
    if (!s || len < KSFI_TRACEPARENT_LEN || !parse_hex(s, &version, 1) ||
        version == 0xff) {
        return false;
    }
    /* Version 00 is exactly 55 characters; a later one may append "-<more>". */
    if (version == 0 ? len != KSFI_TRACEPARENT_LEN
                     : len > KSFI_TRACEPARENT_LEN && s[KSFI_TRACEPARENT_LEN] != '-') {
        return false;
    }
    if (s[2] != '-' || s[35] != '-' || s[52] != '-' ||
        !parse_hex(s + 3, tp.trace_id, sizeof tp.trace_id) ||
        !parse_hex(s + 36, tp.span_id, sizeof tp.span_id) ||
        !parse_hex(s + 53, &tp.flags, 1)) {
        return false;
    }
    if (all_zero(tp.trace_id, sizeof tp.trace_id) ||
        all_zero(tp.span_id, sizeof tp.span_id)) {
        return false;
    }
    *out = tp;
    return true;
}

void
ksfi_hex(const uint8_t *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    out[2 * len] = '\0';
}

void
ksfi_traceparent_format(const ksfi_traceparent *tp, char out[KSFI_TRACEPARENT_LEN + 1])
{
    /* Always version 00: the spec has a sender write the version it implements. */
    memcpy(out, "00-", 3);
    ksfi_hex(tp->trace_id, sizeof tp->trace_id, out + 3);
    out[35] = '-';
    ksfi_hex(tp->span_id, sizeof tp->span_id, out + 36);
    out[52] = '-';
    ksfi_hex(&tp->flags, 1, out + 53);
}

/* ---- tracestate -----------------------------------------------------------------------
 */

bool
ksfi_tracestate_valid(const void *value, size_t len)
{
    const unsigned char *s = value;
    if (!s || len == 0 || len > KSFI_TRACESTATE_MAX) {
        return false;
    }
    size_t members = 0;
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && s[end] != ',') {
            end++;
        }
        size_t a = i, b = end; /* one member, optional whitespace trimmed */
        while (a < b && (s[a] == ' ' || s[a] == '\t')) {
            a++;
        }
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) {
            b--;
        }
        if (b > a) { /* empty members are allowed and ignored */
            const unsigned char *eq = memchr(s + a, '=', b - a);
            if (!eq || eq == s + a || ++members > KSFI_TRACESTATE_MEMBERS_MAX) {
                return false;
            }
        }
        for (size_t k = i; k < end; k++) {
            if (s[k] < 0x20 || s[k] > 0x7e) {
                return false;
            }
        }
        i = end + 1;
    }
    return members > 0;
}

/* ---- the scope of a received message ------------------------------------------------
 */

static _Thread_local const ksfi_scope *current_scope KSFI_TLS_FAST;

void
ksfi_scope_enter(const ksfi_scope *s)
{
    current_scope = s;
}

const ksfi_scope *
ksfi_scope_current(void)
{
    return current_scope;
}

/* Quote at most 60 bytes of a header value for a log line, as printable ASCII. */
static void
shown(const void *value, size_t len, char out[64])
{
    const unsigned char *v = value;
    size_t n = len < 60 ? len : 60;
    for (size_t i = 0; i < n; i++) {
        out[i] = v[i] >= 0x20 && v[i] < 0x7f ? (char)v[i] : '?';
    }
    out[n] = '\0';
}

/* Take the tracestate when there is a valid traceparent to go with it. */
static void
scope_tracestate(ksfi_scope *s)
{
    char q[64];
    if (!s->has_ts || !s->in_ts) {
        return;
    }
    if (!s->has_parent || !ksfi_tracestate_valid(s->in_ts, s->in_ts_len)) {
        shown(s->in_ts, s->in_ts_len, q);
        ksfi_log(s->lg, KSF_LOG_DEBUG, "trace", "%s: ignoring tracestate \"%s\" (%s)",
                 s->where, q, s->has_parent ? "invalid" : "no valid traceparent");
        return;
    }
    if (!(s->tracestate = ksfi_strndup(s->in_ts, s->in_ts_len))) {
        ksfi_log(s->lg, KSF_LOG_WARNING, "trace",
                 "%s: out of memory copying tracestate; dropping it", s->where);
    }
}

void
ksfi_scope_init(ksfi_scope *s, const ksfi_header *hdrs, size_t n, const ksfi_logger *lg,
                const char *where, bool reply_headers)
{
    char q[64];
    memset(s, 0, sizeof *s);
    atomic_init(&s->resolved, 0);
    s->lg = lg;
    s->where = where;
    s->reply_headers = reply_headers;
    /* One pass for the three headers (the last of each wins); it was three passes with
     * a strcmp per header each. Their names start with 't' or "ks"; the kafka_*
     * headers a request mostly carries are passed over on their second letter. */
    const ksfi_header *tp = NULL, *ts = NULL, *dl = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *name = hdrs[i].name;
        if (!name || !(name[0] == 't' || (name[0] == 'k' && name[1] == 's'))) {
            continue;
        }
        if (!strcmp(name, KSFI_HDR_TRACEPARENT)) {
            tp = &hdrs[i];
        } else if (!strcmp(name, KSFI_HDR_TRACESTATE)) {
            ts = &hdrs[i];
        } else if (!strcmp(name, KSFI_HDR_DEADLINE)) {
            dl = &hdrs[i];
        }
    }
    if (tp) {
        s->has_tp = true;
        s->in_tp = tp->value;
        s->in_tp_len = tp->value ? tp->len : 0;
    }
    if (ts) {
        s->has_ts = true;
        s->in_ts = ts->value;
        s->in_ts_len = ts->value ? ts->len : 0;
    }
    if (dl && !(dl->value && ksfi_deadline_parse(dl->value, dl->len, &s->deadline_ms))) {
        shown(dl->value, dl->value ? dl->len : 0, q);
        ksfi_log(lg, KSF_LOG_DEBUG, "trace",
                 "%s: ignoring malformed %s \"%s\" (expected epoch milliseconds)", where,
                 KSFI_HDR_DEADLINE, q);
        s->deadline_ms = 0;
    }
}

void
ksfi_scope_forget_headers(ksfi_scope *s)
{
    s->in_tp = s->in_ts = NULL;
    s->in_tp_len = s->in_ts_len = 0;
    s->has_tp = s->has_ts = false;
}

/* The trace part of ksfi_scope_resolve, on the one thread that resolves. */
static void
scope_trace(ksfi_scope *s)
{
    char q[64];
    ksfi_traceparent parent;
    const char *in = s->in_tp;
    if (in && ksfi_traceparent_parse(in, s->in_tp_len, &parent)) {
        s->has_parent = true;
        memcpy(s->parent_id, parent.span_id, sizeof s->parent_id);
        /* The parent-id as it arrived: checked lowercase hex, so no need to re-print. */
        memcpy(s->parent_span_id, in + 36, 16);
        s->parent_span_id[16] = '\0';
        ksfi_trace_child(&parent, &s->span);
    } else {
        if (s->has_tp) {
            shown(in, s->in_tp_len, q);
            ksfi_log(s->lg, KSF_LOG_DEBUG, "trace",
                     "%s: invalid traceparent \"%s\"; starting a new trace", s->where, q);
        }
        ksfi_trace_new(&s->span);
    }
    scope_tracestate(s);
    if (s->has_parent) {
        /* Same trace-id and flags as the parent's traceparent, which was checked to be
         * lowercase hex: copied as they arrived; only the new span id is printed. */
        memcpy(s->traceparent, "00-", 3);
        memcpy(s->traceparent + 3, in + 3, 33); /* trace-id and its '-' */
        ksfi_hex(s->span.span_id, sizeof s->span.span_id, s->traceparent + 36);
        s->traceparent[52] = '-';
        memcpy(s->traceparent + 53, in + 53, 2);
        s->traceparent[KSFI_TRACEPARENT_LEN] = '\0';
    } else {
        ksfi_traceparent_format(&s->span, s->traceparent);
    }
    /* The ids' hex are parts of the traceparent just printed. */
    memcpy(s->trace_id, s->traceparent + 3, 32);
    s->trace_id[32] = '\0';
    memcpy(s->span_id, s->traceparent + 36, 16);
    s->span_id[16] = '\0';
}

const ksfi_scope *
ksfi_scope_resolve(const ksfi_scope *cs)
{
    /* A cache filled once: the scope lives in a ctx that is not itself const, the
     * accessors only see it through const pointers. */
    ksfi_scope *s = (ksfi_scope *)cs;
    if (atomic_load_explicit(&s->resolved, memory_order_acquire) == 2) {
        return s;
    }
    int expect = 0;
    if (atomic_compare_exchange_strong_explicit(
            &s->resolved, &expect, 1, memory_order_acq_rel, memory_order_acquire)) {
        scope_trace(s);
        atomic_store_explicit(&s->resolved, 2, memory_order_release);
        return s;
    }
    /* Another thread is resolving it (a deferred handler's ctx read from two threads
     * at once): it takes a microsecond; the random span id must be one. */
    while (atomic_load_explicit(&s->resolved, memory_order_acquire) != 2) {
        sched_yield();
    }
    return s;
}

void
ksfi_scope_clear(ksfi_scope *s)
{
    ksfi_free(s->tracestate);
    s->tracestate = NULL;
}

size_t
ksfi_scope_reply_headers(const ksfi_scope *s, ksfi_header out[KSFI_TRACE_HEADERS_MAX])
{
    if (!s->reply_headers) {
        return 0;
    }
    s = ksfi_scope_resolve(s);
    size_t n = 0;
    out[n++] = (ksfi_header){KSFI_HDR_TRACEPARENT, s->traceparent, KSFI_TRACEPARENT_LEN};
    if (s->tracestate) {
        out[n++] =
            (ksfi_header){KSFI_HDR_TRACESTATE, s->tracestate, strlen(s->tracestate)};
    }
    return n;
}

/* ---- outgoing ------------------------------------------------------------------------
 */

ksf_err
ksfi_trace_outgoing(const char *traceparent, const char *tracestate,
                    char tp_buf[KSFI_TRACEPARENT_LEN + 1],
                    ksfi_header out[KSFI_TRACE_HEADERS_MAX], size_t *count,
                    ksf_errinfo *ei)
{
    const ksfi_scope *cur = ksfi_scope_current();
    ksfi_traceparent tp;
    const char *state = NULL;
    if (traceparent) {
        if (!ksfi_traceparent_parse(traceparent, strlen(traceparent), &tp)) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "opts.traceparent \"%.60s\" is not a W3C traceparent; "
                             "expected 00-<32 hex>-<16 hex>-<2 hex>, lowercase, ids not "
                             "all zero",
                             traceparent);
        }
        state = tracestate;
    } else if (tracestate) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "opts.tracestate needs opts.traceparent: a tracestate belongs "
                         "to one trace position");
    } else if (cur) {
        cur = ksfi_scope_resolve(cur);
        ksfi_trace_child(&cur->span, &tp); /* continue the handler's trace */
        state = cur->tracestate;
    } else {
        ksfi_trace_new(&tp);
    }
    if (state && *state && !ksfi_tracestate_valid(state, strlen(state))) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "opts.tracestate \"%.60s\" is not a W3C tracestate; expected "
                         "1..%d printable characters, key=value members, at most %d",
                         state, KSFI_TRACESTATE_MAX, KSFI_TRACESTATE_MEMBERS_MAX);
    }
    /* A caller's traceparent is sent as given: a bridge injects its own span's id. */
    if (traceparent) {
        memcpy(tp_buf, traceparent, KSFI_TRACEPARENT_LEN);
        tp_buf[KSFI_TRACEPARENT_LEN] = '\0';
        if (strlen(traceparent) != KSFI_TRACEPARENT_LEN) {
            ksfi_traceparent_format(&tp, tp_buf); /* a later version: send as 00 */
        }
    } else {
        ksfi_traceparent_format(&tp, tp_buf);
    }
    size_t n = 0;
    out[n++] = (ksfi_header){KSFI_HDR_TRACEPARENT, tp_buf, KSFI_TRACEPARENT_LEN};
    if (state && *state) {
        out[n++] = (ksfi_header){KSFI_HDR_TRACESTATE, state, strlen(state)};
    }
    *count = n;
    return KSF_OK;
}

ksf_err
ksfi_deadline_outgoing(int timeout_ms, int *timeout_out, int64_t *deadline_out,
                       ksf_errinfo *ei)
{
    const ksfi_scope *cur = ksfi_scope_current();
    int64_t now = ksfi_wall_ms();
    int timeout = timeout_ms;
    if (cur && cur->deadline_ms) {
        int64_t left = cur->deadline_ms - now;
        if (left <= 0) {
            return ksfi_fail(ei, KSF_ETIMEDOUT,
                             "the handler's own deadline passed %lld ms ago; not sending "
                             "a request whose caller has given up",
                             (long long)-left);
        }
        if (left < timeout) {
            timeout = (int)left;
        }
    }
    *timeout_out = timeout;
    *deadline_out = now + timeout;
    return KSF_OK;
}
