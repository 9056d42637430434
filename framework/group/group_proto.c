#include "group/group_proto.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "codec/codec.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *
ksfi_gp_error_name(int code)
{
    switch (code) {
    case KSFI_GP_ERR_NONE:
        return "NONE";
    case KSFI_GP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
        return "COORDINATOR_LOAD_IN_PROGRESS";
    case KSFI_GP_ERR_COORDINATOR_NOT_AVAILABLE:
        return "COORDINATOR_NOT_AVAILABLE";
    case KSFI_GP_ERR_NOT_COORDINATOR:
        return "NOT_COORDINATOR";
    case KSFI_GP_ERR_ILLEGAL_GENERATION:
        return "ILLEGAL_GENERATION";
    case KSFI_GP_ERR_INCONSISTENT_GROUP_PROTOCOL:
        return "INCONSISTENT_GROUP_PROTOCOL";
    case KSFI_GP_ERR_UNKNOWN_MEMBER_ID:
        return "UNKNOWN_MEMBER_ID";
    case KSFI_GP_ERR_INVALID_SESSION_TIMEOUT:
        return "INVALID_SESSION_TIMEOUT";
    case KSFI_GP_ERR_REBALANCE_IN_PROGRESS:
        return "REBALANCE_IN_PROGRESS";
    case KSFI_GP_ERR_GROUP_AUTHORIZATION_FAILED:
        return "GROUP_AUTHORIZATION_FAILED";
    case KSFI_GP_ERR_UNSUPPORTED_VERSION:
        return "UNSUPPORTED_VERSION";
    case KSFI_GP_ERR_INVALID_REQUEST:
        return "INVALID_REQUEST";
    case KSFI_GP_ERR_GROUP_ID_NOT_FOUND:
        return "GROUP_ID_NOT_FOUND";
    case KSFI_GP_ERR_MEMBER_ID_REQUIRED:
        return "MEMBER_ID_REQUIRED";
    case KSFI_GP_ERR_GROUP_MAX_SIZE_REACHED:
        return "GROUP_MAX_SIZE_REACHED";
    case KSFI_GP_ERR_FENCED_INSTANCE_ID:
        return "FENCED_INSTANCE_ID";
    }
    return "UNKNOWN";
}

/* ---- writing --------------------------------------------------------------------- */

void
ksfi_gp_buf_free(ksfi_gp_buf *b)
{
    ksfi_free(b->data);
    memset(b, 0, sizeof *b);
}

void
ksfi_gp_buf_put(ksfi_gp_buf *b, const void *p, size_t n)
{
    if (b->oom) {
        return;
    }
    if (n > SIZE_MAX / 2 - b->len) {
        b->oom = true;
        return;
    }
    if (b->len + n > b->cap) {
        uint8_t *grown = ksfi_grow(b->data, &b->cap, b->len + n, 128);
        if (!grown) {
            b->oom = true;
            return;
        }
        b->data = grown;
    }
    if (n) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
}

static void
put_i8(ksfi_gp_buf *b, int8_t v)
{
    ksfi_gp_buf_put(b, &v, 1);
}

static void
put_i16(ksfi_gp_buf *b, int16_t v)
{
    uint16_t u = (uint16_t)v;
    uint8_t x[2] = {(uint8_t)(u >> 8), (uint8_t)u};
    ksfi_gp_buf_put(b, x, 2);
}

static void
put_i32(ksfi_gp_buf *b, int32_t v)
{
    uint32_t u = (uint32_t)v;
    uint8_t x[4] = {(uint8_t)(u >> 24), (uint8_t)(u >> 16), (uint8_t)(u >> 8),
                    (uint8_t)u};
    ksfi_gp_buf_put(b, x, 4);
}

/* STRING / NULLABLE_STRING; NULL writes length -1. Longer than int16 cannot be sent. */
static void
put_str(ksfi_gp_buf *b, const char *s)
{
    if (!s) {
        put_i16(b, -1);
        return;
    }
    size_t n = strlen(s);
    if (n > INT16_MAX) {
        b->oom = true; /* callers validate lengths; this only guards the wire */
        return;
    }
    put_i16(b, (int16_t)n);
    ksfi_gp_buf_put(b, s, n);
}

static void
put_bytes(ksfi_gp_buf *b, const void *p, size_t n)
{
    if (n > INT32_MAX) {
        b->oom = true;
        return;
    }
    put_i32(b, (int32_t)n);
    ksfi_gp_buf_put(b, p, n);
}

/* Start a frame: a size placeholder and request header v1. Returns the size offset. */
static size_t
frame_begin(ksfi_gp_buf *b, int16_t api_key, const ksfi_gp_header *h)
{
    size_t at = b->len;
    put_i32(b, 0);
    put_i16(b, api_key);
    put_i16(b, h->api_version);
    put_i32(b, h->correlation_id);
    put_str(b, h->client_id);
    return at;
}

static ksf_err
frame_end(ksfi_gp_buf *b, size_t at)
{
    if (b->oom) {
        return KSF_ENOMEM;
    }
    uint32_t n = (uint32_t)(b->len - at - 4);
    uint8_t *p = b->data + at;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    return KSF_OK;
}

/* ---- reading --------------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *p;
    size_t len, off;
    const char *what; /* "JoinGroup v5 response", for error sentences */
    ksf_errinfo *ei;
    ksf_err err;
} reader;

static bool
rd_fail(reader *r, ksf_err code, const char *field, const char *why)
{
    if (r->err == KSF_OK) {
        r->err = code;
        if (code == KSF_ENOMEM) {
            ksfi_fail(r->ei, code, "out of memory decoding %s field %s", r->what, field);
        } else {
            ksfi_fail(r->ei, code, "%s: field %s %s (at byte %zu of %zu)", r->what, field,
                      why, r->off, r->len);
        }
    }
    return false;
}

static bool
rd_need(reader *r, const char *field, size_t n)
{
    if (r->err != KSF_OK) {
        return false;
    }
    if (r->len - r->off < n) {
        return rd_fail(r, KSF_EPROTO, field, "is truncated");
    }
    return true;
}

static bool
rd_i16(reader *r, const char *field, int16_t *v)
{
    if (!rd_need(r, field, 2)) {
        return false;
    }
    const uint8_t *q = r->p + r->off;
    *v = (int16_t)(uint16_t)((unsigned)q[0] << 8 | q[1]);
    r->off += 2;
    return true;
}

static bool
rd_i32(reader *r, const char *field, int32_t *v)
{
    if (!rd_need(r, field, 4)) {
        return false;
    }
    const uint8_t *q = r->p + r->off;
    *v = (int32_t)((uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 |
                   q[3]);
    r->off += 4;
    return true;
}

/* A nullable run of bytes behind a 16-bit (strings) or 32-bit (bytes) length, borrowed
 * from the input: *p NULL for null (-1); a length below -1 or past the end fails. */
static bool
rd_span(reader *r, const char *field, bool wide, const uint8_t **p, size_t *n)
{
    int16_t n16 = 0;
    int32_t len = 0;
    *p = NULL;
    *n = 0;
    if (wide ? !rd_i32(r, field, &len) : !rd_i16(r, field, &n16)) {
        return false;
    }
    len = wide ? len : n16;
    if (len == -1) {
        return true;
    }
    if (len < 0) {
        return rd_fail(r, KSF_EPROTO, field, "has a negative length");
    }
    if (!rd_need(r, field, (size_t)len)) {
        return false;
    }
    *p = r->p + r->off;
    *n = (size_t)len;
    r->off += (size_t)len;
    return true;
}

/* A (nullable) string as a new C string; null gives NULL. A NUL inside is refused,
 * since two member ids that differ after a NUL would otherwise compare equal. */
static bool
rd_str(reader *r, const char *field, char **out)
{
    const uint8_t *p;
    size_t n;
    *out = NULL;
    if (!rd_span(r, field, false, &p, &n)) {
        return false;
    }
    if (!p) {
        return true;
    }
    if (memchr(p, 0, n)) {
        return rd_fail(r, KSF_EPROTO, field, "contains a NUL byte");
    }
    if (!(*out = ksfi_strndup((const char *)p, n))) {
        return rd_fail(r, KSF_ENOMEM, field, "");
    }
    return true;
}

/* As rd_str, but null becomes "" so callers never see NULL. */
static bool
rd_str_nn(reader *r, const char *field, char **out)
{
    if (!rd_str(r, field, out)) {
        return false;
    }
    if (!*out && !(*out = ksfi_strdup(""))) {
        return rd_fail(r, KSF_ENOMEM, field, "");
    }
    return true;
}

/* (Nullable) bytes as an owned copy; null and empty give NULL. */
static bool
rd_bytes(reader *r, const char *field, uint8_t **out, size_t *n)
{
    const uint8_t *p;
    *out = NULL;
    if (!rd_span(r, field, true, &p, n)) {
        return false;
    }
    if (p && *n && !(*out = ksfi_memdup(p, *n))) {
        return rd_fail(r, KSF_ENOMEM, field, "");
    }
    return true;
}

/*
 * An array count; null (-1) is 0. A count that cannot fit in the remaining bytes at
 * @p min_elem bytes per element is refused before anything is allocated for it.
 */
static bool
rd_count(reader *r, const char *field, size_t min_elem, size_t *count)
{
    int32_t n;
    *count = 0;
    if (!rd_i32(r, field, &n)) {
        return false;
    }
    if (n == -1) {
        return true;
    }
    if (n < 0) {
        return rd_fail(r, KSF_EPROTO, field, "has a negative element count");
    }
    if ((size_t)n > (r->len - r->off) / min_elem) {
        return rd_fail(r, KSF_EPROTO, field, "claims more elements than bytes remain");
    }
    *count = (size_t)n;
    return true;
}

/* calloc for @p count decoded elements (at least one byte so NULL means failure). */
static void *
rd_alloc(reader *r, const char *field, size_t count, size_t size)
{
    void *p = ksfi_calloc(count ? count : 1, size);
    if (!p) {
        rd_fail(r, KSF_ENOMEM, field, "");
    }
    return p;
}

static void
reader_init(reader *r, const uint8_t *p, size_t len, const char *what, ksf_errinfo *ei)
{
    r->p = p;
    r->len = p ? len : 0;
    r->off = 0;
    r->what = what;
    r->ei = ei;
    r->err = KSF_OK;
}

/* Start decoding a response into @p out (@p size bytes, zeroed first). */
static void
reader_open(reader *r, void *out, size_t size, const uint8_t *p, size_t len,
            const char *what, ksf_errinfo *ei)
{
    memset(out, 0, size);
    reader_init(r, p, len, what, ei);
}

/* What the group responses start with: throttle_time_ms (from version @p since on),
 * then error_code. */
static bool
rd_head(reader *r, int16_t version, int16_t since, int32_t *throttle, int16_t *error_code)
{
    return (version < since || rd_i32(r, "throttle_time_ms", throttle)) &&
           rd_i16(r, "error_code", error_code);
}

/* ---- consumer-protocol blobs (ConsumerProtocolSubscription/Assignment, kafkajs) ---- */

void
ksfi_gp_assignment_free(ksfi_gp_assignment *a)
{
    if (!a) {
        return;
    }
    for (size_t i = 0; i < a->count; i++) {
        ksfi_free(a->topics[i].topic);
        ksfi_free(a->topics[i].partitions);
    }
    ksfi_free(a->topics);
    a->topics = NULL;
    a->count = 0;
}

ksf_err
ksfi_gp_assignment_copy(ksfi_gp_assignment *dst, const ksfi_gp_assignment *src)
{
    dst->count = 0;
    dst->topics = ksfi_calloc(src->count ? src->count : 1, sizeof *dst->topics);
    if (!dst->topics) {
        return KSF_ENOMEM;
    }
    for (size_t i = 0; i < src->count; i++) {
        const ksfi_gp_topic_parts *s = &src->topics[i];
        ksfi_gp_topic_parts *d = &dst->topics[i];
        dst->count++;
        d->topic = ksfi_strdup(s->topic);
        d->partitions = ksfi_memdup(s->partitions, s->count * sizeof(int32_t));
        if (!d->topic || !d->partitions) {
            ksfi_gp_assignment_free(dst);
            return KSF_ENOMEM;
        }
        d->count = s->count;
    }
    return KSF_OK;
}

int32_t
ksfi_gp_assignment_min(const ksfi_gp_assignment *a, const char *topic)
{
    int32_t min = -1;
    for (size_t i = 0; i < a->count; i++) {
        if (strcmp(a->topics[i].topic, topic) != 0) {
            continue;
        }
        for (size_t j = 0; j < a->topics[i].count; j++) {
            int32_t p = a->topics[i].partitions[j];
            if (min < 0 || p < min) {
                min = p;
            }
        }
    }
    return min;
}

void
ksfi_gp_member_meta_free(ksfi_gp_member_meta *m)
{
    if (!m) {
        return;
    }
    for (size_t i = 0; i < m->topic_count; i++) {
        ksfi_free(m->topics[i]);
    }
    for (size_t i = 0; i < m->previous_count; i++) {
        ksfi_free(m->previous[i].topic);
    }
    ksfi_free(m->topics);
    ksfi_free(m->previous);
    memset(m, 0, sizeof *m);
}

/* The userData JSON text (see the header); NULL on ENOMEM. */
static char *
user_data_json(const ksfi_gp_prev *previous, size_t previous_count,
               int64_t launch_time_ns, size_t *len)
{
    char *text = NULL;
    json_t *root = json_object();
    json_t *prev = json_object();
    if (!root || !prev || json_object_set(root, "previousAssignment", prev) != 0) {
        goto done;
    }
    for (size_t i = 0; i < previous_count; i++) {
        if (json_object_set_new(prev, previous[i].topic,
                                json_integer(previous[i].partition)) != 0) {
            goto done;
        }
    }
    if (launch_time_ns > 0) {
        char ns[24];
        snprintf(ns, sizeof ns, "%" PRId64, launch_time_ns);
        if (json_object_set_new(root, "launchTime", json_string(ns)) != 0) {
            goto done;
        }
    }
    /* JSON.stringify's exact text, so NestJS members see the bytes they would write. */
    text = ksfi_json_stringify(root, len);
done:
    json_decref(prev);
    json_decref(root);
    return text;
}

ksf_err
ksfi_gp_encode_member_meta(ksfi_gp_buf *out, const char *const *topics,
                           size_t topic_count, const ksfi_gp_prev *previous,
                           size_t previous_count, int64_t launch_time_ns, ksf_errinfo *ei)
{
    size_t ud_len = 0;
    char *ud = user_data_json(previous, previous_count, launch_time_ns, &ud_len);
    if (!ud) {
        return ksfi_fail(ei, KSF_ENOMEM,
                         "out of memory encoding the group member metadata");
    }
    put_i16(out, 1);
    put_i32(out, (int32_t)topic_count);
    for (size_t i = 0; i < topic_count; i++) {
        put_str(out, topics[i]);
    }
    put_bytes(out, ud, ud_len);
    ksfi_free(ud);
    if (out->oom) {
        return ksfi_fail(ei, KSF_ENOMEM,
                         "out of memory encoding the group member metadata");
    }
    return KSF_OK;
}

/* "123" (decimal digits only, no sign, fits int64, > 0) -> value; false otherwise. */
static bool
parse_ns(const char *s, int64_t *out)
{
    if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19) {
        return false;
    }
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno != 0 || v <= 0) {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

/* Read previousAssignment and launchTime; anything odd is simply absent. */
static ksf_err
decode_user_data(const uint8_t *p, size_t len, ksfi_gp_member_meta *m)
{
    json_t *root = p && len ? json_loadb((const char *)p, len, 0, NULL) : NULL;
    json_t *prev = json_object_get(root, "previousAssignment");
    json_t *lt = json_object_get(root, "launchTime");
    ksf_err err = KSF_OK;
    if (json_is_string(lt)) {
        m->has_launch_time = parse_ns(json_string_value(lt), &m->launch_time_ns);
    } else if (json_is_integer(lt) && json_integer_value(lt) > 0) {
        m->has_launch_time = true;
        m->launch_time_ns = (int64_t)json_integer_value(lt);
    }
    size_t n = json_is_object(prev) ? json_object_size(prev) : 0;
    if (n) {
        m->previous = ksfi_calloc(n, sizeof *m->previous);
        if (!m->previous) {
            err = KSF_ENOMEM;
            goto done;
        }
        const char *topic;
        json_t *v;
        json_object_foreach (prev, topic, v) {
            json_int_t part = json_is_integer(v) ? json_integer_value(v) : -1;
            if (part < 0 || part > INT32_MAX) {
                continue; /* NestJS writes numbers; ignore what it would not write */
            }
            ksfi_gp_prev *e = &m->previous[m->previous_count];
            if (!(e->topic = ksfi_strdup(topic))) {
                err = KSF_ENOMEM;
                goto done;
            }
            e->partition = (int32_t)part;
            m->previous_count++;
        }
    }
done:
    json_decref(root);
    return err;
}

ksf_err
ksfi_gp_decode_member_meta(const uint8_t *p, size_t len, ksfi_gp_member_meta *out,
                           ksf_errinfo *ei)
{
    reader r;
    int16_t version;
    size_t n;
    const uint8_t *ud;
    size_t ud_len;
    memset(out, 0, sizeof *out);
    reader_init(&r, p, len, "group member metadata", ei);
    if (!rd_i16(&r, "version", &version) || !rd_count(&r, "topics", 2, &n) ||
        !(out->topics = rd_alloc(&r, "topics", n, sizeof(char *)))) {
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        char *t;
        if (!rd_str(&r, "topics[]", &t)) {
            goto fail;
        }
        if (t) { /* a null topic names nothing: skip it */
            out->topics[out->topic_count++] = t;
        }
    }
    if (!rd_span(&r, "user_data", true, &ud, &ud_len)) {
        goto fail;
    }
    /* Trailing bytes (owned_partitions, generation, rack of newer layouts) are ignored.
     */
    if (decode_user_data(ud, ud_len, out) != KSF_OK) {
        rd_fail(&r, KSF_ENOMEM, "user_data", "");
        goto fail;
    }
    return KSF_OK;
fail:
    ksfi_gp_member_meta_free(out);
    return r.err;
}

ksf_err
ksfi_gp_encode_assignment(ksfi_gp_buf *out, const ksfi_gp_assignment *a, ksf_errinfo *ei)
{
    put_i16(out, 1);
    put_i32(out, (int32_t)a->count);
    for (size_t i = 0; i < a->count; i++) {
        put_str(out, a->topics[i].topic);
        put_i32(out, (int32_t)a->topics[i].count);
        for (size_t j = 0; j < a->topics[i].count; j++) {
            put_i32(out, a->topics[i].partitions[j]);
        }
    }
    put_i32(out, 0); /* user_data: empty, as NestJS writes it */
    if (out->oom) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory encoding a group assignment");
    }
    return KSF_OK;
}

static bool
decode_topic_parts(reader *r, ksfi_gp_topic_parts *tp)
{
    size_t n;
    if (!rd_str_nn(r, "assigned_partitions[].topic", &tp->topic) ||
        !rd_count(r, "assigned_partitions[].partitions", 4, &n) ||
        !(tp->partitions = rd_alloc(r, "partitions", n, sizeof(int32_t)))) {
        return false;
    }
    for (size_t j = 0; j < n; j++) {
        int32_t part;
        if (!rd_i32(r, "assigned_partitions[].partitions[]", &part)) {
            return false;
        }
        if (part < 0) {
            return rd_fail(r, KSF_EPROTO, "assigned_partitions[].partitions[]",
                           "holds a negative partition");
        }
        tp->partitions[tp->count++] = part;
    }
    return true;
}

ksf_err
ksfi_gp_decode_assignment(const uint8_t *p, size_t len, ksfi_gp_assignment *out,
                          ksf_errinfo *ei)
{
    reader r;
    int16_t version;
    size_t n;
    memset(out, 0, sizeof *out);
    reader_init(&r, p, len, "group assignment", ei);
    if (len < 2) {
        return KSF_OK; /* kafkajs: no assignment */
    }
    if (!rd_i16(&r, "version", &version) || !rd_count(&r, "assigned_partitions", 6, &n) ||
        !(out->topics = rd_alloc(&r, "assigned_partitions", n, sizeof *out->topics))) {
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        out->count++;
        if (!decode_topic_parts(&r, &out->topics[i])) {
            goto fail;
        }
    }
    return KSF_OK; /* user_data and anything after it are not ours to read */
fail:
    ksfi_gp_assignment_free(out);
    return r.err;
}

/* ---- requests (Kafka protocol spec, non-flexible versions) ----------------------- */

ksf_err
ksfi_gp_encode_api_versions(ksfi_gp_buf *out, const ksfi_gp_header *h)
{
    return frame_end(out, frame_begin(out, KSFI_GP_API_VERSIONS, h));
}

ksf_err
ksfi_gp_encode_find_coordinator(ksfi_gp_buf *out, const ksfi_gp_header *h,
                                const char *group_id)
{
    size_t at = frame_begin(out, KSFI_GP_API_FIND_COORDINATOR, h);
    put_str(out, group_id);
    if (h->api_version >= 1) {
        put_i8(out, 0); /* key_type: group */
    }
    return frame_end(out, at);
}

ksf_err
ksfi_gp_encode_join_group(ksfi_gp_buf *out, const ksfi_gp_header *h,
                          const ksfi_gp_join_request *r)
{
    if (r->group_instance_id && h->api_version < 5) {
        return KSF_EINVAL; /* would silently make a static member dynamic */
    }
    size_t at = frame_begin(out, KSFI_GP_API_JOIN_GROUP, h);
    put_str(out, r->group_id);
    put_i32(out, r->session_timeout_ms);
    if (h->api_version >= 1) {
        put_i32(out, r->rebalance_timeout_ms);
    }
    put_str(out, r->member_id);
    if (h->api_version >= 5) {
        put_str(out, r->group_instance_id); /* KIP-345; null: a dynamic member */
    }
    put_str(out, r->protocol_type);
    put_i32(out, 1);
    put_str(out, r->protocol_name);
    put_bytes(out, r->metadata, r->metadata_len);
    return frame_end(out, at);
}

/* SyncGroup's and Heartbeat's common start: the frame's header, then the member's
 * group, generation, id and (from v3 on, KIP-345) instance id. Returns the frame's
 * start for frame_end; (size_t)-1 when an instance id is given to an older version. */
static size_t
member_frame_begin(ksfi_gp_buf *out, int16_t api, const ksfi_gp_header *h,
                   const char *group_id, int32_t generation, const char *member_id,
                   const char *group_instance_id)
{
    if (group_instance_id && h->api_version < 3) {
        return (size_t)-1;
    }
    size_t at = frame_begin(out, api, h);
    put_str(out, group_id);
    put_i32(out, generation);
    put_str(out, member_id);
    if (h->api_version >= 3) {
        put_str(out, group_instance_id);
    }
    return at;
}

ksf_err
ksfi_gp_encode_sync_group(ksfi_gp_buf *out, const ksfi_gp_header *h, const char *group_id,
                          int32_t generation, const char *member_id,
                          const char *group_instance_id,
                          const ksfi_gp_member_blob *assignments, size_t count)
{
    size_t at = member_frame_begin(out, KSFI_GP_API_SYNC_GROUP, h, group_id, generation,
                                   member_id, group_instance_id);
    if (at == (size_t)-1) {
        return KSF_EINVAL;
    }
    put_i32(out, (int32_t)count);
    for (size_t i = 0; i < count; i++) {
        put_str(out, assignments[i].member_id);
        put_bytes(out, assignments[i].data, assignments[i].len);
    }
    return frame_end(out, at);
}

ksf_err
ksfi_gp_encode_heartbeat(ksfi_gp_buf *out, const ksfi_gp_header *h, const char *group_id,
                         int32_t generation, const char *member_id,
                         const char *group_instance_id)
{
    size_t at = member_frame_begin(out, KSFI_GP_API_HEARTBEAT, h, group_id, generation,
                                   member_id, group_instance_id);
    return at == (size_t)-1 ? KSF_EINVAL : frame_end(out, at);
}

ksf_err
ksfi_gp_encode_leave_group(ksfi_gp_buf *out, const ksfi_gp_header *h,
                           const char *group_id, const char *member_id)
{
    size_t at = frame_begin(out, KSFI_GP_API_LEAVE_GROUP, h);
    put_str(out, group_id);
    put_str(out, member_id);
    return frame_end(out, at);
}

/* ---- responses (response header v0) --------------------------------------------- */

ksf_err
ksfi_gp_decode_response_header(const uint8_t *p, size_t len, int32_t *correlation_id,
                               const uint8_t **body, size_t *body_len, ksf_errinfo *ei)
{
    reader r;
    reader_init(&r, p, len, "response header", ei);
    if (!rd_i32(&r, "correlation_id", correlation_id)) {
        return r.err;
    }
    *body = p + 4;
    *body_len = len - 4;
    return KSF_OK;
}

void
ksfi_gp_api_versions_resp_free(ksfi_gp_api_versions_resp *r)
{
    if (r) {
        ksfi_free(r->apis);
        memset(r, 0, sizeof *r);
    }
}

ksf_err
ksfi_gp_decode_api_versions(const uint8_t *p, size_t len, int16_t version,
                            ksfi_gp_api_versions_resp *out, ksf_errinfo *ei)
{
    reader r;
    size_t n;
    reader_open(&r, out, sizeof *out, p, len, "ApiVersions response", ei);
    if (!rd_i16(&r, "error_code", &out->error_code) || !rd_count(&r, "api_keys", 6, &n) ||
        !(out->apis = rd_alloc(&r, "api_keys", n, sizeof *out->apis))) {
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        ksfi_gp_api_range *a = &out->apis[i];
        if (!rd_i16(&r, "api_keys[].api_key", &a->api_key) ||
            !rd_i16(&r, "api_keys[].min_version", &a->min_version) ||
            !rd_i16(&r, "api_keys[].max_version", &a->max_version)) {
            goto fail;
        }
        out->api_count++;
    }
    if (version >= 1 && !rd_i32(&r, "throttle_time_ms", &out->throttle_time_ms)) {
        goto fail;
    }
    return KSF_OK;
fail:
    ksfi_gp_api_versions_resp_free(out);
    return r.err;
}

int16_t
ksfi_gp_pick_version(const ksfi_gp_api_versions_resp *r, int16_t api_key, int16_t our_min,
                     int16_t our_max)
{
    for (size_t i = 0; i < r->api_count; i++) {
        const ksfi_gp_api_range *a = &r->apis[i];
        if (a->api_key != api_key) {
            continue;
        }
        int16_t hi = a->max_version < our_max ? a->max_version : our_max;
        int16_t lo = a->min_version > our_min ? a->min_version : our_min;
        return hi >= lo ? hi : -1;
    }
    return -1;
}

void
ksfi_gp_find_coordinator_resp_free(ksfi_gp_find_coordinator_resp *r)
{
    if (r) {
        ksfi_free(r->error_message);
        ksfi_free(r->host);
        memset(r, 0, sizeof *r);
    }
}

ksf_err
ksfi_gp_decode_find_coordinator(const uint8_t *p, size_t len, int16_t version,
                                ksfi_gp_find_coordinator_resp *out, ksf_errinfo *ei)
{
    reader r;
    reader_open(&r, out, sizeof *out, p, len, "FindCoordinator response", ei);
    if (!rd_head(&r, version, 1, &out->throttle_time_ms, &out->error_code) ||
        (version >= 1 && !rd_str(&r, "error_message", &out->error_message)) ||
        !rd_i32(&r, "node_id", &out->node_id) || !rd_str(&r, "host", &out->host) ||
        !rd_i32(&r, "port", &out->port)) {
        ksfi_gp_find_coordinator_resp_free(out);
        return r.err;
    }
    return KSF_OK;
}

void
ksfi_gp_join_group_resp_free(ksfi_gp_join_group_resp *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->member_count; i++) {
        ksfi_free(r->members[i].member_id);
        ksfi_free(r->members[i].group_instance_id);
        ksfi_free(r->members[i].metadata);
    }
    ksfi_free(r->members);
    ksfi_free(r->protocol_name);
    ksfi_free(r->leader);
    ksfi_free(r->member_id);
    memset(r, 0, sizeof *r);
}

ksf_err
ksfi_gp_decode_join_group(const uint8_t *p, size_t len, int16_t version,
                          ksfi_gp_join_group_resp *out, ksf_errinfo *ei)
{
    reader r;
    size_t n;
    reader_open(&r, out, sizeof *out, p, len, "JoinGroup response", ei);
    if (!rd_head(&r, version, 2, &out->throttle_time_ms, &out->error_code) ||
        !rd_i32(&r, "generation_id", &out->generation_id) ||
        !rd_str_nn(&r, "protocol_name", &out->protocol_name) ||
        !rd_str_nn(&r, "leader", &out->leader) ||
        !rd_str_nn(&r, "member_id", &out->member_id) || !rd_count(&r, "members", 6, &n) ||
        !(out->members = rd_alloc(&r, "members", n, sizeof *out->members))) {
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        ksfi_gp_join_member *m = &out->members[i];
        out->member_count++;
        if (!rd_str_nn(&r, "members[].member_id", &m->member_id) ||
            (version >= 5 &&
             !rd_str(&r, "members[].group_instance_id", &m->group_instance_id)) ||
            !rd_bytes(&r, "members[].metadata", &m->metadata, &m->metadata_len)) {
            goto fail;
        }
    }
    return KSF_OK;
fail:
    ksfi_gp_join_group_resp_free(out);
    return r.err;
}

void
ksfi_gp_sync_group_resp_free(ksfi_gp_sync_group_resp *r)
{
    if (r) {
        ksfi_free(r->assignment);
        memset(r, 0, sizeof *r);
    }
}

ksf_err
ksfi_gp_decode_sync_group(const uint8_t *p, size_t len, int16_t version,
                          ksfi_gp_sync_group_resp *out, ksf_errinfo *ei)
{
    reader r;
    reader_open(&r, out, sizeof *out, p, len, "SyncGroup response", ei);
    if (!rd_head(&r, version, 1, &out->throttle_time_ms, &out->error_code) ||
        !rd_bytes(&r, "assignment", &out->assignment, &out->assignment_len)) {
        ksfi_gp_sync_group_resp_free(out);
        return r.err;
    }
    return KSF_OK;
}

static ksf_err
decode_simple(const uint8_t *p, size_t len, int16_t version, const char *what,
              ksfi_gp_simple_resp *out, ksf_errinfo *ei)
{
    reader r;
    reader_open(&r, out, sizeof *out, p, len, what, ei);
    rd_head(&r, version, 1, &out->throttle_time_ms, &out->error_code);
    return r.err;
}

ksf_err
ksfi_gp_decode_heartbeat(const uint8_t *p, size_t len, int16_t version,
                         ksfi_gp_simple_resp *out, ksf_errinfo *ei)
{
    return decode_simple(p, len, version, "Heartbeat response", out, ei);
}

ksf_err
ksfi_gp_decode_leave_group(const uint8_t *p, size_t len, int16_t version,
                           ksfi_gp_simple_resp *out, ksf_errinfo *ei)
{
    return decode_simple(p, len, version, "LeaveGroup response", out, ei);
}
