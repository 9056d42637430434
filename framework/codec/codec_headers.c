/*
 * The NestJS envelope around a payload: topic names, request and reply headers, reply
 * partitions, correlation ids and error shapes. Pure functions.
 */
#include "codec/codec.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "base/topic.h"
#include "codec/wire.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <uuid/uuid.h>

/* ---- topics --------------------------------------------------------------------- */

ksf_err
ksfi_check_topic(const char *topic, bool need_reply_room, ksf_errinfo *ei)
{
    return need_reply_room ? ksfi_topic_check(topic, strlen(KSFI_REPLY_SUFFIX),
                                              " with its \".reply\" suffix", ei)
                           : ksfi_topic_check(topic, 0, "", ei);
}

char *
ksfi_reply_topic_of(const char *pattern)
{
    return ksfi_strcat2(pattern, KSFI_REPLY_SUFFIX);
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

/* The wire headers the codec reads, by name. */
typedef enum wire_header {
    WIRE_OTHER,
    WIRE_CORRELATION_ID,
    WIRE_REPLY_TOPIC,
    WIRE_REPLY_PARTITION,
    WIRE_NEST_ERR,
    WIRE_NEST_IS_DISPOSED,
} wire_header;

/* Which wire header @p h is: one prefix test and at most two compares, where a strcmp
 * against each name cost three compares for every header of every message (trace and
 * deadline headers included). */
static wire_header
wire_header_of(const ksfi_header *h)
{
    static const size_t plen = sizeof KSFI_HDR_RESERVED_PREFIX - 1;
    _Static_assert(sizeof KSFI_HDR_RESERVED_PREFIX == 7, "the test below spells kafka_");
    const char *n = h->name;
    /* "kafka_" letter by letter (stops at a shorter name's NUL): a strncmp call per
     * header cost more than the compares it makes. */
    if (!n || n[0] != 'k' || n[1] != 'a' || n[2] != 'f' || n[3] != 'k' || n[4] != 'a' ||
        n[5] != '_') {
        return WIRE_OTHER;
    }
    switch (n[plen]) { /* the letter after "kafka_" tells the candidates apart */
    case 'c':
        return !strcmp(n, KSFI_HDR_CORRELATION_ID) ? WIRE_CORRELATION_ID : WIRE_OTHER;
    case 'r': /* "kafka_reply" then 'T'opic or 'P'artition: one strcmp either way */
        return n[11] == 'T' && !strcmp(n, KSFI_HDR_REPLY_TOPIC) ? WIRE_REPLY_TOPIC
               : n[11] == 'P' && !strcmp(n, KSFI_HDR_REPLY_PARTITION)
                   ? WIRE_REPLY_PARTITION
                   : WIRE_OTHER;
    case 'n': /* "kafka_nest-" then 'e'rr or 'i's-disposed */
        return n[11] == 'e' && !strcmp(n, KSFI_HDR_NEST_ERR) ? WIRE_NEST_ERR
               : n[11] == 'i' && !strcmp(n, KSFI_HDR_NEST_IS_DISPOSED)
                   ? WIRE_NEST_IS_DISPOSED
                   : WIRE_OTHER;
    default:
        return WIRE_OTHER;
    }
}

/*
 * Quote up to 40 bytes of a header value for an error sentence: printable ASCII as it
 * is ('"' and '\' escaped), every other byte as \xNN, "..." when cut.
 */
static void
quote_bytes(const void *value, size_t len, char out[200])
{
    const unsigned char *v = value;
    size_t o = 0, n = len < 40 ? len : 40;
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '"' || v[i] == '\\') {
            out[o++] = '\\';
            out[o++] = (char)v[i];
        } else if (v[i] >= 0x20 && v[i] < 0x7f) {
            out[o++] = (char)v[i];
        } else {
            o += (size_t)snprintf(out + o, 5, "\\x%02x", v[i]);
        }
    }
    memcpy(out + o, len > n ? "...\"" : "\"", len > n ? 5 : 2);
}

/* The reply topic every request names, checked a lookup per byte (ksfi_topic_byte)
 * where ksfi_topic_check also wants a NUL-terminated name. */
static bool
legal_reply_topic(const char *value, size_t len)
{
    const unsigned char *v = (const unsigned char *)value;
    if (len == 0 || len > KSFI_TOPIC_MAX ||
        (v[0] == '.' && (len == 1 || (len == 2 && v[1] == '.')))) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!ksfi_topic_byte[v[i]]) {
            return false;
        }
    }
    return true;
}

/*
 * wire_header_of(h), and if h is the correlation id, takes it into *id / *id_len (a
 * NULL value counts as empty): requests and replies read the id alike, and the last
 * copy of a repeated header wins in both.
 */
static wire_header
wire_header_take_id(const ksfi_header *h, const void **id, size_t *id_len)
{
    wire_header w = wire_header_of(h);
    if (w == WIRE_CORRELATION_ID) {
        *id = h->value;
        *id_len = h->value ? h->len : 0;
    }
    return w;
}

ksf_err
ksfi_parse_request_headers(const ksfi_header *hdrs, size_t count, ksfi_request_meta *meta,
                           ksf_errinfo *ei)
{
    const ksfi_header *partition = NULL;
    char shown[200];
    memset(meta, 0, sizeof *meta);
    meta->reply_partition = -1;
    for (size_t i = 0; i < count; i++) {
        const ksfi_header *h = &hdrs[i];
        wire_header w =
            wire_header_take_id(h, &meta->correlation_id, &meta->correlation_id_len);
        if (w == WIRE_REPLY_TOPIC) {
            meta->reply_topic = h->value;
            meta->reply_topic_len = h->value ? h->len : 0;
        } else if (w == WIRE_REPLY_PARTITION) {
            partition = h->value ? h : NULL;
        }
    }
    meta->is_request = meta->correlation_id_len > 0 && meta->reply_topic_len > 0;
    if (!meta->is_request) {
        return KSF_OK; /* an event is never answered: its reply headers do not matter */
    }
    if (!legal_reply_topic(meta->reply_topic, meta->reply_topic_len)) {
        quote_bytes(meta->reply_topic, meta->reply_topic_len, shown);
        return ksfi_fail(ei, KSF_EPROTO,
                         "header %s %s is not a legal Kafka topic name; the reply "
                         "cannot be sent",
                         KSFI_HDR_REPLY_TOPIC, shown);
    }
    if (partition && !ksfi_parse_reply_partition(partition->value, partition->len,
                                                 &meta->reply_partition)) {
        quote_bytes(partition->value, partition->len, shown);
        return ksfi_fail(ei, KSF_EPROTO,
                         "header %s %s (%zu byte%s) is neither a decimal partition "
                         "number nor a 4-byte big-endian int; the reply cannot be sent",
                         KSFI_HDR_REPLY_PARTITION, shown, partition->len,
                         partition->len == 1 ? "" : "s");
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
    const ksfi_header *err = NULL;
    memset(meta, 0, sizeof *meta);
    for (size_t i = 0; i < count; i++) {
        const ksfi_header *h = &hdrs[i];
        wire_header w =
            wire_header_take_id(h, &meta->correlation_id, &meta->correlation_id_len);
        if (w == WIRE_NEST_ERR) {
            err = h;
        } else if (w == WIRE_NEST_IS_DISPOSED) {
            meta->is_disposed = true;
        }
    }
    if (err) {
        /* KafkaResponseDeserializer: any err header ends the stream and drops the value;
         * createObserver then reports an error only for a truthy err (not "" or null). */
        meta->is_disposed = true;
        meta->drop_value = true;
        meta->err = err->value;
        meta->err_len = err->value ? err->len : 0;
        meta->has_err = meta->err_len > 0;
    }
}

size_t
ksfi_request_headers(const char *correlation_id, const char *reply_topic,
                     int32_t reply_partition, char partition_buf[12],
                     ksfi_header out[KSFI_PROTO_HEADERS_MAX])
{
    /* By hand: snprintf was about 500 instructions of every request's send. */
    char digits[12];
    size_t nd = 0, o = 0;
    uint32_t u =
        reply_partition < 0 ? 0u - (uint32_t)reply_partition : (uint32_t)reply_partition;
    do {
        digits[nd++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (reply_partition < 0) {
        partition_buf[o++] = '-';
    }
    while (nd) {
        partition_buf[o++] = digits[--nd];
    }
    partition_buf[o] = '\0';
    out[0] =
        (ksfi_header){KSFI_HDR_CORRELATION_ID, correlation_id, strlen(correlation_id)};
    out[1] = (ksfi_header){KSFI_HDR_REPLY_TOPIC, reply_topic, strlen(reply_topic)};
    out[2] = (ksfi_header){KSFI_HDR_REPLY_PARTITION, partition_buf, o};
    return 3;
}

size_t
ksfi_request_headers_spring(const char *correlation_id, const char *reply_topic,
                            int32_t reply_partition,
                            unsigned char buf[KSFI_SPRING_HEADERS_BUF],
                            ksfi_header out[KSFI_PROTO_HEADERS_MAX])
{
    uuid_t id;
    /* uuid_parse also takes uppercase; ksf's ids are lowercase, so the reply's bytes
     * map back to the very text that was sent (ksfi_correlation_id_text). */
    if (strlen(correlation_id) != 36 || uuid_parse(correlation_id, id) != 0) {
        return 0;
    }
    memcpy(buf, id, 16);
    uint32_t p = (uint32_t)reply_partition;
    buf[16] = (unsigned char)(p >> 24);
    buf[17] = (unsigned char)(p >> 16);
    buf[18] = (unsigned char)(p >> 8);
    buf[19] = (unsigned char)p;
    out[0] = (ksfi_header){KSFI_HDR_CORRELATION_ID, buf, 16};
    out[1] = (ksfi_header){KSFI_HDR_REPLY_TOPIC, reply_topic, strlen(reply_topic)};
    out[2] = (ksfi_header){KSFI_HDR_REPLY_PARTITION, buf + 16, 4};
    return 3;
}

bool
ksfi_correlation_id_text(const void *bytes, size_t len, char out[37])
{
    if (!bytes || len != 16) {
        return false;
    }
    uuid_t id;
    memcpy(id, bytes, 16);
    uuid_unparse_lower(id, out);
    return true;
}

void
ksfi_new_correlation_id(char out[37])
{
    uuid_t id;
    uuid_generate_random(id);
    uuid_unparse_lower(id, out);
}

void
ksfi_idgen_init(ksfi_idgen *g)
{
    uuid_t id;
    char text[37];
    uuid_generate_random(id);
    uuid_unparse_lower(id, text);
    memcpy(g->prefix, text, sizeof g->prefix);
    g->next = 0;
    for (int i = 10; i < 16; i++) {
        g->next = g->next << 8 | id[i]; /* start the counter at the random tail */
    }
}

void
ksfi_idgen_next(ksfi_idgen *g, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t n = g->next;
    g->next = (n + 1) & 0xffffffffffffULL;
    memcpy(out, g->prefix, sizeof g->prefix);
    for (int i = 35; i >= 24; i--) {
        out[i] = hex[n & 0xf];
        n >>= 4;
    }
    out[36] = '\0';
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
        json_object_set_new(shape, "message",
                            error ? json_deep_copy(error) : json_null())) {
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
