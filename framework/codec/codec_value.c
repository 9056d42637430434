/*
 * Payloads as NestJS encodes and parses them: JSON.stringify with JavaScript's number
 * formatting, KafkaRequestSerializer.encode, Node's UTF-8 repair and KafkaParser's
 * {/[ sniff with JSON.parse's number and escape rules. Pure functions.
 */
#include "codec/codec.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "codec/wire.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

/* ---- a growable byte buffer ------------------------------------------------------ */

typedef struct sbuf {
    char *data;
    size_t len, cap;
    bool oom;
    bool borrowed; /* data is the caller's (a stack buffer): never realloc'd or freed */
} sbuf;

/* Make room for @p n more bytes and a NUL; false (and b->oom) when out of memory. Kept
 * out of line so that sb_put's common case, a copy into room there is, stays small
 * enough to be inlined into the stringify loops. */
__attribute__((noinline)) static bool
sb_grow(sbuf *b, size_t n)
{
    char *grown = ksfi_grow(b->borrowed ? NULL : b->data, &b->cap, b->len + n + 1, 64);
    if (!grown) {
        b->oom = true;
        return false;
    }
    if (b->borrowed) { /* what the caller's buffer holds moves to the heap */
        memcpy(grown, b->data, b->len);
        b->borrowed = false;
    }
    b->data = grown;
    return true;
}

static inline void
sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom || (b->len + n + 1 > b->cap && !sb_grow(b, n))) {
        return;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void
sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* Hand the buffer over (an empty string when nothing was written); NULL on ENOMEM. */
static char *
sb_finish(sbuf *b, size_t *len)
{
    if (!b->oom && !b->data) {
        sb_put(b, "", 0);
    }
    if (b->oom) {
        ksfi_free(b->data);
        return NULL;
    }
    if (len) {
        *len = b->len;
    }
    return b->data;
}

/* ---- numbers as JavaScript prints them -------------------------------------------- */

/*
 * The p+1 significant digits of |d| rounded to nearest by printf, moved by @p bump
 * units in the last place, into digits[] (no point) and *exp10 (d ~ D.DDD x 10^exp10).
 * Returns true when that decimal reads back as exactly d.
 */
static bool
digits_round_trip(double d, int prec, int bump, char digits[24], int *exp10)
{
    char sci[48];
    snprintf(sci, sizeof sci, "%.*e", prec, fabs(d));
    char point = prec > 0 ? sci[1] : '.'; /* the locale's, so strtod agrees */
    int nd = 0;
    const char *p = sci;
    for (; *p != 'e'; p++) {
        if (*p >= '0' && *p <= '9') {
            digits[nd++] = *p;
        }
    }
    *exp10 = atoi(p + 1);
    for (int i = nd - 1; bump && i >= 0; i--) { /* add bump with carry/borrow */
        int v = digits[i] - '0' + bump;
        bump = v > 9 ? 1 : v < 0 ? -1 : 0;
        digits[i] = (char)('0' + (v + 10) % 10);
    }
    if (bump > 0) { /* 9.99 + 0.01 = 10.00: renormalise to 1.000 x 10^(e+1) */
        digits[0] = '1';
        (*exp10)++;
    } else if (digits[0] == '0') { /* 1.00 - 0.01 = 0.99: 9.90 x 10^(e-1) */
        memmove(digits, digits + 1, (size_t)nd - 1);
        digits[nd - 1] = '0';
        (*exp10)--;
    }
    char text[64];
    int o = snprintf(text, sizeof text, "%c%c", digits[0], point);
    memcpy(text + o, digits + 1, (size_t)nd - 1);
    snprintf(text + o + nd - 1, sizeof text - (size_t)(o + nd - 1), "e%d", *exp10);
    digits[nd] = '\0';
    return strtod(text, NULL) == fabs(d);
}

/*
 * JavaScript's Number::toString: the fewest significant digits that read back as d
 * (ECMA-262 6.1.6.1.20); printf's nearest rounding at that length can miss where the
 * rounding interval is lopsided (powers of two), so the neighbours are tried too.
 */
void
ksfi_format_number(double d, char buf[32])
{
    if (!isfinite(d)) {
        strcpy(buf, "null");
        return;
    }
    if (d == 0) {
        strcpy(buf, "0"); /* also -0, as Number#toString does */
        return;
    }
    char digits[24];
    int e10 = 0;
    for (int prec = 0; prec < 17; prec++) {
        if (digits_round_trip(d, prec, 0, digits, &e10) ||
            digits_round_trip(d, prec, 1, digits, &e10) ||
            digits_round_trip(d, prec, -1, digits, &e10)) {
            break;
        }
    }
    size_t k = strlen(digits);
    while (k > 1 && digits[k - 1] == '0') {
        k--;
    }
    int n = e10 + 1; /* value = 0.digits * 10^n */
    char *o = buf;
    if (d < 0) {
        *o++ = '-';
    }
    if ((int)k <= n && n <= 21) {
        memcpy(o, digits, k);
        o += k;
        for (int i = 0; i < n - (int)k; i++) {
            *o++ = '0';
        }
    } else if (0 < n && n <= 21) {
        memcpy(o, digits, (size_t)n);
        o += n;
        *o++ = '.';
        memcpy(o, digits + n, k - (size_t)n);
        o += k - (size_t)n;
    } else if (-6 < n && n <= 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -n; i++) {
            *o++ = '0';
        }
        memcpy(o, digits, k);
        o += k;
    } else {
        *o++ = digits[0];
        if (k > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, k - 1);
            o += k - 1;
        }
        o += sprintf(o, "e%c%d", n - 1 < 0 ? '-' : '+', abs(n - 1));
    }
    *o = '\0';
}

/* ---- JSON.stringify ---------------------------------------------------------------- */

/* A byte JSON.stringify escapes in a string: a control, '"' or '\\'. */
static inline bool
escaped_byte(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\';
}

static void
stringify_string(sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t plain = 0;
    while (plain < n && !escaped_byte((unsigned char)s[plain])) {
        plain++;
    }
    if (plain == n) { /* nearly every key and value: quotes and bytes in one copy */
        if (b->oom || (b->len + n + 3 > b->cap && !sb_grow(b, n + 2))) {
            return;
        }
        char *o = b->data + b->len;
        o[0] = '"';
        memcpy(o + 1, s, n);
        o[n + 1] = '"';
        o[n + 2] = '\0';
        b->len += n + 2;
        return;
    }
    sb_put(b, "\"", 1);
    size_t run = plain; /* bytes copied verbatim, flushed in one go */
    for (size_t i = plain; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            if (c < 0x20) {
                u[0] = '\\';
                u[1] = 'u';
                u[2] = '0';
                u[3] = '0';
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
                u[6] = '\0';
                esc = u;
            }
        }
        if (esc) {
            sb_put(b, s + i - run, run);
            run = 0;
            sb_puts(b, esc);
        } else {
            run++;
        }
    }
    sb_put(b, s + n - run, run);
    sb_put(b, "\"", 1);
}

static void stringify(sbuf *b, const json_t *v);

/*
 * JavaScript objects enumerate "array index" keys (canonical decimal integers below
 * 2^32 - 1) first, in ascending order, and only then the other keys in insertion
 * order; JSON.stringify follows that order, so {"b":1,"1":2} prints as {"1":2,"b":1}.
 */
static bool
array_index_key(const char *k, size_t n, uint32_t *idx)
{
    if (n == 0 || n > 10 || (n > 1 && k[0] == '0')) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (k[i] < '0' || k[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(k[i] - '0');
    }
    if (v >= UINT32_MAX) {
        return false;
    }
    *idx = (uint32_t)v;
    return true;
}

typedef struct index_key {
    uint32_t idx;
    const char *key;
    size_t len;
    const json_t *value;
} index_key;

static int
index_key_cmp(const void *a, const void *b)
{
    uint32_t x = ((const index_key *)a)->idx, y = ((const index_key *)b)->idx;
    return (x > y) - (x < y);
}

static void
stringify_member(sbuf *b, bool *first, const char *key, size_t len, const json_t *value)
{
    if (!*first) {
        sb_put(b, ",", 1);
    }
    *first = false;
    stringify_string(b, key, len);
    sb_put(b, ":", 1);
    stringify(b, value);
}

/* Objects of more than SMALL_OBJECT members: two passes over the members (three with
 * array-index keys), nothing allocated unless there are such keys. */
static void
stringify_large_object(sbuf *b, const json_t *v)
{
    const char *key;
    size_t len, nindex = 0;
    json_t *item;
    uint32_t idx;
    bool first = true;
    json_object_keylen_foreach ((json_t *)v, key, len, item) {
        nindex += array_index_key(key, len, &idx);
    }
    index_key *keys = nindex ? ksfi_malloc(nindex * sizeof *keys) : NULL;
    if (nindex && !keys) {
        b->oom = true;
        return;
    }
    size_t k = 0;
    if (nindex) { /* most objects have none: no second pass over their members then */
        json_object_keylen_foreach ((json_t *)v, key, len, item) {
            if (array_index_key(key, len, &idx)) {
                keys[k++] = (index_key){idx, key, len, item};
            }
        }
    }
    if (nindex > 1) {
        qsort(keys, nindex, sizeof *keys, index_key_cmp);
    }
    sb_put(b, "{", 1);
    for (k = 0; k < nindex; k++) {
        stringify_member(b, &first, keys[k].key, keys[k].len, keys[k].value);
    }
    ksfi_free(keys);
    json_object_keylen_foreach ((json_t *)v, key, len, item) {
        if (!array_index_key(key, len, &idx)) {
            stringify_member(b, &first, key, len, item);
        }
    }
    sb_put(b, "}", 1);
}

/* Up to this many members an object is read once into an array on the stack. */
#define SMALL_OBJECT 16

static void
stringify_object(sbuf *b, const json_t *v)
{
    /* Each pass over a jansson object costs five library calls per member; a small
     * object (nearly every payload) is read once, then written from the array. */
    if (json_object_size(v) > SMALL_OBJECT) {
        stringify_large_object(b, v);
        return;
    }
    index_key all[SMALL_OBJECT], index[SMALL_OBJECT];
    bool is_index[SMALL_OBJECT];
    size_t n = 0, nindex = 0;
    /* The iterator itself, not json_object_keylen_foreach: that macro looks each key
     * up again to find the next member. */
    for (void *it = json_object_iter((json_t *)v); it;
         it = json_object_iter_next((json_t *)v, it)) {
        const char *key = json_object_iter_key(it);
        size_t len = json_object_iter_key_len(it);
        json_t *item = json_object_iter_value(it);
        uint32_t idx = 0;
        is_index[n] = array_index_key(key, len, &idx);
        all[n] = (index_key){idx, key, len, item};
        if (is_index[n]) {
            index[nindex++] = all[n];
        }
        n++;
    }
    if (nindex > 1) {
        qsort(index, nindex, sizeof *index, index_key_cmp);
    }
    bool first = true;
    sb_put(b, "{", 1);
    for (size_t k = 0; k < nindex; k++) {
        stringify_member(b, &first, index[k].key, index[k].len, index[k].value);
    }
    for (size_t k = 0; k < n; k++) {
        if (!is_index[k]) {
            stringify_member(b, &first, all[k].key, all[k].len, all[k].value);
        }
    }
    sb_put(b, "}", 1);
}

/* Decimal text of @p v into @p out (at least 21 bytes); returns its length. Integers
 * are on every hot path's payload, and snprintf costs several times more. */
static size_t
format_integer(json_int_t v, char *out)
{
    char tmp[24];
    size_t n = 0;
    /* Negate as unsigned so the most negative value does not overflow. */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t len = 0;
    if (v < 0) {
        out[len++] = '-';
    }
    while (n) {
        out[len++] = tmp[--n];
    }
    out[len] = '\0';
    return len;
}

static void
stringify(sbuf *b, const json_t *v)
{
    char num[32];
    if (!v) {
        sb_puts(b, "null"); /* as undefined prints inside an array */
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        stringify_object(b, v);
        return;
    case JSON_ARRAY:
        sb_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) {
                sb_put(b, ",", 1);
            }
            stringify(b, json_array_get(v, i));
        }
        sb_put(b, "]", 1);
        return;
    case JSON_STRING:
        stringify_string(b, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        sb_put(b, num, format_integer(json_integer_value(v), num));
        return;
    case JSON_REAL:
        ksfi_format_number(json_real_value(v), num);
        sb_puts(b, num);
        return;
    case JSON_TRUE:
        sb_puts(b, "true");
        return;
    case JSON_FALSE:
        sb_puts(b, "false");
        return;
    case JSON_NULL:
        sb_puts(b, "null");
        return;
    }
}

char *
ksfi_json_stringify(const json_t *v, size_t *len)
{
    sbuf b = {0};
    stringify(&b, v);
    return sb_finish(&b, len);
}

ksf_err
ksfi_encode_value(const json_t *v, char **out, size_t *len, ksf_errinfo *ei)
{
    char num[32];
    const char *text = NULL;
    size_t n = 0;
    *out = NULL;
    *len = 0;
    if (!v || json_is_null(v)) {
        return KSF_OK; /* undefined and null both become a null Kafka value */
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        *out = ksfi_json_stringify(v, len);
        return *out ? KSF_OK
                    : ksfi_fail(ei, KSF_ENOMEM, "out of memory encoding a value");
    case JSON_STRING:
        text = json_string_value(v);
        n = json_string_length(v);
        break;
    case JSON_INTEGER:
        n = format_integer(json_integer_value(v), num);
        text = num;
        break;
    case JSON_REAL:
        ksfi_format_number(json_real_value(v), num);
        text = num;
        n = strlen(num);
        break;
    case JSON_TRUE:
        text = "true";
        n = 4;
        break;
    default:
        text = "false";
        n = 5;
        break;
    }
    *out = ksfi_memdup(text, n);
    if (!*out) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory encoding a value");
    }
    *len = n;
    return KSF_OK;
}

ksf_err
ksfi_encode_value_in(const json_t *v, char **buf, size_t *cap, const void **out,
                     size_t *len, ksf_errinfo *ei)
{
    *out = NULL;
    *len = 0;
    if (!v || json_is_null(v)) {
        return KSF_OK;
    }
    if (json_is_string(v)) { /* its bytes as they are: nothing to copy */
        *out = json_string_value(v);
        *len = json_string_length(v);
        return KSF_OK;
    }
    sbuf b = {*buf, 0, *cap, false, false};
    stringify(&b, v); /* an object, array, number or boolean */
    *buf = b.data;    /* grown or not, still the caller's (also after ENOMEM) */
    *cap = b.cap;
    if (b.oom) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory encoding a value");
    }
    *out = b.data;
    *len = b.len;
    return KSF_OK;
}

ksf_err
ksfi_encode_value_stack(const json_t *v, char *stack, size_t stack_cap, char **heap,
                        const void **out, size_t *len, ksf_errinfo *ei)
{
    *heap = NULL;
    *out = NULL;
    *len = 0;
    if (!v || json_is_null(v)) {
        return KSF_OK;
    }
    if (json_is_string(v)) { /* its bytes as they are: nothing to copy */
        *out = json_string_value(v);
        *len = json_string_length(v);
        return KSF_OK;
    }
    sbuf b = {stack, 0, stack_cap, false, true};
    stringify(&b, v); /* an object, array, number or boolean */
    if (!b.borrowed) {
        *heap = b.data; /* the caller frees it, also after ENOMEM */
    }
    if (b.oom) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory encoding a value");
    }
    *out = b.data;
    *len = b.len;
    return KSF_OK;
}

/* ---- UTF-8 repair (WHATWG decoder: one U+FFFD per maximal invalid subpart) ----------
 */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 with *bad = bytes to
 * replace by one U+FFFD. */
static size_t
utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) {
            lo = 0xA0;
        } else if (c == 0xED) {
            hi = 0x9F;
        }
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) {
            lo = 0x90;
        } else if (c == 0xF4) {
            hi = 0x8F;
        }
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

/* True when s[0..len) is valid UTF-8 as it is: ASCII is checked 8 bytes at a time. */
static bool
utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, u + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        size_t bad = 0, n = utf8_seq(u + i, len - i, &bad);
        if (!n) {
            return false;
        }
        i += n;
    }
    return true;
}

char *
ksfi_utf8_sanitize(const char *s, size_t len, size_t *out_len)
{
    const unsigned char *u = (const unsigned char *)s;
    sbuf b = {0};
    size_t i = 0, start = 0;
    while (i < len) {
        size_t bad = 0;
        size_t n = utf8_seq(u + i, len - i, &bad);
        if (n) {
            i += n;
            continue;
        }
        sb_put(&b, s + start, i - start);
        sb_put(&b, "\xEF\xBF\xBD", 3);
        i += bad;
        start = i;
    }
    sb_put(&b, s + start, len - start);
    return sb_finish(&b, out_len);
}

/* ---- JSON.parse compatibility ------------------------------------------------------ */

/*
 * JSON.parse accepts three things jansson refuses, and NestJS hands the result to the
 * handler: escaped lone surrogates ("\ud800"), integers beyond int64, and numbers
 * beyond the double range (Infinity). Rather than fall back to a string, the text is
 * rewritten so jansson reads the nearest thing it can hold: U+FFFD for a lone
 * surrogate (what Buffer.from() makes of one), a double for a huge integer (what JS
 * holds), and null for an infinite number (what JSON.stringify prints for Infinity).
 * Only well-formed tokens are rewritten, so invalid JSON stays invalid.
 */

/* 2^1024 - 2^970, the smallest decimal that rounds to Infinity, without trailing 0s. */
static const char dbl_overflow_digits[] =
    "17976931348623158079372897140530341507993413271003782693617377898044496829276475094"
    "66490179775872070963302864166928879109465555478519404026306574886715058206819089020"
    "00708383676273854845817711531764475730270069855571366959622842914819860834936475292"
    "719074168444365510704342711559699508093042880177904174497792";

typedef struct num_token {
    size_t len;           /* bytes of the token */
    bool integer;         /* no fraction, no exponent */
    bool negative;        /* leading '-' */
    const char *int_part; /* digits before any '.', without the sign */
    size_t int_len;
} num_token;

static size_t
scan_digits(const char *s, size_t i, size_t n)
{
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        i++;
    }
    return i;
}

/* Scan the JSON number grammar at s[0..n); false when the token is malformed. */
static bool
scan_number(const char *s, size_t n, num_token *t)
{
    size_t i = 0;
    memset(t, 0, sizeof *t);
    t->negative = s[0] == '-';
    i += t->negative;
    size_t d = scan_digits(s, i, n);
    if (d == i || (s[i] == '0' && d > i + 1)) {
        return false; /* no digits, or a leading zero */
    }
    t->int_part = s + i;
    t->int_len = d - i;
    i = d;
    t->integer = true;
    if (i < n && s[i] == '.') {
        d = scan_digits(s, i + 1, n);
        if (d == i + 1) {
            return false;
        }
        i = d;
        t->integer = false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i += 1 + (i + 1 < n && (s[i + 1] == '+' || s[i + 1] == '-'));
        d = scan_digits(s, i, n);
        if (d == i) {
            return false;
        }
        i = d;
        t->integer = false;
    }
    if (i < n && strchr("0123456789.eE+-", s[i])) {
        return false;
    }
    t->len = i;
    return true;
}

/* True when the number token @p s (well-formed) is beyond the double range. */
static bool
number_overflows(const char *s, size_t n)
{
    char digits[sizeof dbl_overflow_digits + 1];
    size_t nd = 0, i = s[0] == '-';
    long long exp10 = 0; /* value = 0.digits * 10^exp10 */
    bool in_frac = false, seen = false;
    for (; i < n && s[i] != 'e' && s[i] != 'E'; i++) {
        if (s[i] == '.') {
            in_frac = true;
        } else if (s[i] != '0' || seen) {
            seen = true;
            exp10 += !in_frac;
            if (nd < sizeof digits - 1) {
                digits[nd++] = s[i];
            }
        } else if (in_frac) {
            exp10--; /* a leading zero after the point */
        }
    }
    if (!seen) {
        return false;
    }
    if (i < n) { /* exponent: clamp, anything this large decides on its own */
        long long e = 0;
        bool neg = s[i + 1] == '-';
        for (i += 1 + (s[i + 1] == '+' || s[i + 1] == '-'); i < n; i++) {
            e = e < 100000 ? e * 10 + (s[i] - '0') : e;
        }
        exp10 += neg ? -e : e;
    }
    if (exp10 != 309) {
        return exp10 > 309;
    }
    while (nd > 0 && digits[nd - 1] == '0') {
        nd--;
    }
    digits[nd] = '\0';
    return strcmp(digits, dbl_overflow_digits) >=
           0; /* both start with a non-zero digit */
}

/* True when the integer token does not fit jansson's json_int_t (long long). */
static bool
integer_overflows(const num_token *t)
{
    static const char max[] = "9223372036854775807", min[] = "9223372036854775808";
    if (t->int_len != sizeof max - 1) {
        return t->int_len > sizeof max - 1;
    }
    return memcmp(t->int_part, t->negative ? min : max, t->int_len) > 0;
}

static int
hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

/* The code unit of a "\uXXXX" escape at s (n bytes left), or -1. */
static int
unicode_escape(const char *s, size_t n)
{
    return n >= 6 && s[0] == '\\' && s[1] == 'u' ? hex4(s + 2) : -1;
}

typedef struct rewriter {
    sbuf out;
    const char *src;
    size_t done; /* src bytes already copied to out */
} rewriter;

static void
rewrite(rewriter *w, size_t at, size_t skip, const char *with)
{
    sb_put(&w->out, w->src + w->done, at - w->done);
    sb_puts(&w->out, with);
    w->done = at + skip;
}

/* Inside a string at s[i] == '\\': rewrite a lone surrogate escape; the next index. */
static size_t
compat_escape(rewriter *w, const char *s, size_t i, size_t n)
{
    int u = unicode_escape(s + i, n - i);
    if (u < 0xD800 || u > 0xDFFF) {
        return i + 2; /* any other escape (or a malformed one jansson will refuse) */
    }
    int low = unicode_escape(s + i + 6, n - i - 6);
    if (u <= 0xDBFF && low >= 0xDC00 && low <= 0xDFFF) {
        return i + 12; /* a proper pair */
    }
    rewrite(w, i, 6, "\\ufffd");
    return i + 6;
}

/* Rewrite @p s for jansson. Returns a new text, or NULL with *oom false when the text
 * needs no change. */
static char *
json_compat(const char *s, size_t n, size_t *out_len, bool *oom)
{
    rewriter w = {.src = s};
    bool in_string = false;
    size_t i = 0;
    while (i < n) {
        char c = s[i];
        num_token t;
        if (in_string) {
            in_string = c != '"';
            i = c == '\\' ? compat_escape(&w, s, i, n) : i + 1;
        } else if (c == '"') {
            in_string = true;
            i++;
        } else if ((c == '-' || (c >= '0' && c <= '9')) &&
                   scan_number(s + i, n - i, &t)) {
            if (number_overflows(s + i, t.len)) {
                rewrite(&w, i, t.len, "null");
            } else if (t.integer && integer_overflows(&t)) {
                rewrite(&w, i + t.len, 0, ".0");
            }
            i += t.len;
        } else {
            i++;
        }
    }
    *oom = w.out.oom;
    if (!w.out.data || w.out.oom) {
        ksfi_free(w.out.data);
        return NULL;
    }
    sb_put(&w.out, s + w.done, n - w.done);
    return sb_finish(&w.out, out_len);
}

/* ---- the common case, without jansson's reader ------------------------------------ */

/*
 * jansson's reader took about 5,900 instructions for {"hero":"bench","n":42}, a
 * quarter of a server worker's cost per request, and the same again in the client for
 * the reply. Most values are plain: objects, arrays, strings without escapes, integers
 * that fit, true/false/null. This reader builds the same jansson values for those (keys
 * in order, the last duplicate wins, as json_loadb does) and gives up on anything else
 * (an escape, a fraction or exponent, an integer near int64's limits, a control
 * character, deep nesting, any syntax error), which then takes the full path below
 * (json_compat + json_loadb): every text gets jansson's answer, only sooner.
 */
#define FAST_MAX_DEPTH 64

typedef struct fast_reader {
    const char *s;
    size_t i, n;
    bool oom; /* an allocation failed: the result is out of memory, not "give up" */
} fast_reader;

static void
fast_ws(fast_reader *r)
{
    while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' ||
                           r->s[r->i] == '\n' || r->s[r->i] == '\r')) {
        r->i++;
    }
}

/* A string without escapes or control characters at s[i] == '"'; its bytes. */
static bool
fast_string(fast_reader *r, const char **start, size_t *len)
{
    size_t i = r->i + 1;
    while (i < r->n) {
        unsigned char c = (unsigned char)r->s[i];
        if (c == '"') {
            *start = r->s + r->i + 1;
            *len = i - r->i - 1;
            r->i = i + 1;
            return true;
        }
        if (c == '\\' || c < 0x20) {
            return false;
        }
        i++;
    }
    return false;
}

/* Takes @p c if it is the next byte: the objects' and arrays' punctuation. */
static inline bool
fast_take(fast_reader *r, char c)
{
    if (r->i < r->n && r->s[r->i] == c) {
        r->i++;
        return true;
    }
    return false;
}

static json_t *fast_value(fast_reader *r, int depth);

/* One object member at r->i ("key": value) into @p o; false where it is not one. */
static bool
fast_member(fast_reader *r, json_t *o, int depth)
{
    const char *key;
    size_t klen;
    if (r->i >= r->n || r->s[r->i] != '"' || !fast_string(r, &key, &klen)) {
        return false;
    }
    fast_ws(r);
    if (!fast_take(r, ':')) {
        return false;
    }
    json_t *v = fast_value(r, depth + 1);
    if (v && json_object_setn_new_nocheck(o, key, klen, v)) {
        r->oom = true;
        return false;
    }
    return v != NULL;
}

/* One array element at r->i into @p a; false where it is not one. */
static bool
fast_element(fast_reader *r, json_t *a, int depth)
{
    json_t *v = fast_value(r, depth + 1);
    if (v && json_array_append_new(a, v)) {
        r->oom = true;
        return false;
    }
    return v != NULL;
}

/* The object or array opened at r->i: its members or elements, comma separated,
 * up to its closing byte. */
static json_t *
fast_container(fast_reader *r, int depth, bool object)
{
    json_t *c = object ? json_object() : json_array();
    char close = object ? '}' : ']';
    if (!c) {
        r->oom = true;
        return NULL;
    }
    r->i++; /* the opening byte */
    fast_ws(r);
    if (fast_take(r, close)) {
        return c;
    }
    for (;;) {
        if (!(object ? fast_member(r, c, depth) : fast_element(r, c, depth))) {
            break;
        }
        fast_ws(r);
        if (fast_take(r, ',')) {
            fast_ws(r); /* before a member's key (fast_value skips its own) */
            continue;
        }
        if (fast_take(r, close)) {
            return c;
        }
        break;
    }
    json_decref(c);
    return NULL;
}

/* An integer of at most 18 digits (it fits json_int_t whatever they are). */
static json_t *
fast_integer(fast_reader *r)
{
    size_t i = r->i;
    bool neg = r->s[i] == '-';
    i += neg;
    size_t d = scan_digits(r->s, i, r->n);
    if (d == i || d - i > 18 || (r->s[i] == '0' && d > i + 1)) {
        return NULL;
    }
    if (d < r->n && strchr(".eE+-", r->s[d]) && r->s[d] != '\0') {
        return NULL; /* a fraction or exponent: the full path */
    }
    json_int_t v = 0;
    for (size_t k = i; k < d; k++) {
        v = v * 10 + (r->s[k] - '0');
    }
    r->i = d;
    json_t *j = json_integer(neg ? -v : v);
    r->oom = !j;
    return j;
}

static json_t *
fast_literal(fast_reader *r, const char *word, size_t len, json_t *value)
{
    if (r->n - r->i < len || memcmp(r->s + r->i, word, len)) {
        return NULL;
    }
    r->i += len;
    return value;
}

/* One value after optional whitespace; NULL to give up (or on ENOMEM, r->oom). */
static json_t *
fast_value(fast_reader *r, int depth)
{
    fast_ws(r);
    if (r->i >= r->n || depth > FAST_MAX_DEPTH) {
        return NULL;
    }
    char c = r->s[r->i];
    const char *str;
    size_t len;
    json_t *v;
    switch (c) {
    case '{':
    case '[':
        return fast_container(r, depth, c == '{');
    case '"':
        if (!fast_string(r, &str, &len)) {
            return NULL;
        }
        v = json_stringn_nocheck(str, len); /* the value was checked as UTF-8 */
        r->oom = !v;
        return v;
    case 't':
        return fast_literal(r, "true", 4, json_true());
    case 'f':
        return fast_literal(r, "false", 5, json_false());
    case 'n':
        return fast_literal(r, "null", 4, json_null());
    default:
        return c == '-' || (c >= '0' && c <= '9') ? fast_integer(r) : NULL;
    }
}

/* The value of the whole text @p s, or NULL: give up (*oom false) or out of memory. */
static json_t *
fast_parse(const char *s, size_t n, bool *oom)
{
    fast_reader r = {.s = s, .n = n};
    json_t *v = fast_value(&r, 0);
    fast_ws(&r);
    *oom = r.oom;
    if (v && r.i != n) {
        json_decref(v); /* something after the value: jansson decides */
        v = NULL;
    }
    return v;
}

/* JSON.parse as NestJS's KafkaParser runs it; NULL when it would throw. */
static json_t *
parse_like_js(const char *text, size_t n, bool *oom)
{
    json_t *fast = fast_parse(text, n, oom);
    if (fast || *oom) {
        return fast;
    }
    size_t m = 0;
    char *fixed = json_compat(text, n, &m, oom);
    if (*oom) {
        return NULL;
    }
    json_error_t jerr;
    json_t *parsed = json_loadb(fixed ? fixed : text, fixed ? m : n,
                                JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    ksfi_free(fixed);
    if (!parsed && json_error_code(&jerr) == json_error_out_of_memory) {
        *oom = true;
    }
    return parsed;
}

ksf_err
ksfi_decode_value(const void *bytes, size_t len, json_t **out)
{
    *out = NULL;
    if (!bytes) {
        *out = json_null();
        return KSF_OK;
    }
    if (len > 0 && ((const unsigned char *)bytes)[0] == 0x00) {
        return KSF_OK; /* binary (schema-registry framing): left to the raw accessors */
    }
    /* Valid UTF-8 (nearly every value) is read where it lies; only a value with bad
     * sequences is copied with them replaced (as Buffer.toString() does). The copy
     * cost an allocation, a copy and a free per value on each side of a request. */
    size_t n = len;
    const char *text = bytes;
    char *fixed = NULL;
    if (!utf8_valid(bytes, len)) {
        if (!(fixed = ksfi_utf8_sanitize(bytes, len, &n))) {
            return KSF_ENOMEM;
        }
        text = fixed;
    }
    if (n > 0 && (text[0] == '{' || text[0] == '[')) {
        bool oom = false;
        json_t *parsed = parse_like_js(text, n, &oom);
        if (parsed || oom) {
            ksfi_free(fixed);
            *out = parsed;
            return parsed ? KSF_OK : KSF_ENOMEM;
        }
        /* JSON.parse failed: NestJS keeps the string, and so do we. */
    }
    *out = json_stringn(text, n);
    ksfi_free(fixed);
    return *out ? KSF_OK : KSF_ENOMEM;
}
