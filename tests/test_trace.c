/*
 * W3C Trace Context and ksf_deadline as pure functions: the traceparent parser against
 * every invalid form the spec names, the formatter byte for byte, tracestate limits,
 * random ids, the per-thread scope and what an outgoing message gets from it.
 * The end-to-end behaviour is in tests/test_deadline.c.
 */
#include "obs/trace.h"
#include "server/deadline.h"

#include "settings.h"
#include "suite.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TP_SPEC "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

static bool
parses(const char *s)
{
    ksfi_traceparent tp;
    return ksfi_traceparent_parse(s, strlen(s), &tp);
}

KSFT_TEST(test_trace_parse_valid, 10)
{
    ksfi_traceparent tp;
    char out[KSFI_TRACEPARENT_LEN + 1];
    static const uint8_t trace[16] = {0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd,
                                      0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c};
    static const uint8_t span[8] = {0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31};
    ck_assert(ksfi_traceparent_parse(TP_SPEC, 55, &tp));
    ck_assert_int_eq(memcmp(tp.trace_id, trace, 16), 0);
    ck_assert_int_eq(memcmp(tp.span_id, span, 8), 0);
    ck_assert_uint_eq(tp.flags, 1);
    ksfi_traceparent_format(&tp, out);
    ck_assert_str_eq(out, TP_SPEC);
    /* Unsampled, and flags this version does not define, are kept as they are. */
    ck_assert(parses("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"));
    ck_assert(parses("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff"));
    /* A later version: 55 characters, or more after a '-'; re-sent as version 00. */
    ck_assert(parses("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    ck_assert(ksfi_traceparent_parse(
        "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds",
        79, &tp));
    ksfi_traceparent_format(&tp, out);
    ck_assert_str_eq(out, TP_SPEC);
}
END_TEST

/* Every byte value at every id position: accepted exactly when it is a lowercase hex
 * digit, and then read as that digit's value into the right nibble. */
KSFT_TEST(test_trace_parse_every_byte, 10)
{
    static const char digits[] = "0123456789abcdef";
    char tp[56];
    for (size_t pos = 3; pos < 52; pos++) {
        if (pos == 35) {
            continue; /* the '-' between the ids */
        }
        for (int b = 0; b < 256; b++) {
            memcpy(tp, TP_SPEC, sizeof tp);
            tp[pos] = (char)b;
            const char *d = b ? strchr(digits, b) : NULL;
            ksfi_traceparent got;
            bool ok = ksfi_traceparent_parse(tp, 55, &got);
            ck_assert_msg(ok == (d != NULL), "byte 0x%02x at %zu: %s", b, pos,
                          ok ? "accepted" : "refused");
            if (!ok) {
                continue;
            }
            /* Nibble k of the ids (trace-id then parent-id) is character pos. */
            size_t k = pos < 35 ? pos - 3 : 32 + pos - 36;
            const uint8_t *ids = k < 32 ? got.trace_id : got.span_id;
            size_t nib = k < 32 ? k : k - 32;
            uint8_t byte = ids[nib / 2];
            int v = nib % 2 ? byte & 0xf : byte >> 4;
            ck_assert_int_eq(v, (int)(d - digits));
            char back[56];
            ksfi_traceparent_format(&got, back);
            ck_assert_str_eq(back, tp);
        }
    }
}
END_TEST

KSFT_TEST(test_trace_parse_invalid, 10)
{
    static const char *const bad[] = {
        "",
        "00",
        /* version ff is forbidden; version 00 must be exactly 55 characters */
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
        /* a later version longer than 55 needs a '-' after the flags */
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
        /* uppercase hex anywhere */
        "0A-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0A",
        /* all-zero ids */
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        /* not hex, wrong separators, fields shifted */
        "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331_01",
        "00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333 -01",
        "xx-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!parses(bad[i]), "accepted \"%s\"", bad[i]);
    }
    ksfi_traceparent tp;
    ck_assert(!ksfi_traceparent_parse(NULL, 0, &tp));
    /* An embedded NUL is not hex. */
    ck_assert(!ksfi_traceparent_parse(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0\0", 55, &tp));
}
END_TEST

KSFT_TEST(test_trace_tracestate_limits, 10)
{
    char big[600];
    ck_assert(ksfi_tracestate_valid("congo=t61rcWkgMzE", 17));
    ck_assert(ksfi_tracestate_valid("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE", 40));
    ck_assert(ksfi_tracestate_valid("a=1,,b=2", 8)); /* empty members are allowed */
    ck_assert(!ksfi_tracestate_valid("", 0));
    ck_assert(!ksfi_tracestate_valid(",", 1));
    ck_assert(!ksfi_tracestate_valid("novalue", 7));
    ck_assert(!ksfi_tracestate_valid("=v", 2));
    ck_assert(!ksfi_tracestate_valid("a=\x01", 3));
    ck_assert(!ksfi_tracestate_valid("a=\xc3\xa9", 4));
    /* 32 members pass, 33 do not */
    size_t n = 0;
    for (int i = 0; i < 33; i++) {
        n += (size_t)snprintf(big + n, sizeof big - n, "%sk%d=v", i ? "," : "", i);
        if (i == 31) {
            ck_assert(ksfi_tracestate_valid(big, n));
        }
    }
    ck_assert(!ksfi_tracestate_valid(big, n));
    /* 512 characters pass, 513 do not */
    memset(big, 'x', sizeof big);
    big[0] = 'k';
    big[1] = '=';
    ck_assert(ksfi_tracestate_valid(big, 512));
    ck_assert(!ksfi_tracestate_valid(big, 513));
}
END_TEST

static int
cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 8);
}

KSFT_TEST(test_trace_new_and_child_ids, 10)
{
    ksfi_traceparent a, b, c;
    char ta[56], tb[56];
    ksfi_trace_new(&a);
    ksfi_trace_new(&b);
    ck_assert_uint_eq(a.flags, 1);
    ck_assert_int_ne(memcmp(a.trace_id, b.trace_id, 16), 0);
    ck_assert_int_ne(memcmp(a.span_id, b.span_id, 8), 0);
    ksfi_traceparent_format(&a, ta);
    ck_assert(parses(ta)); /* lowercase, not all zero, 55 characters */
    a.flags = 0;
    ksfi_trace_child(&a, &c);
    ck_assert_int_eq(memcmp(a.trace_id, c.trace_id, 16), 0);
    ck_assert_int_ne(memcmp(a.span_id, c.span_id, 8), 0);
    ck_assert_uint_eq(c.flags, 0);
    /* Many ids through the per-thread pool (several refills): no repeats. */
    static uint8_t ids[4096][8];
    for (int i = 0; i < 4096; i++) {
        ksfi_trace_child(&a, &c);
        memcpy(ids[i], c.span_id, 8);
    }
    qsort(ids, 4096, 8, cmp_id);
    for (int i = 1; i < 4096; i++) {
        ck_assert_int_ne(memcmp(ids[i - 1], ids[i], 8), 0);
    }
    ksfi_traceparent_format(&b, tb);
    ck_assert_str_ne(ta, tb);
}
END_TEST

KSFT_TEST(test_trace_scope_from_headers, 10)
{
    char dl[21];
    size_t dlen = ksfi_deadline_format(1700000000123LL, dl);
    ksfi_header h[] = {
        {KSFI_HDR_TRACEPARENT, "garbage", 7}, /* an earlier one: the last wins */
        {KSFI_HDR_TRACEPARENT, TP_SPEC, 55},
        {KSFI_HDR_TRACESTATE, "congo=t61rcWkgMzE", 17},
        {KSFI_HDR_DEADLINE, dl, dlen},
    };
    ksfi_scope s;
    ksfi_scope_init(&s, h, 4, NULL, "t", true);
    ck_assert_int_eq(s.deadline_ms, 1700000000123LL); /* read at once */
    ck_assert_int_eq(atomic_load(&s.resolved), 0);    /* the trace part not yet */
    ck_assert_ptr_eq(ksfi_scope_resolve(&s), &s);
    ck_assert_int_eq(atomic_load(&s.resolved), 2);
    ck_assert(s.has_parent);
    ck_assert_str_eq(s.trace_id, "0af7651916cd43dd8448eb211c80319c");
    ck_assert_str_eq(s.parent_span_id, "b7ad6b7169203331");
    ck_assert_str_ne(s.span_id, "b7ad6b7169203331");
    ck_assert_uint_eq(strlen(s.span_id), 16);
    ck_assert_str_eq(s.tracestate, "congo=t61rcWkgMzE");
    ck_assert_int_eq(s.deadline_ms, 1700000000123LL);
    char want[56];
    snprintf(want, sizeof want, "00-%s-%s-01", s.trace_id, s.span_id);
    ck_assert_str_eq(s.traceparent, want);
    ksfi_header r[KSFI_TRACE_HEADERS_MAX];
    ck_assert_uint_eq(ksfi_scope_reply_headers(&s, r), 2);
    ck_assert_str_eq(r[0].name, "traceparent");
    ck_assert_uint_eq(r[0].len, 55);
    ck_assert_int_eq(memcmp(r[0].value, want, 55), 0);
    ck_assert_str_eq(r[1].name, "tracestate");
    ck_assert_int_eq(memcmp(r[1].value, "congo=t61rcWkgMzE", 17), 0);
    ksfi_scope_clear(&s);

    /* Invalid traceparent: a new trace, and its tracestate is dropped with it; a
     * malformed deadline is ignored. */
    ksfi_header bad[] = {
        {KSFI_HDR_TRACEPARENT, "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
         55},
        {KSFI_HDR_TRACESTATE, "congo=t61rcWkgMzE", 17},
        {KSFI_HDR_DEADLINE, "12abc", 5},
    };
    ksfi_scope_init(&s, bad, 3, NULL, "t", true);
    ck_assert_int_eq(s.deadline_ms, 0);
    ksfi_scope_resolve(&s);
    ck_assert(!s.has_parent);
    ck_assert_str_ne(s.trace_id, "0af7651916cd43dd8448eb211c80319c");
    ck_assert_str_eq(s.parent_span_id, "");
    ck_assert_ptr_null(s.tracestate);
    ck_assert_int_eq(s.deadline_ms, 0);
    ck_assert_uint_eq(ksfi_scope_reply_headers(&s, r), 1);
    ksfi_scope_clear(&s);

    /* The scope's traceparent is built from the parent's text (trace-id and flags as
     * they came): version 00 even from a later version's longer header, unsampled
     * flags kept, and the new span's bytes printed in it. */
    const char later[] = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-more";
    ksfi_header v1[] = {{KSFI_HDR_TRACEPARENT, later, sizeof later - 1}};
    ksfi_scope_init(&s, v1, 1, NULL, "t", true);
    ksfi_scope_resolve(&s);
    ck_assert(s.has_parent);
    char span_hex[17];
    ksfi_hex(s.span.span_id, 8, span_hex);
    snprintf(want, sizeof want, "00-0af7651916cd43dd8448eb211c80319c-%s-00", span_hex);
    ck_assert_str_eq(s.traceparent, want);
    ck_assert_str_eq(s.span_id, span_hex);
    ck_assert_uint_eq(s.span.flags, 0);
    ksfi_scope_clear(&s);
}
END_TEST

/* Threads resolving one scope at once (a deferred handler's ctx read from two). */
typedef struct resolver {
    const ksfi_scope *s;
    pthread_barrier_t *go;
    char span_id[17];
} resolver;

static void *
resolve_main(void *arg)
{
    resolver *r = arg;
    pthread_barrier_wait(r->go);
    snprintf(r->span_id, sizeof r->span_id, "%s", ksfi_scope_resolve(r->s)->span_id);
    return NULL;
}

/* The trace part is worked out on first use only, once, and not at all for a reply
 * without trace headers (trace.headers=false). */
KSFT_TEST(test_trace_scope_lazy, 10)
{
    ksfi_header h[] = {{KSFI_HDR_TRACEPARENT, TP_SPEC, 55},
                       {KSFI_HDR_TRACESTATE, "k=v", 3}};
    ksfi_header r[KSFI_TRACE_HEADERS_MAX];
    ksfi_scope s;
    ksfi_scope_init(&s, h, 2, NULL, "t", false);
    ck_assert_uint_eq(ksfi_scope_reply_headers(&s, r), 0);
    ck_assert_int_eq(atomic_load(&s.resolved), 0);
    ck_assert_ptr_null(s.tracestate);
    /* Asked for later, it still continues the incoming trace. */
    ksfi_scope_resolve(&s);
    ck_assert(s.has_parent);
    ck_assert_str_eq(s.trace_id, "0af7651916cd43dd8448eb211c80319c");
    ck_assert_str_eq(s.parent_span_id, "b7ad6b7169203331");
    ck_assert_str_eq(s.tracestate, "k=v");
    ck_assert_uint_eq(ksfi_scope_reply_headers(&s, r), 0);
    ksfi_scope_clear(&s);

    /* With reply headers: resolved by the reply, and a later resolve keeps its span. */
    ksfi_scope_init(&s, h, 2, NULL, "t", true);
    ck_assert_int_eq(atomic_load(&s.resolved), 0);
    ck_assert_uint_eq(ksfi_scope_reply_headers(&s, r), 2);
    ck_assert_int_eq(atomic_load(&s.resolved), 2);
    char first[56];
    memcpy(first, r[0].value, 55);
    first[55] = '\0';
    ck_assert_str_eq(ksfi_scope_resolve(&s)->traceparent, first);
    ksfi_scope_clear(&s);

    /* Eight threads at once: one span id among them. */
    for (int round = 0; round < 20; round++) {
        enum { N = 8 };
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, N);
        resolver rs[N];
        pthread_t t[N];
        ksfi_scope_init(&s, h, 2, NULL, "t", true);
        for (int i = 0; i < N; i++) {
            rs[i] = (resolver){.s = &s, .go = &go};
            ck_assert_int_eq(pthread_create(&t[i], NULL, resolve_main, &rs[i]), 0);
        }
        for (int i = 0; i < N; i++) {
            pthread_join(t[i], NULL);
        }
        for (int i = 0; i < N; i++) {
            ck_assert_str_eq(rs[i].span_id, s.span_id);
        }
        ksfi_scope_clear(&s);
        pthread_barrier_destroy(&go);
    }
}
END_TEST

KSFT_TEST(test_trace_outgoing_headers, 10)
{
    char buf[56];
    ksfi_header h[KSFI_TRACE_HEADERS_MAX];
    size_t n = 0;
    ksf_errinfo ei = {0};
    /* Outside a handler: a new trace each time. */
    ck_assert_int_eq(ksfi_trace_outgoing(NULL, NULL, buf, h, &n, &ei), KSF_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(h[0].name, "traceparent");
    ck_assert(parses(buf));
    /* The caller's own context is sent as given. */
    ck_assert_int_eq(ksfi_trace_outgoing(TP_SPEC, "a=b", buf, h, &n, &ei), KSF_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(buf, TP_SPEC);
    ck_assert_int_eq(memcmp(h[1].value, "a=b", 3), 0);
    /* Bad input is refused with a sentence. */
    ck_assert_int_eq(ksfi_trace_outgoing("00-zz", NULL, buf, h, &n, &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "opts.traceparent \"00-zz\""));
    ck_assert_int_eq(ksfi_trace_outgoing(NULL, "a=b", buf, h, &n, &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "needs opts.traceparent"));
    ck_assert_int_eq(ksfi_trace_outgoing(TP_SPEC, "novalue", buf, h, &n, &ei),
                     KSF_EINVAL);
    /* Inside a handler's scope: the same trace, a new span, its tracestate. */
    ksfi_header in[] = {{KSFI_HDR_TRACEPARENT, TP_SPEC, 55},
                        {KSFI_HDR_TRACESTATE, "x=1", 3}};
    ksfi_scope s;
    ksfi_scope_init(&s, in, 2, NULL, "t", true);
    ksfi_scope_enter(&s);
    ck_assert_ptr_eq(ksfi_scope_current(), &s);
    ck_assert_int_eq(ksfi_trace_outgoing(NULL, NULL, buf, h, &n, &ei), KSF_OK);
    ksfi_scope_enter(NULL);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(strncmp(buf, "00-0af7651916cd43dd8448eb211c80319c-", 36), 0);
    ck_assert_int_ne(strncmp(buf + 36, "b7ad6b7169203331", 16), 0);
    ck_assert_int_ne(strncmp(buf + 36, s.span_id, 16), 0);
    ck_assert_str_eq(buf + 52, "-01");
    ck_assert_int_eq(memcmp(h[1].value, "x=1", 3), 0);
    ksfi_scope_clear(&s);
    ck_assert_ptr_null(ksfi_scope_current());
}
END_TEST

KSFT_TEST(test_trace_deadline_parse_format, 10)
{
    int64_t v = 0;
    char out[21];
    ck_assert(ksfi_deadline_parse("1700000000123", 13, &v));
    ck_assert_int_eq(v, 1700000000123LL);
    ck_assert_uint_eq(ksfi_deadline_format(v, out), 13);
    ck_assert_str_eq(out, "1700000000123");
    /* Two digits per step: every length, odd and even, each pair's both digits. */
    static const int64_t vals[] = {0,
                                   1,
                                   9,
                                   10,
                                   42,
                                   99,
                                   100,
                                   109,
                                   999,
                                   1000,
                                   12345,
                                   907050301,
                                   99999999999,
                                   946684800000LL,
                                   4102444799999LL,
                                   INT64_MAX,
                                   -5};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        char want[24];
        snprintf(want, sizeof want, "%lld", (long long)(vals[i] < 0 ? 0 : vals[i]));
        ck_assert_uint_eq(ksfi_deadline_format(vals[i], out), strlen(want));
        ck_assert_str_eq(out, want);
    }
    static const char *const bad[] = {
        "",
        "-1700000000123",
        "1700000000123 ",
        "+1700000000123",
        "17000000001.3",
        "1700000000", /* seconds, not milliseconds: year 1970 */
        "946684799999",
        "4102444800000",
        "99999999999999999999",
        "9999999999999999999",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!ksfi_deadline_parse(bad[i], strlen(bad[i]), &v), "accepted %s",
                      bad[i]);
    }
    ck_assert(ksfi_deadline_parse("946684800000", 12, &v));
    ck_assert(ksfi_deadline_parse("0004102444799999", 16, &v));
    ck_assert_int_eq(v, 4102444799999LL);
    ck_assert(!ksfi_deadline_parse(NULL, 0, &v));
}
END_TEST

KSFT_TEST(test_trace_deadline_clamp, 10)
{
    int t = 0;
    int64_t d = 0;
    ksf_errinfo ei = {0};
    int64_t now = ksfi_wall_ms();
    /* Outside a handler the timeout stands. */
    ck_assert_int_eq(ksfi_deadline_outgoing(5000, &t, &d, &ei), KSF_OK);
    ck_assert_int_eq(t, 5000);
    ck_assert(d >= now + 5000 && d <= ksfi_wall_ms() + 5000);
    /* In a handler with 2 s left: a 5 s timeout is cut to what is left, 1 s is kept. */
    ksfi_scope s = {.deadline_ms = ksfi_wall_ms() + 2000};
    ksfi_scope_enter(&s);
    ck_assert_int_eq(ksfi_deadline_outgoing(5000, &t, &d, &ei), KSF_OK);
    ck_assert(t <= 2000 && t > 1000);
    ck_assert_int_eq(d, s.deadline_ms);
    ck_assert_int_eq(ksfi_deadline_outgoing(1000, &t, &d, &ei), KSF_OK);
    ck_assert_int_eq(t, 1000);
    ck_assert(d < s.deadline_ms);
    /* Passed already: refused, the request would be work nobody waits for. */
    s.deadline_ms = ksfi_wall_ms() - 10;
    ck_assert_int_eq(ksfi_deadline_outgoing(5000, &t, &d, &ei), KSF_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(ei.text, "deadline passed"));
    ksfi_scope_enter(NULL);
}
END_TEST

/* The server's "deadline passed" rule alone (codec/deadline.c is pure). */
KSFT_TEST(test_trace_deadline_passed, 60)
{
    int64_t late = -1;
    ck_assert(!ksfi_deadline_passed(0, 1700000005000LL, 1000, &late)); /* no deadline */
    ck_assert_int_eq(late, -1);
    ck_assert(!ksfi_deadline_passed(1700000004000LL, 1700000005000LL, 1000, &late));
    ck_assert_int_eq(late, -1); /* exactly the skew late: still within it */
    ck_assert(ksfi_deadline_passed(1700000004000LL, 1700000005001LL, 1000, &late));
    ck_assert_int_eq(late, 1001);
    ck_assert(!ksfi_deadline_passed(1700000009000LL, 1700000005000LL, 0, &late));
    ck_assert(ksfi_deadline_passed(1700000004999LL, 1700000005000LL, 0, &late));
    ck_assert_int_eq(late, 1);
}
END_TEST

KSFT_TEST(test_trace_skew_config, 60)
{
    ksf_config *cfg = NULL;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ksft_assert_config_get(cfg, "server.deadline.skew.ms", "1000");
    ksf_config_destroy(cfg);
    ksft_assert_config_accepts("server.deadline.skew.ms", "0", NULL);
    ksft_assert_config_refuses("server.deadline.skew.ms", "-1", KSF_EINVAL,
                               "server.deadline.skew.ms \"-1\": expected an integer from "
                               "0 to 3600000");
    ksft_assert_config_refuses("server.deadline.skew.ms", "3600001", KSF_EINVAL,
                               "server.deadline.skew.ms \"3600001\": expected an integer "
                               "from 0 to 3600000");
}
END_TEST

KSFT_MAIN("trace")
