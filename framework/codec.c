#include "codec.h"

#include "alloc.h"
#include "errinfo.h"
#include "wire.h"

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
} sbuf;

static void
sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *grown = ksfi_realloc(b->data, cap);
        if (!grown) {
            b->oom = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
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
    /* The shortest %e precision that round-trips gives JavaScript's digit string. */
    char sci[40];
    for (int prec = 0; prec < 17; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec, d);
        if (strtod(sci, NULL) == d) {
            break;
        }
    }
    char digits[24];
    size_t k = 0;
    const char *p = sci;
    bool negative = *p == '-';
    if (negative) {
        p++;
    }
    for (; *p && *p != 'e'; p++) {
        if (*p >= '0' && *p <= '9') {
            digits[k++] = *p;
        }
    }
    while (k > 1 && digits[k - 1] == '0') {
        k--;
    }
    digits[k] = '\0';
    int n = atoi(p + 1) + 1; /* value = 0.digits * 10^n */
    char *o = buf;
    if (negative) {
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

static void
stringify_string(sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    size_t run = 0; /* bytes copied verbatim, flushed in one go */
    for (size_t i = 0; i < n; i++) {
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

static void
stringify(sbuf *b, const json_t *v)
{
    char num[32];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *item;
        bool first = true;
        sb_put(b, "{", 1);
        json_object_foreach((json_t *)v, key, item)
        {
            if (!first) {
                sb_put(b, ",", 1);
            }
            first = false;
            stringify_string(b, key, strlen(key));
            sb_put(b, ":", 1);
            stringify(b, item);
        }
        sb_put(b, "}", 1);
        return;
    }
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
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        sb_puts(b, num);
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
        return *out ? KSF_OK : ksfi_fail(ei, KSF_ENOMEM, "out of memory encoding a value");
    case JSON_STRING:
        text = json_string_value(v);
        n = json_string_length(v);
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        text = num;
        n = strlen(num);
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

/* ---- UTF-8 repair (WHATWG decoder: one U+FFFD per maximal invalid subpart) ---------- */

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
    size_t n;
    char *text = ksfi_utf8_sanitize(bytes, len, &n);
    if (!text) {
        return KSF_ENOMEM;
    }
    if (n > 0 && (text[0] == '{' || text[0] == '[')) {
        json_error_t jerr;
        json_t *parsed = json_loadb(text, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (parsed) {
            ksfi_free(text);
            *out = parsed;
            return KSF_OK;
        }
        /* JSON.parse failed: NestJS keeps the string, and so do we. */
    }
    *out = json_stringn(text, n);
    ksfi_free(text);
    return *out ? KSF_OK : KSF_ENOMEM;
}

/* ---- topics --------------------------------------------------------------------- */

#define KSFI_TOPIC_MAX 249

ksf_err
ksfi_check_topic(const char *topic, bool need_reply_room, ksf_errinfo *ei)
{
    if (!topic || !*topic) {
        return ksfi_fail(ei, KSF_EINVAL, "pattern is empty; a Kafka pattern is a topic "
                                         "name such as \"hero.kill.dragon\"");
    }
    size_t n = strlen(topic);
    size_t max = need_reply_room ? KSFI_TOPIC_MAX - strlen(KSFI_REPLY_SUFFIX) : KSFI_TOPIC_MAX;
    if (n > max) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "pattern \"%.60s...\" is %zu characters; at most %zu fit a Kafka "
                         "topic%s",
                         topic, n, max, need_reply_room ? " with its \".reply\" suffix" : "");
    }
    if (!strcmp(topic, ".") || !strcmp(topic, "..")) {
        return ksfi_fail(ei, KSF_EINVAL, "pattern \"%s\" is not a legal Kafka topic name",
                         topic);
    }
    for (const char *p = topic; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "pattern \"%s\" has character '%c' (byte 0x%02x) at %zu; Kafka "
                             "topic names allow only A-Z a-z 0-9 . _ -",
                             topic, (c >= ' ' && c <= '~') ? c : '?', (unsigned char)c,
                             (size_t)(p - topic));
        }
    }
    return KSF_OK;
}

char *
ksfi_reply_topic_of(const char *pattern)
{
    size_t a = strlen(pattern), b = strlen(KSFI_REPLY_SUFFIX);
    char *s = ksfi_malloc(a + b + 1);
    if (s) {
        memcpy(s, pattern, a);
        memcpy(s + a, KSFI_REPLY_SUFFIX, b + 1);
    }
    return s;
}

/* ---- headers ----------------------------------------------------------------------- */

bool
ksfi_parse_reply_partition(const void *value, size_t len, int32_t *out)
{
    const unsigned char *v = value;
    if (!v || len == 0) {
        return false;
    }
    bool decimal = len <= 10;
    long long n = 0;
    for (size_t i = 0; decimal && i < len; i++) {
        if (v[i] < '0' || v[i] > '9') {
            decimal = false;
        } else {
            n = n * 10 + (v[i] - '0');
        }
    }
    if (decimal) {
        if (n > INT32_MAX) {
            return false;
        }
        *out = (int32_t)n;
        return true;
    }
    if (len == 4) { /* Spring Kafka's KafkaHeaders.REPLY_PARTITION: big-endian int32 */
        uint32_t be = ((uint32_t)v[0] << 24) | ((uint32_t)v[1] << 16) |
                      ((uint32_t)v[2] << 8) | v[3];
        if (be <= INT32_MAX) {
            *out = (int32_t)be;
            return true;
        }
    }
    return false;
}

static bool
header_is(const ksfi_header *h, const char *name)
{
    return h->name && !strcmp(h->name, name);
}

ksf_err
ksfi_parse_request_headers(const ksfi_header *hdrs, size_t count, ksfi_request_meta *meta,
                           ksf_errinfo *ei)
{
    const ksfi_header *partition = NULL;
    memset(meta, 0, sizeof *meta);
    meta->reply_partition = -1;
    for (size_t i = 0; i < count; i++) {
        const ksfi_header *h = &hdrs[i];
        if (header_is(h, KSFI_HDR_CORRELATION_ID)) {
            meta->correlation_id = h->value;
            meta->correlation_id_len = h->value ? h->len : 0;
        } else if (header_is(h, KSFI_HDR_REPLY_TOPIC)) {
            meta->reply_topic = h->value;
            meta->reply_topic_len = h->value ? h->len : 0;
        } else if (header_is(h, KSFI_HDR_REPLY_PARTITION)) {
            partition = h->value ? h : NULL;
        }
    }
    meta->is_request = meta->correlation_id_len > 0 && meta->reply_topic_len > 0;
    if (meta->reply_topic_len > 0) {
        char topic[KSFI_TOPIC_MAX + 1];
        bool ok = meta->reply_topic_len <= KSFI_TOPIC_MAX;
        if (ok) {
            memcpy(topic, meta->reply_topic, meta->reply_topic_len);
            topic[meta->reply_topic_len] = '\0';
            ok = strlen(topic) == meta->reply_topic_len &&
                 ksfi_check_topic(topic, false, NULL) == KSF_OK;
        }
        if (!ok) {
            return ksfi_fail(ei, KSF_EPROTO,
                             "header %s \"%.*s\" is not a legal Kafka topic name; the reply "
                             "cannot be sent",
                             KSFI_HDR_REPLY_TOPIC, (int)(meta->reply_topic_len > 80 ? 80 : meta->reply_topic_len),
                             (const char *)meta->reply_topic);
        }
    }
    if (partition && !ksfi_parse_reply_partition(partition->value, partition->len,
                                                 &meta->reply_partition)) {
        char shown[64];
        size_t n = partition->len < 20 ? partition->len : 20;
        const unsigned char *v = partition->value;
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            o += (size_t)snprintf(shown + o, sizeof shown - o, "%02x", v[i]);
        }
        return ksfi_fail(ei, KSF_EPROTO,
                         "header %s (%zu bytes, hex %s) is neither a decimal partition "
                         "number nor a 4-byte big-endian int; the reply cannot be sent",
                         KSFI_HDR_REPLY_PARTITION, partition->len, shown);
    }
    return KSF_OK;
}

size_t
ksfi_reply_headers(const void *correlation_id, size_t correlation_id_len, const char *err,
                   size_t err_len, bool disposed, ksfi_header out[KSFI_PROTO_HEADERS_MAX])
{
    static const unsigned char zero = 0x00;
    size_t n = 0;
    out[n++] = (ksfi_header){KSFI_HDR_CORRELATION_ID, correlation_id, correlation_id_len};
    if (err) {
        out[n++] = (ksfi_header){KSFI_HDR_NEST_ERR, err, err_len};
    }
    if (disposed) {
        out[n++] = (ksfi_header){KSFI_HDR_NEST_IS_DISPOSED, &zero, 1};
    }
    return n;
}

void
ksfi_parse_reply_headers(const ksfi_header *hdrs, size_t count, ksfi_reply_meta *meta)
{
    memset(meta, 0, sizeof *meta);
    for (size_t i = 0; i < count; i++) {
        const ksfi_header *h = &hdrs[i];
        if (header_is(h, KSFI_HDR_CORRELATION_ID)) {
            meta->correlation_id = h->value;
            meta->correlation_id_len = h->value ? h->len : 0;
        } else if (header_is(h, KSFI_HDR_NEST_ERR)) {
            meta->has_err = true;
            meta->err = h->value;
            meta->err_len = h->value ? h->len : 0;
        } else if (header_is(h, KSFI_HDR_NEST_IS_DISPOSED)) {
            meta->is_disposed = true;
        }
    }
    if (meta->has_err) {
        meta->is_disposed = true; /* KafkaResponseDeserializer: an error ends the stream */
    }
}

size_t
ksfi_request_headers(const char *correlation_id, const char *reply_topic,
                     int32_t reply_partition, char partition_buf[12],
                     ksfi_header out[KSFI_PROTO_HEADERS_MAX])
{
    snprintf(partition_buf, 12, "%" PRId32, reply_partition);
    out[0] = (ksfi_header){KSFI_HDR_CORRELATION_ID, correlation_id, strlen(correlation_id)};
    out[1] = (ksfi_header){KSFI_HDR_REPLY_TOPIC, reply_topic, strlen(reply_topic)};
    out[2] = (ksfi_header){KSFI_HDR_REPLY_PARTITION, partition_buf, strlen(partition_buf)};
    return 3;
}

void
ksfi_new_correlation_id(char out[37])
{
    uuid_t id;
    uuid_generate_random(id);
    uuid_unparse_lower(id, out);
}

/* ---- errors ------------------------------------------------------------------------ */

json_t *
ksfi_error_shape(const char *message)
{
    return json_pack("{s:s, s:s}", "status", "error", "message", message ? message : "");
}

json_t *
ksfi_error_from_json(const json_t *error)
{
    if (json_is_object(error) || json_is_array(error)) {
        return json_incref((json_t *)error);
    }
    json_t *shape = json_object();
    if (!shape || json_object_set_new(shape, "status", json_string("error")) ||
        json_object_set_new(shape, "message", error ? json_deep_copy(error) : json_null())) {
        json_decref(shape);
        return NULL;
    }
    return shape;
}

char *
ksfi_encode_error(const json_t *error, size_t *len)
{
    if (json_is_string(error)) {
        size_t n = json_string_length(error);
        char *s = ksfi_memdup(json_string_value(error), n);
        if (s && len) {
            *len = n;
        }
        return s;
    }
    return ksfi_json_stringify(error, len);
}
