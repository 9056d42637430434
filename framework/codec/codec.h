/*
 * The NestJS envelope rules as pure functions (no I/O, no librdkafka): how payloads
 * become Kafka values and back, which headers requests and replies carry, error shapes
 * and correlation ids. Unit-tested against exact bytes and fuzzed.
 * Wire facts: shared NESTJS-KAFKA-WIRE.md sections 0, 2, 3, 4 and 7.
 */
#ifndef KSF_CODEC_H
#define KSF_CODEC_H

#include <ksf/ksf.h>

/* A header as the codec sees it; value NULL means a null header value. */
typedef struct ksfi_header {
    const char *name;
    const void *value;
    size_t len;
} ksfi_header;

/* ---- values ---------------------------------------------------------------------- */

/*
 * Encode a payload as NestJS's KafkaRequestSerializer.encode() does: objects and arrays
 * as compact JSON text (JSON.stringify, numbers in JavaScript's shortest form), strings
 * as their bytes, integers, reals and booleans as their text, NULL or json null as a
 * null value (*out NULL, *len 0). *out is NUL-terminated and freed with ksfi_free().
 * Errors: KSF_ENOMEM.
 */
ksf_err ksfi_encode_value(const json_t *v, char **out, size_t *len, ksf_errinfo *ei);

/*
 * ksfi_encode_value without an allocation per value: the bytes are written into the
 * caller's buffer *buf of *cap bytes (grown with ksfi_realloc and still the caller's,
 * with *cap updated, also after an error), except a string's, which *out borrows from
 * @p v itself. *out is NULL with *len 0 for a null value. Errors: KSF_ENOMEM.
 */
ksf_err ksfi_encode_value_in(const json_t *v, char **buf, size_t *cap, const void **out,
                             size_t *len, ksf_errinfo *ei);

/*
 * ksfi_encode_value into the caller's @p stack buffer (@p stack_cap bytes, at least 1)
 * while the text fits, so a small value costs no allocation; a larger one moves to a
 * ksfi_malloc'd buffer returned in *heap (NULL when it fit), which the caller frees
 * with ksfi_free once *out is no longer read, also after an error. A string's bytes
 * are borrowed from @p v itself. *out is NULL with *len 0 for a null value.
 * Errors: KSF_ENOMEM.
 */
ksf_err ksfi_encode_value_stack(const json_t *v, char *stack, size_t stack_cap,
                                char **heap, const void **out, size_t *len,
                                ksf_errinfo *ei);

/*
 * JSON.stringify of @p v: compact; object keys in JavaScript's enumeration order
 * (array-index keys such as "2" first, ascending, then insertion order); only '"',
 * '\\' and control characters escaped; numbers as JavaScript prints them (integers
 * exactly, even beyond 2^53). Returns a NUL-terminated ksfi_malloc'd string (length in
 * *len when non-NULL) or NULL on ENOMEM.
 */
char *ksfi_json_stringify(const json_t *v, size_t *len);

/*
 * A double as JavaScript's Number#toString prints it ("0.1", "1e+21", "-5e-7", "0" for
 * -0). Non-finite values print as "null" (what JSON.stringify does). @p buf >= 32.
 */
void ksfi_format_number(double d, char buf[32]);

/*
 * Decode a value as NestJS's KafkaParser.decode() does. @p bytes NULL (null value) gives
 * json null. A non-empty value whose first byte is 0x00 is binary: *out = NULL and
 * KSF_OK. Text starting with '{' or '[' that parses as JSON becomes that JSON; any other
 * text (including JSON that fails to parse) becomes a JSON string, with invalid UTF-8
 * replaced by U+FFFD as Node's Buffer#toString does. What JSON.parse accepts but
 * jansson cannot hold is mapped to the nearest value: an escaped lone surrogate to
 * U+FFFD, an integer beyond int64 to a double, a number beyond the double range
 * (Infinity) to null. Not mapped (they stay strings): "\u0000" inside an object key,
 * nesting deeper than jansson's 2048 levels. Errors: KSF_ENOMEM.
 */
ksf_err ksfi_decode_value(const void *bytes, size_t len, json_t **out);

/*
 * Copy @p len bytes of @p s into a new NUL-terminated string in which every invalid
 * UTF-8 sequence is replaced by U+FFFD (EF BF BD) and NUL bytes are kept. Returns NULL
 * on ENOMEM; *out_len receives the new length.
 */
char *ksfi_utf8_sanitize(const char *s, size_t len, size_t *out_len);

/* ---- requests (server side) ------------------------------------------------------ */

/* What the request headers say. Pointers borrow the header values. */
typedef struct ksfi_request_meta {
    const void *correlation_id; /* NULL when absent; echoed byte for byte */
    size_t correlation_id_len;
    const char *reply_topic; /* NULL when absent */
    size_t reply_topic_len;
    int32_t reply_partition; /* -1 when the header is absent */
    bool is_request;         /* non-empty correlation id AND non-empty reply topic */
} ksfi_request_meta;

/*
 * Read the request headers. The last occurrence of a repeated header wins (kafkajs
 * would comma-join repeated values; ksf never sends repeats). kafka_replyPartition is
 * accepted as a decimal string (NestJS) or a 4-byte big-endian int (Spring Kafka).
 * Errors, for a request only (an event's reply headers are never used): KSF_EPROTO
 * when kafka_replyPartition is present but neither, or kafka_replyTopic is not a
 * legal topic name; the sentence quotes the bytes. *meta is filled in either case.
 */
ksf_err ksfi_parse_request_headers(const ksfi_header *hdrs, size_t count,
                                   ksfi_request_meta *meta, ksf_errinfo *ei);

/*
 * Parse a kafka_replyPartition value: ASCII decimal digits ("0".."2147483647"), else 4
 * bytes as a big-endian int32 >= 0. Returns false when it is neither.
 */
bool ksfi_parse_reply_partition(const void *value, size_t len, int32_t *out);

/* ---- replies ----------------------------------------------------------------------- */

/* Maximum headers ksfi_reply_headers / ksfi_request_headers produce. */
#define KSFI_PROTO_HEADERS_MAX 3

/*
 * The protocol headers of a reply message, in NestJS's order: kafka_correlationId,
 * then kafka_nest-err when @p err is non-NULL, then kafka_nest-is-disposed (one 0x00
 * byte) when @p disposed. Values borrow the arguments. Returns the count written.
 */
size_t ksfi_reply_headers(const void *correlation_id, size_t correlation_id_len,
                          const char *err, size_t err_len, bool disposed,
                          ksfi_header out[KSFI_PROTO_HEADERS_MAX]);

/* What a reply's headers say (client side). Pointers borrow the header values. */
typedef struct ksfi_reply_meta {
    const void *correlation_id; /* NULL: not a reply, ignore it */
    size_t correlation_id_len;
    const void *err; /* the kafka_nest-err value (NULL: absent or a null value) */
    size_t err_len;
    bool has_err;     /* an error reply: kafka_nest-err present and non-empty */
    bool drop_value;  /* kafka_nest-err present at all: NestJS ignores the value */
    bool is_disposed; /* kafka_nest-is-disposed or kafka_nest-err present: the end */
} ksfi_reply_meta;

/*
 * Read the reply headers, as KafkaResponseDeserializer and createObserver do. The last
 * occurrence of a repeated header wins. An empty or null kafka_nest-err is falsy in
 * JavaScript: NestJS then completes the call without a value and without an error
 * (has_err false, drop_value and is_disposed true).
 */
void ksfi_parse_reply_headers(const ksfi_header *hdrs, size_t count,
                              ksfi_reply_meta *meta);

/* ---- requests (client side) ------------------------------------------------------- */

/*
 * The protocol headers of a request: kafka_correlationId, kafka_replyTopic and
 * kafka_replyPartition as a decimal string written into @p partition_buf. Returns the
 * count written (3).
 */
size_t ksfi_request_headers(const char *correlation_id, const char *reply_topic,
                            int32_t reply_partition, char partition_buf[12],
                            ksfi_header out[KSFI_PROTO_HEADERS_MAX]);

/* Bytes ksfi_request_headers_spring writes into its buffer: 16 of id, 4 of partition. */
#define KSFI_SPRING_HEADERS_BUF 20
/* A buffer that serves either dialect's request headers (NestJS: 12 decimal bytes). */
#define KSFI_REQUEST_HEADERS_BUF 20

/*
 * The protocol headers of a request as Spring Kafka's ReplyingKafkaTemplate writes them
 * (client.wire.dialect "spring"): kafka_correlationId as the 16 raw bytes of the UUID
 * @p correlation_id (the default CorrelationKey), kafka_replyTopic as text and
 * kafka_replyPartition as a 4-byte big-endian int, the only form a Spring
 * @SendTo listener reads. Values point into @p buf. Returns the count written (3), or 0
 * when @p correlation_id is not a UUID in text form (ksf's ids always are).
 */
size_t ksfi_request_headers_spring(const char *correlation_id, const char *reply_topic,
                                   int32_t reply_partition,
                                   unsigned char buf[KSFI_SPRING_HEADERS_BUF],
                                   ksfi_header out[KSFI_PROTO_HEADERS_MAX]);

/*
 * The text form of a 16-byte correlation id, as ksfi_request_headers_spring sent it:
 * the UUID in 36 lowercase characters. Returns false (out untouched) unless @p len is 16.
 */
bool ksfi_correlation_id_text(const void *bytes, size_t len, char out[37]);

/* "<pattern>.reply" as a new string, or NULL on ENOMEM. */
char *ksfi_reply_topic_of(const char *pattern);

/*
 * Write a new correlation id into @p out: a random (v4) UUID from libuuid in lowercase,
 * 36 characters from [0-9a-f-], so NestJS's JSON sniffing never touches it.
 */
void ksfi_new_correlation_id(char out[37]);

/*
 * A per-client correlation id generator: libuuid's random (v4) UUID once, then a
 * counter in its last 48 bits, so a request costs no syscall. Ids keep the shape of
 * ksfi_new_correlation_id (36 lowercase characters, version nibble 4); the 74 random
 * bits of the fixed part keep them unique across clients, and one client would need
 * 2^48 requests to wrap its counter. Not thread-safe: the client calls it under its lock.
 */
typedef struct ksfi_idgen {
    char prefix[24]; /* "xxxxxxxx-xxxx-4xxx-yxxx-": the fixed part, formatted once */
    uint64_t next;   /* the last 48 bits of the next id */
} ksfi_idgen;

void ksfi_idgen_init(ksfi_idgen *g);
void ksfi_idgen_next(ksfi_idgen *g, char out[37]);

/*
 * Check that @p topic is a legal Kafka topic name (1..249 characters of [A-Za-z0-9._-],
 * not "." or ".."), and, when @p need_reply_room, that "<topic>.reply" is legal too.
 * Errors: KSF_EINVAL with a sentence quoting the name and what is allowed.
 */
ksf_err ksfi_check_topic(const char *topic, bool need_reply_room, ksf_errinfo *ei);

/* ---- errors --------------------------------------------------------------------- */

/* {"status":"error","message":<message>}: RpcException(string). NULL on ENOMEM. */
json_t *ksfi_error_shape(const char *message);

/*
 * The error JSON an RpcException(@p error) produces: an object or array as is (a new
 * reference), anything else wrapped as {"status":"error","message":<error>}.
 */
json_t *ksfi_error_from_json(const json_t *error);

/*
 * The kafka_nest-err header value for @p error: JSON.stringify of an object or array,
 * the raw text of a string. NUL-terminated, ksfi_free'd. NULL on ENOMEM.
 */
char *ksfi_encode_error(const json_t *error, size_t *len);

#endif
