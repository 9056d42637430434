/*
 * The classic Kafka consumer-group protocol as pure functions (no I/O): request
 * encoders, response decoders and the consumer-protocol blobs carried inside JoinGroup
 * metadata and SyncGroup assignments, in the NestJS NestReplyPartitionAssigner variant.
 * Non-flexible versions only: request header v1, response header v0.
 * Facts: shared KAFKA-GROUP-PROTOCOL.md sections 1-3 and 7, NESTJS-KAFKA-WIRE.md 8.3.
 *
 * Encoders append a whole frame (int32 size, header, body) to a ksfi_gp_buf. Decoders
 * take a response body (the bytes after the correlation id), check every length
 * against the bytes present, fill a struct of owned copies and fail with KSF_EPROTO and
 * a sentence naming the field. Every string and bytes field accepts length -1 (null),
 * because the librdkafka mock writes nulls into non-nullable fields on error paths.
 */
#ifndef KSF_GROUP_PROTO_H
#define KSF_GROUP_PROTO_H

#include <ksf/ksf.h>

/* API keys (Kafka protocol spec). */
#define KSFI_GP_API_FIND_COORDINATOR 10
#define KSFI_GP_API_JOIN_GROUP 11
#define KSFI_GP_API_HEARTBEAT 12
#define KSFI_GP_API_LEAVE_GROUP 13
#define KSFI_GP_API_SYNC_GROUP 14
#define KSFI_GP_API_VERSIONS 18

/* Error codes the membership acts on (Errors.java). */
#define KSFI_GP_ERR_NONE 0
#define KSFI_GP_ERR_COORDINATOR_LOAD_IN_PROGRESS 14
#define KSFI_GP_ERR_COORDINATOR_NOT_AVAILABLE 15
#define KSFI_GP_ERR_NOT_COORDINATOR 16
#define KSFI_GP_ERR_ILLEGAL_GENERATION 22
#define KSFI_GP_ERR_INCONSISTENT_GROUP_PROTOCOL 23
#define KSFI_GP_ERR_UNKNOWN_MEMBER_ID 25
#define KSFI_GP_ERR_INVALID_SESSION_TIMEOUT 26
#define KSFI_GP_ERR_REBALANCE_IN_PROGRESS 27
#define KSFI_GP_ERR_GROUP_AUTHORIZATION_FAILED 30
#define KSFI_GP_ERR_UNSUPPORTED_VERSION 35
#define KSFI_GP_ERR_INVALID_REQUEST 42
#define KSFI_GP_ERR_GROUP_ID_NOT_FOUND 69
#define KSFI_GP_ERR_MEMBER_ID_REQUIRED 79
#define KSFI_GP_ERR_GROUP_MAX_SIZE_REACHED 81
#define KSFI_GP_ERR_FENCED_INSTANCE_ID 82

/* The largest response frame accepted; larger sizes are treated as a broken stream. */
#define KSFI_GP_MAX_FRAME_BYTES (64 * 1024 * 1024)

/* The Kafka name of an error code ("NOT_COORDINATOR"); "UNKNOWN" for others. */
const char *ksfi_gp_error_name(int code);

/* ---- byte buffer ----------------------------------------------------------------- */

/* A growable byte buffer; zero-initialise, then free with ksfi_gp_buf_free(). */
typedef struct ksfi_gp_buf {
    uint8_t *data;
    size_t len, cap;
    bool oom; /* an append failed: the contents are incomplete */
} ksfi_gp_buf;

void ksfi_gp_buf_free(ksfi_gp_buf *b);

/* Append @p n bytes of @p p (the SASL frames of transport_sasl.c use it too); on
 * failure b->oom is set and every later append does nothing. */
void ksfi_gp_buf_put(ksfi_gp_buf *b, const void *p, size_t n);

/* ---- consumer-protocol blobs ----------------------------------------------------- */

/* One topic's partitions. */
typedef struct ksfi_gp_topic_parts {
    char *topic;
    int32_t *partitions;
    size_t count;
} ksfi_gp_topic_parts;

/* A MemberAssignment: partitions per topic. */
typedef struct ksfi_gp_assignment {
    ksfi_gp_topic_parts *topics;
    size_t count;
} ksfi_gp_assignment;

void ksfi_gp_assignment_free(ksfi_gp_assignment *a);

/* Deep copy of @p src into @p dst. Errors: KSF_ENOMEM (dst is then empty). */
ksf_err ksfi_gp_assignment_copy(ksfi_gp_assignment *dst, const ksfi_gp_assignment *src);

/* The lowest partition of @p topic in @p a, or -1 when it has none. */
int32_t ksfi_gp_assignment_min(const ksfi_gp_assignment *a, const char *topic);

/* One previousAssignment entry: the topic and the member's lowest partition of it. */
typedef struct ksfi_gp_prev {
    char *topic;
    int32_t partition;
} ksfi_gp_prev;

/* MemberMetadata with the userData JSON decoded. launch_time_ns is valid only when
 * has_launch_time. */
typedef struct ksfi_gp_member_meta {
    char **topics;
    size_t topic_count;
    ksfi_gp_prev *previous;
    size_t previous_count;
    bool has_launch_time;
    int64_t launch_time_ns;
} ksfi_gp_member_meta;

void ksfi_gp_member_meta_free(ksfi_gp_member_meta *m);

/*
 * Encode MemberMetadata v1 without owned_partitions (kafkajs's layout):
 * int16 1, string[] topics, bytes userData, userData =
 * {"previousAssignment":{"<topic>":<partition>,...},"launchTime":"<ns>"}; launchTime is
 * left out when @p launch_time_ns <= 0, which gives NestJS's exact bytes. The blob is
 * appended to @p out without a frame. Errors: KSF_ENOMEM.
 */
ksf_err ksfi_gp_encode_member_meta(ksfi_gp_buf *out, const char *const *topics,
                                   size_t topic_count, const ksfi_gp_prev *previous,
                                   size_t previous_count, int64_t launch_time_ns,
                                   ksf_errinfo *ei);

/*
 * Decode MemberMetadata: version, topics and userData; trailing bytes (owned_partitions
 * of a Java-style member) are ignored. userData that is empty, not JSON, or lacks the
 * keys gives no previous assignment / no launch time rather than an error, so one odd
 * member cannot stop the group. Errors: KSF_EPROTO (truncated blob), KSF_ENOMEM.
 */
ksf_err ksfi_gp_decode_member_meta(const uint8_t *p, size_t len, ksfi_gp_member_meta *out,
                                   ksf_errinfo *ei);

/* Encode MemberAssignment v1 with empty userData (appended, no frame). KSF_ENOMEM. */
ksf_err ksfi_gp_encode_assignment(ksfi_gp_buf *out, const ksfi_gp_assignment *a,
                                  ksf_errinfo *ei);

/*
 * Decode MemberAssignment; fewer than 2 bytes is an empty assignment (kafkajs's rule),
 * trailing userData is ignored. Errors: KSF_EPROTO, KSF_ENOMEM.
 */
ksf_err ksfi_gp_decode_assignment(const uint8_t *p, size_t len, ksfi_gp_assignment *out,
                                  ksf_errinfo *ei);

/* ---- requests -------------------------------------------------------------------- */

/* What every request frame carries in its v1 header. */
typedef struct ksfi_gp_header {
    int16_t api_version;
    int32_t correlation_id;
    const char *client_id; /* NULL encodes as a null string */
} ksfi_gp_header;

/* ApiVersions v0: empty body. */
ksf_err ksfi_gp_encode_api_versions(ksfi_gp_buf *out, const ksfi_gp_header *h);

/* FindCoordinator v1-2: key = @p group_id, key_type 0 (group). */
ksf_err ksfi_gp_encode_find_coordinator(ksfi_gp_buf *out, const ksfi_gp_header *h,
                                        const char *group_id);

typedef struct ksfi_gp_join_request {
    const char *group_id;
    int32_t session_timeout_ms;
    int32_t rebalance_timeout_ms;
    const char *member_id;     /* "" on the first join */
    const char *protocol_type; /* "consumer" */
    const char *protocol_name; /* KSFI_ASSIGNOR_NAME */
    const uint8_t *metadata;
    size_t metadata_len;
    const char *group_instance_id; /* KIP-345 static member; NULL: dynamic */
} ksfi_gp_join_request;

/* JoinGroup v2-5. v5 carries group_instance_id (null for a dynamic member); an instance
 * id with v2-4 is refused with KSF_EINVAL rather than silently dropped. */
ksf_err ksfi_gp_encode_join_group(ksfi_gp_buf *out, const ksfi_gp_header *h,
                                  const ksfi_gp_join_request *r);

/* One SyncGroup assignment entry. */
typedef struct ksfi_gp_member_blob {
    const char *member_id;
    const uint8_t *data;
    size_t len;
} ksfi_gp_member_blob;

/* SyncGroup v1-3; followers pass count 0. v3 carries @p group_instance_id (NULL:
 * null, a dynamic member); an instance id with v1-2 is refused with KSF_EINVAL. */
ksf_err ksfi_gp_encode_sync_group(ksfi_gp_buf *out, const ksfi_gp_header *h,
                                  const char *group_id, int32_t generation,
                                  const char *member_id, const char *group_instance_id,
                                  const ksfi_gp_member_blob *assignments, size_t count);

/* Heartbeat v1-3; @p group_instance_id as for SyncGroup (v3 carries it). */
ksf_err ksfi_gp_encode_heartbeat(ksfi_gp_buf *out, const ksfi_gp_header *h,
                                 const char *group_id, int32_t generation,
                                 const char *member_id, const char *group_instance_id);

/* LeaveGroup v0-2 (we send v1: the member id only; a static member does not leave,
 * see membership.c). */
ksf_err ksfi_gp_encode_leave_group(ksfi_gp_buf *out, const ksfi_gp_header *h,
                                   const char *group_id, const char *member_id);

/* ---- responses ------------------------------------------------------------------- */

/*
 * Split a response frame payload (the bytes after the int32 size) into its correlation
 * id and body. Errors: KSF_EPROTO when shorter than 4 bytes.
 */
ksf_err ksfi_gp_decode_response_header(const uint8_t *p, size_t len,
                                       int32_t *correlation_id, const uint8_t **body,
                                       size_t *body_len, ksf_errinfo *ei);

typedef struct ksfi_gp_api_range {
    int16_t api_key, min_version, max_version;
} ksfi_gp_api_range;

typedef struct ksfi_gp_api_versions_resp {
    int16_t error_code;
    ksfi_gp_api_range *apis;
    size_t api_count;
    int32_t throttle_time_ms; /* v1+ */
} ksfi_gp_api_versions_resp;

/* ApiVersions v0-2 response. */
ksf_err ksfi_gp_decode_api_versions(const uint8_t *p, size_t len, int16_t version,
                                    ksfi_gp_api_versions_resp *out, ksf_errinfo *ei);
void ksfi_gp_api_versions_resp_free(ksfi_gp_api_versions_resp *r);

/*
 * The highest version of @p api_key in [our_min, our_max] that @p r also serves, or -1
 * when the ranges do not meet.
 */
int16_t ksfi_gp_pick_version(const ksfi_gp_api_versions_resp *r, int16_t api_key,
                             int16_t our_min, int16_t our_max);

typedef struct ksfi_gp_find_coordinator_resp {
    int32_t throttle_time_ms;
    int16_t error_code;
    char *error_message; /* NULL when null */
    int32_t node_id;
    char *host; /* NULL when null */
    int32_t port;
} ksfi_gp_find_coordinator_resp;

/* FindCoordinator v0-2 response. */
ksf_err ksfi_gp_decode_find_coordinator(const uint8_t *p, size_t len, int16_t version,
                                        ksfi_gp_find_coordinator_resp *out,
                                        ksf_errinfo *ei);
void ksfi_gp_find_coordinator_resp_free(ksfi_gp_find_coordinator_resp *r);

typedef struct ksfi_gp_join_member {
    char *member_id;
    char *group_instance_id; /* v5+, NULL when null */
    uint8_t *metadata;
    size_t metadata_len;
} ksfi_gp_join_member;

typedef struct ksfi_gp_join_group_resp {
    int32_t throttle_time_ms;
    int16_t error_code;
    int32_t generation_id;
    char *protocol_name;
    char *leader;
    char *member_id;
    ksfi_gp_join_member *members; /* non-empty only for the leader */
    size_t member_count;
} ksfi_gp_join_group_resp;

/* JoinGroup v2-5 response. Strings that were null decode as "" (never NULL). */
ksf_err ksfi_gp_decode_join_group(const uint8_t *p, size_t len, int16_t version,
                                  ksfi_gp_join_group_resp *out, ksf_errinfo *ei);
void ksfi_gp_join_group_resp_free(ksfi_gp_join_group_resp *r);

typedef struct ksfi_gp_sync_group_resp {
    int32_t throttle_time_ms;
    int16_t error_code;
    uint8_t *assignment; /* NULL when null or empty */
    size_t assignment_len;
} ksfi_gp_sync_group_resp;

/* SyncGroup v1-3 response. */
ksf_err ksfi_gp_decode_sync_group(const uint8_t *p, size_t len, int16_t version,
                                  ksfi_gp_sync_group_resp *out, ksf_errinfo *ei);
void ksfi_gp_sync_group_resp_free(ksfi_gp_sync_group_resp *r);

/* Heartbeat v1-3 and LeaveGroup v1-2 responses: throttle time and error code. */
typedef struct ksfi_gp_simple_resp {
    int32_t throttle_time_ms;
    int16_t error_code;
} ksfi_gp_simple_resp;

ksf_err ksfi_gp_decode_heartbeat(const uint8_t *p, size_t len, int16_t version,
                                 ksfi_gp_simple_resp *out, ksf_errinfo *ei);
ksf_err ksfi_gp_decode_leave_group(const uint8_t *p, size_t len, int16_t version,
                                   ksfi_gp_simple_resp *out, ksf_errinfo *ei);

#endif
