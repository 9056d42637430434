/*
 * libFuzzer target for the codec's parsers: decode_value, utf8_sanitize,
 * parse_request_headers and parse_reply_headers, asserting their invariants.
 * tests/test_fuzz_replay.c links this file without libFuzzer and replays the corpus
 * (fuzz/corpus/codec) and tests/data on every test run.
 *
 * Input layout (tests/data/gen/make_cases.js writes seeds in it):
 *   byte 0      bits 0-2: header count; bit 6: parse as a reply; bit 7: null value
 *   per header  name selector (mod 6: correlationId, replyTopic, replyPartition,
 *               nest-err, nest-is-disposed, x-other), length (255: null value), bytes
 *   the rest    the Kafka value
 */
#include "base/alloc.h"
#include "codec/codec.h"
#include "codec/wire.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#define MAX_HEADERS 7

static const char *const names[] = {KSFI_HDR_CORRELATION_ID,   KSFI_HDR_REPLY_TOPIC,
                                    KSFI_HDR_REPLY_PARTITION,  KSFI_HDR_NEST_ERR,
                                    KSFI_HDR_NEST_IS_DISPOSED, "x-other"};

/* Strict UTF-8 check, written independently of the codec's decoder. */
static bool
valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t c = s[i], cp;
        size_t len = c < 0x80         ? 1
                     : (c >> 5) == 6  ? 2
                     : (c >> 4) == 14 ? 3
                     : (c >> 3) == 30 ? 4
                                      : 0;
        if (!len || i + len > n) {
            return false;
        }
        cp = len == 1 ? c : c & (0x7F >> len);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += len;
    }
    return true;
}

static void
check_sanitize(const uint8_t *v, size_t n)
{
    size_t m = 0, m2 = 0;
    char *s = ksfi_utf8_sanitize((const char *)v, n, &m);
    CHECK(s != NULL);
    CHECK(s[m] == '\0');
    CHECK(valid_utf8((const unsigned char *)s, m));
    CHECK(!valid_utf8(v, n) || (m == n && !memcmp(s, v, n)));
    CHECK(m <= 3 * n); /* at most one U+FFFD per input byte */
    char *again = ksfi_utf8_sanitize(s, m, &m2);
    CHECK(again && m2 == m && !memcmp(again, s, m));
    ksfi_free(again);
    ksfi_free(s);
}

/* encode(decode(x)) is a fixed point: decoding the encoded bytes and encoding again
 * gives the same bytes (JSON text for containers, the sanitized text for strings). */
static void
check_decode(const uint8_t *v, size_t n)
{
    json_t *j = (json_t *)0x1;
    CHECK(ksfi_decode_value(v, n, &j) == KSF_OK);
    if (!v) {
        CHECK(json_is_null(j));
        json_decref(j);
        return;
    }
    if (n > 0 && v[0] == 0) {
        CHECK(j == NULL);
        return;
    }
    CHECK(json_is_string(j) || json_is_object(j) || json_is_array(j));
    char *enc = NULL, *enc2 = NULL;
    size_t len = 0, len2 = 0;
    CHECK(ksfi_encode_value(j, &enc, &len, NULL) == KSF_OK && enc);
    if (json_is_string(j)) {
        size_t m = 0;
        char *s = ksfi_utf8_sanitize((const char *)v, n, &m);
        CHECK(len == m && !memcmp(enc, s, m));
        ksfi_free(s);
    } else {
        CHECK(n > 0 && (v[0] == '{' || v[0] == '['));
        CHECK(enc[0] == v[0]);
    }
    json_t *j2 = (json_t *)0x1;
    CHECK(ksfi_decode_value(enc, len, &j2) == KSF_OK && j2);
    CHECK(json_typeof(j2) == json_typeof(j));
    CHECK(ksfi_encode_value(j2, &enc2, &len2, NULL) == KSF_OK);
    CHECK(len2 == len && !memcmp(enc2, enc, len));
    ksfi_free(enc);
    ksfi_free(enc2);
    json_decref(j2);
    json_decref(j);
}

static bool
printable_ascii(const char *s)
{
    for (; *s; s++) {
        if (*s < 0x20 || *s > 0x7e) {
            return false;
        }
    }
    return true;
}

static void
check_request(const ksfi_header *h, size_t nh)
{
    ksfi_request_meta m;
    ksf_errinfo ei = {0};
    ksf_err e = ksfi_parse_request_headers(h, nh, &m, &ei);
    CHECK(e == KSF_OK || e == KSF_EPROTO);
    CHECK(m.reply_partition >= -1);
    CHECK(m.is_request == (m.correlation_id_len > 0 && m.reply_topic_len > 0));
    if (e) {
        CHECK(m.is_request && ei.code == KSF_EPROTO && ei.text[0]);
        CHECK(printable_ascii(ei.text)); /* bytes are quoted, never copied raw */
        return;
    }
    if (!m.is_request) {
        return;
    }
    char topic[256];
    CHECK(m.reply_topic_len < sizeof topic);
    memcpy(topic, m.reply_topic, m.reply_topic_len);
    topic[m.reply_topic_len] = '\0';
    CHECK(ksfi_check_topic(topic, false, NULL) == KSF_OK);
    /* What a server would answer parses back on the client side. */
    ksfi_header out[KSFI_PROTO_HEADERS_MAX];
    ksfi_reply_meta r;
    size_t k =
        ksfi_reply_headers(m.correlation_id, m.correlation_id_len, "e", 1, true, out);
    ksfi_parse_reply_headers(out, k, &r);
    CHECK(r.correlation_id_len == m.correlation_id_len);
    CHECK(!memcmp(r.correlation_id, m.correlation_id, m.correlation_id_len));
    CHECK(r.has_err && r.is_disposed && r.err_len == 1);
    /* A client sending this request writes headers that parse to the same meta. */
    if (!memchr(m.correlation_id, '\0', m.correlation_id_len) && m.reply_partition >= 0) {
        char id[256], pbuf[12];
        ksfi_request_meta m2;
        memcpy(id, m.correlation_id, m.correlation_id_len);
        id[m.correlation_id_len] = '\0';
        k = ksfi_request_headers(id, topic, m.reply_partition, pbuf, out);
        CHECK(ksfi_parse_request_headers(out, k, &m2, NULL) == KSF_OK);
        CHECK(m2.is_request && m2.reply_partition == m.reply_partition);
    }
}

static void
check_reply(const ksfi_header *h, size_t nh)
{
    ksfi_reply_meta r;
    ksfi_parse_reply_headers(h, nh, &r);
    CHECK(!r.has_err || (r.is_disposed && r.drop_value && r.err && r.err_len > 0));
    CHECK(!r.drop_value || r.is_disposed);
    CHECK(r.correlation_id || r.correlation_id_len == 0);
}

static void
check_number(const uint8_t *v, size_t n)
{
    if (n < 8) {
        return;
    }
    double d;
    char buf[32];
    memcpy(&d, v, sizeof d);
    ksfi_format_number(d, buf);
    CHECK(strlen(buf) < 26);
    if (isfinite(d)) {
        CHECK(strtod(buf, NULL) == (d == 0 ? 0 : d));
    } else {
        CHECK(!strcmp(buf, "null"));
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    ksfi_header h[MAX_HEADERS];
    size_t nh = 0, at = 1, want = data[0] & 7;
    bool reply = data[0] & 0x40, null_value = data[0] & 0x80;
    while (nh < want && at + 2 <= size) {
        size_t len = data[at + 1];
        const uint8_t *val = data + at + 2;
        at += 2;
        if (len == 255) {
            val = NULL;
            len = 0;
        } else if (len > size - at) {
            len = size - at;
        }
        h[nh++] = (ksfi_header){names[data[at - 2] % 6], val, len};
        at += len;
    }
    const uint8_t *value = null_value ? NULL : data + at;
    size_t value_len = null_value ? 0 : size - at;
    check_sanitize(data + at, size - at);
    check_decode(value, value_len);
    check_number(data + at, size - at);
    if (reply) {
        check_reply(h, nh);
    } else {
        check_request(h, nh);
    }
    return 0;
}
