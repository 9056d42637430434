/* Byte vectors: KAFKA-GROUP-PROTOCOL.md sections 3 and 7, NESTJS-KAFKA-WIRE.md 8.3. */
#include "base/alloc.h"
#include "group/group_proto.h"

#include "suite.h"

#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC "000e 6d6174682e73756d2e7265706c79"    /* "math.sum.reply" */
#define CLIENT "0008 6b73662d74657374"               /* "ksf-test" */
#define GROUP "0007 7265706c792d67"                  /* "reply-g" */
#define MEMBER_A "000e 3078376639316663303032613230" /* "0x7f91fc002a20" */
#define MEMBER_B "000e 3078376639316663303032623430" /* "0x7f91fc002b40" */
#define ASSIGNOR "001a 4e6573745265706c79506172746974696f6e41737369676e6572"
/* Section 3.1: v1, ["math.sum.reply"], {"previousAssignment":{}} (51 bytes). */
#define META_51                                                                          \
    "0001 00000001" TOPIC "00000019 7b2270726576696f757341737369676e6d656e74223a7b7d7d"
/* Section 3.1 / 8.3: {"math.sum.reply":[0,2]} (38 bytes). */
#define ASSIGN_38 "0001 00000001" TOPIC "00000002 00000000 00000002 00000000"

/* Hex (spaces and '|' ignored) to bytes; returns the length. */
static size_t
unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (*s) {
        if (!isxdigit((unsigned char)*s)) {
            s++;
            continue;
        }
        unsigned v;
        ck_assert(sscanf(s, "%2x", &v) == 1);
        ck_assert_uint_lt(n, cap);
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static void
assert_bytes(const ksfi_gp_buf *b, const char *hex)
{
    uint8_t want[1024];
    size_t n = unhex(hex, want, sizeof want);
    ck_assert(!b->oom);
    ck_assert_uint_eq(b->len, n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(b->data[i] == want[i], "byte %zu: got %02x want %02x", i,
                      b->data[i], want[i]);
    }
}

/* A response frame as hex (size included) -> body after the correlation id. */
static size_t
response_body(const char *hex, uint8_t *frame, size_t cap, const uint8_t **body,
              int32_t *corr)
{
    size_t n = unhex(hex, frame, cap), blen;
    ck_assert_uint_ge(n, 8);
    ck_assert_uint_eq((size_t)frame[3] | (size_t)frame[2] << 8, n - 4);
    ck_assert_int_eq(
        ksfi_gp_decode_response_header(frame + 4, n - 4, corr, body, &blen, NULL),
        KSF_OK);
    return blen;
}

KSFT_TEST(test_group_proto_request_vectors, 30)
{
    ksfi_gp_buf b = {0};
    ksfi_gp_header h = {0, 1, "groupprobe"};
    ck_assert_int_eq(ksfi_gp_encode_api_versions(&b, &h), KSF_OK);
    assert_bytes(&b, "00000014 0012 0000 00000001 000a 67726f757070726f6265");
    ksfi_gp_buf_free(&b);

    ksfi_gp_header h2 = {2, 4, "groupprobe"};
    ck_assert_int_eq(ksfi_gp_encode_find_coordinator(&b, &h2, "probe-g5"), KSF_OK);
    assert_bytes(&b, "0000001f 000a 0002 00000004 000a 67726f757070726f6265 "
                     "0008 70726f62652d6735 00");
    ksfi_gp_buf_free(&b);
}
END_TEST

KSFT_TEST(test_group_proto_group_requests, 30)
{
    uint8_t meta[64];
    size_t mlen = unhex(META_51, meta, sizeof meta);
    ksfi_gp_join_request jr = {
        "reply-g", 6000, 10000, "", "consumer", "NestReplyPartitionAssigner", meta, mlen};
    ksfi_gp_buf b = {0};
    ksfi_gp_header h = {5, 5, "ksf-test"};
    ck_assert_int_eq(ksfi_gp_encode_join_group(&b, &h, &jr), KSF_OK);
    assert_bytes(&b,
                 "00000088 000b 0005 00000005" CLIENT GROUP "00001770 00002710 0000 ffff "
                 "0008 636f6e73756d6572 00000001" ASSIGNOR "00000033" META_51);
    ksfi_gp_buf_free(&b);
    h.api_version = 2;
    ck_assert_int_eq(ksfi_gp_encode_join_group(&b, &h, &jr), KSF_OK);
    assert_bytes(&b, "00000086 000b 0002 00000005" CLIENT GROUP "00001770 00002710 0000 "
                     "0008 636f6e73756d6572 00000001" ASSIGNOR "00000033" META_51);
    ksfi_gp_buf_free(&b);

    ksfi_gp_header hh = {3, 7, "ksf-test"};
    ck_assert_int_eq(
        ksfi_gp_encode_heartbeat(&b, &hh, "reply-g", 2, "0x7f91fc002a20", NULL), KSF_OK);
    assert_bytes(&b,
                 "00000031 000c 0003 00000007" CLIENT GROUP "00000002" MEMBER_A "ffff");
    ksfi_gp_buf_free(&b);

    ksfi_gp_header hl = {1, 8, "ksf-test"};
    ck_assert_int_eq(ksfi_gp_encode_leave_group(&b, &hl, "reply-g", "0x7f91fc002a20"),
                     KSF_OK);
    assert_bytes(&b, "0000002b 000d 0001 00000008" CLIENT GROUP MEMBER_A);
    ksfi_gp_buf_free(&b);

    ksfi_gp_header hs = {3, 9, "ksf-test"};
    ck_assert_int_eq(
        ksfi_gp_encode_sync_group(&b, &hs, "reply-g", 2, "0x7f91fc002a20", NULL, NULL, 0),
        KSF_OK);
    assert_bytes(&b, "00000035 000e 0003 00000009" CLIENT GROUP "00000002" MEMBER_A
                     "ffff 00000000");
    ksfi_gp_buf_free(&b);

    uint8_t asg[64];
    ksfi_gp_member_blob blob = {"0x7f91fc002a20", asg, unhex(ASSIGN_38, asg, sizeof asg)};
    hs.api_version = 1;
    ck_assert_int_eq(ksfi_gp_encode_sync_group(&b, &hs, "reply-g", 2, "0x7f91fc002a20",
                                               NULL, &blob, 1),
                     KSF_OK);
    assert_bytes(&b, "0000006d 000e 0001 00000009" CLIENT GROUP "00000002" MEMBER_A
                     "00000001" MEMBER_A "00000026" ASSIGN_38);
    ksfi_gp_buf_free(&b);
}
END_TEST

#define INSTANCE "0006 6865726f2d31" /* "hero-1" */

/* KIP-345: a static member's JoinGroup v5, SyncGroup v3 and Heartbeat v3 carry its
 * group_instance_id where a dynamic member's carry null (ffff), and no version without
 * the field accepts one (it would silently make the member dynamic). */
KSFT_TEST(test_group_proto_static_member, 30)
{
    uint8_t meta[64];
    size_t mlen = unhex(META_51, meta, sizeof meta);
    ksfi_gp_join_request jr = {"reply-g", 6000,       10000,
                               "",        "consumer", "NestReplyPartitionAssigner",
                               meta,      mlen,       "hero-1"};
    ksfi_gp_buf b = {0};
    ksfi_gp_header h = {5, 5, "ksf-test"};
    ck_assert_int_eq(ksfi_gp_encode_join_group(&b, &h, &jr), KSF_OK);
    assert_bytes(&b, "0000008e 000b 0005 00000005" CLIENT GROUP
                     "00001770 00002710 0000" INSTANCE
                     "0008 636f6e73756d6572 00000001" ASSIGNOR "00000033" META_51);
    ksfi_gp_buf_free(&b);

    ksfi_gp_header hs = {3, 9, "ksf-test"};
    ck_assert_int_eq(ksfi_gp_encode_sync_group(&b, &hs, "reply-g", 2, "0x7f91fc002a20",
                                               "hero-1", NULL, 0),
                     KSF_OK);
    assert_bytes(&b, "0000003b 000e 0003 00000009" CLIENT GROUP
                     "00000002" MEMBER_A INSTANCE "00000000");
    ksfi_gp_buf_free(&b);

    ksfi_gp_header hh = {3, 7, "ksf-test"};
    ck_assert_int_eq(
        ksfi_gp_encode_heartbeat(&b, &hh, "reply-g", 2, "0x7f91fc002a20", "hero-1"),
        KSF_OK);
    assert_bytes(&b,
                 "00000037 000c 0003 00000007" CLIENT GROUP "00000002" MEMBER_A INSTANCE);
    ksfi_gp_buf_free(&b);

    h.api_version = 4;
    ck_assert_int_eq(ksfi_gp_encode_join_group(&b, &h, &jr), KSF_EINVAL);
    ck_assert_uint_eq(b.len, 0);
    hs.api_version = 2;
    ck_assert_int_eq(ksfi_gp_encode_sync_group(&b, &hs, "reply-g", 2, "0x7f91fc002a20",
                                               "hero-1", NULL, 0),
                     KSF_EINVAL);
    hh.api_version = 2;
    ck_assert_int_eq(
        ksfi_gp_encode_heartbeat(&b, &hh, "reply-g", 2, "0x7f91fc002a20", "hero-1"),
        KSF_EINVAL);
    ck_assert_uint_eq(b.len, 0);
    ksfi_gp_buf_free(&b);
}
END_TEST

/* Section 7: JoinGroup v5 leader response with two members (0xe0 = 224 bytes). */
#define JOIN_LEADER                                                                      \
    "000000e0 00000001 | 00000000 | 0000 | 00000002 |" ASSIGNOR "|" MEMBER_A             \
    "|" MEMBER_A "| 00000002 |" MEMBER_A "ffff 00000033" META_51 "|" MEMBER_B            \
    "ffff 00000033" META_51

KSFT_TEST(test_group_proto_response_vectors, 30)
{
    uint8_t f[512];
    const uint8_t *body;
    int32_t corr;
    size_t n = response_body("0000001f 00000004 00000000 0000 ffff 00000001 0009 "
                             "3132372e302e302e31 0000a76d",
                             f, sizeof f, &body, &corr);
    ksfi_gp_find_coordinator_resp fc;
    ck_assert_int_eq(corr, 4);
    ck_assert_int_eq(ksfi_gp_decode_find_coordinator(body, n, 2, &fc, NULL), KSF_OK);
    ck_assert_int_eq(fc.error_code, 0);
    ck_assert_ptr_null(fc.error_message);
    ck_assert_int_eq(fc.node_id, 1);
    ck_assert_str_eq(fc.host, "127.0.0.1");
    ck_assert_int_eq(fc.port, 0xa76d);
    ksfi_gp_find_coordinator_resp_free(&fc);

    /* The mock's error answer: message set, host null, node and port -1. */
    n = response_body(
        "00000037 00000005 00000000 000f 0021 "
        "42726f6b65723a20436f6f7264696e61746f72206e6f7420617661696c61626c65 "
        "ffffffff ffff ffffffff",
        f, sizeof f, &body, &corr);
    ck_assert_int_eq(ksfi_gp_decode_find_coordinator(body, n, 1, &fc, NULL), KSF_OK);
    ck_assert_int_eq(fc.error_code, 15);
    ck_assert_str_eq(fc.error_message, "Broker: Coordinator not available");
    ck_assert_ptr_null(fc.host);
    ck_assert_int_eq(fc.port, -1);
    ksfi_gp_find_coordinator_resp_free(&fc);

    ksfi_gp_join_group_resp jr;
    n = response_body(JOIN_LEADER, f, sizeof f, &body, &corr);
    ck_assert_int_eq(ksfi_gp_decode_join_group(body, n, 5, &jr, NULL), KSF_OK);
    ck_assert_int_eq(jr.generation_id, 2);
    ck_assert_str_eq(jr.protocol_name, "NestReplyPartitionAssigner");
    ck_assert_str_eq(jr.leader, "0x7f91fc002a20");
    ck_assert_str_eq(jr.member_id, jr.leader);
    ck_assert_uint_eq(jr.member_count, 2);
    ck_assert_str_eq(jr.members[1].member_id, "0x7f91fc002b40");
    ck_assert_ptr_null(jr.members[1].group_instance_id);
    ck_assert_uint_eq(jr.members[1].metadata_len, 51);
    ksfi_gp_join_group_resp_free(&jr);

    ksfi_gp_sync_group_resp sr;
    n = response_body("00000034 00000002 00000000 0000 00000026" ASSIGN_38, f, sizeof f,
                      &body, &corr);
    ck_assert_int_eq(ksfi_gp_decode_sync_group(body, n, 3, &sr, NULL), KSF_OK);
    ck_assert_int_eq(sr.error_code, 0);
    ck_assert_uint_eq(sr.assignment_len, 38);
    ksfi_gp_assignment a;
    ck_assert_int_eq(
        ksfi_gp_decode_assignment(sr.assignment, sr.assignment_len, &a, NULL), KSF_OK);
    ck_assert_uint_eq(a.count, 1);
    ck_assert_str_eq(a.topics[0].topic, "math.sum.reply");
    ck_assert_uint_eq(a.topics[0].count, 2);
    ck_assert_int_eq(a.topics[0].partitions[1], 2);
    ck_assert_int_eq(ksfi_gp_assignment_min(&a, "math.sum.reply"), 0);
    ck_assert_int_eq(ksfi_gp_assignment_min(&a, "other"), -1);
    ksfi_gp_assignment_free(&a);
    ksfi_gp_sync_group_resp_free(&sr);

    ksfi_gp_simple_resp lr;
    n = response_body("0000000a 00000009 00000000 0000", f, sizeof f, &body, &corr);
    ck_assert_int_eq(corr, 9);
    ck_assert_int_eq(ksfi_gp_decode_leave_group(body, n, 1, &lr, NULL), KSF_OK);
    ck_assert_int_eq(lr.error_code, 0);
}
END_TEST

KSFT_TEST(test_group_proto_api_versions, 30)
{
    /* The section 7 head (17 keys, Produce 0-7, Fetch 0-11), then the group APIs the
     * mock serves; the keys in between are illustrative. */
    uint8_t f[256];
    const uint8_t *body;
    int32_t corr;
    size_t n = response_body(
        "00000070 00000001 0000 00000011 | 0000 0000 0007 | 0001 0000 000b |"
        "0002 0000 0005 | 0003 0000 0002 | 0008 0000 0008 | 0009 0000 0007 |"
        "000a 0000 0002 | 000b 0000 0005 | 000c 0000 0003 | 000d 0000 0001 |"
        "000e 0000 0003 | 000f 0000 0004 | 0010 0000 0004 | 0012 0000 0002 |"
        "0013 0000 0003 | 0016 0000 0003 | 0024 0000 0001",
        f, sizeof f, &body, &corr);
    ksfi_gp_api_versions_resp r;
    ck_assert_int_eq(ksfi_gp_decode_api_versions(body, n, 0, &r, NULL), KSF_OK);
    ck_assert_uint_eq(r.api_count, 17);
    ck_assert_int_eq(ksfi_gp_pick_version(&r, KSFI_GP_API_JOIN_GROUP, 2, 5), 5);
    ck_assert_int_eq(ksfi_gp_pick_version(&r, KSFI_GP_API_FIND_COORDINATOR, 1, 2), 2);
    ck_assert_int_eq(ksfi_gp_pick_version(&r, KSFI_GP_API_SYNC_GROUP, 1, 3), 3);
    ck_assert_int_eq(ksfi_gp_pick_version(&r, KSFI_GP_API_LEAVE_GROUP, 1, 1), 1);
    ck_assert_int_eq(ksfi_gp_pick_version(&r, KSFI_GP_API_JOIN_GROUP, 6, 9), -1);
    ck_assert_int_eq(ksfi_gp_pick_version(&r, 68, 0, 1), -1); /* not served */
    ksfi_gp_api_versions_resp_free(&r);
    /* v1 needs throttle_time_ms after the array: without it the answer is truncated. */
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksfi_gp_decode_api_versions(body, n, 1, &r, &ei), KSF_EPROTO);
    ck_assert_ptr_nonnull(strstr(ei.text, "throttle_time_ms"));
}
END_TEST

/* Hand-built JoinGroup v5 follower-style answers with an error code. */
static void
join_error(const char *code_hex, const char *member_hex, int want_code,
           const char *want_member)
{
    char hex[512];
    uint8_t f[256];
    const uint8_t *body;
    int32_t corr;
    size_t id_len = strlen(member_hex) > 5 ? (strlen(member_hex) - 5) / 2 : 0;
    snprintf(hex, sizeof hex, "%08x 00000003 00000000 %s ffffffff ffff ffff %s 00000000",
             (unsigned)(4 + 4 + 2 + 4 + 2 + 2 + 2 + id_len + 4), code_hex, member_hex);
    size_t n = response_body(hex, f, sizeof f, &body, &corr);
    ksfi_gp_join_group_resp jr;
    ck_assert_int_eq(ksfi_gp_decode_join_group(body, n, 5, &jr, NULL), KSF_OK);
    ck_assert_int_eq(jr.error_code, want_code);
    ck_assert_int_eq(jr.generation_id, -1);
    ck_assert_str_eq(jr.protocol_name, ""); /* null decodes as "" */
    ck_assert_str_eq(jr.member_id, want_member);
    ck_assert_uint_eq(jr.member_count, 0);
    ksfi_gp_join_group_resp_free(&jr);
}

KSFT_TEST(test_group_proto_error_responses, 30)
{
    join_error("004f", "0018 6b73662d746573742d31323334353637382d616263646566",
               KSFI_GP_ERR_MEMBER_ID_REQUIRED, "ksf-test-12345678-abcdef");
    join_error("0017", "0000", KSFI_GP_ERR_INCONSISTENT_GROUP_PROTOCOL, "");
    join_error("0019", "0000", KSFI_GP_ERR_UNKNOWN_MEMBER_ID, "");
    ck_assert_str_eq(ksfi_gp_error_name(79), "MEMBER_ID_REQUIRED");
    ck_assert_str_eq(ksfi_gp_error_name(23), "INCONSISTENT_GROUP_PROTOCOL");
    ck_assert_str_eq(ksfi_gp_error_name(9999), "UNKNOWN");

    uint8_t f[64];
    const uint8_t *body;
    int32_t corr;
    ksfi_gp_sync_group_resp sr;
    /* The mock's SyncGroup error: assignment null. */
    size_t n = response_body("0000000e 00000002 00000000 001b ffffffff", f, sizeof f,
                             &body, &corr);
    ck_assert_int_eq(ksfi_gp_decode_sync_group(body, n, 3, &sr, NULL), KSF_OK);
    ck_assert_int_eq(sr.error_code, KSFI_GP_ERR_REBALANCE_IN_PROGRESS);
    ck_assert_ptr_null(sr.assignment);
    ksfi_gp_sync_group_resp_free(&sr);
    ksfi_gp_simple_resp hr;
    n = response_body("0000000a 00000003 00000000 001b", f, sizeof f, &body, &corr);
    ck_assert_int_eq(ksfi_gp_decode_heartbeat(body, n, 3, &hr, NULL), KSF_OK);
    ck_assert_int_eq(hr.error_code, 27);
    n = response_body("0000000a 00000003 00000000 0019", f, sizeof f, &body, &corr);
    ck_assert_int_eq(ksfi_gp_decode_heartbeat(body, n, 1, &hr, NULL), KSF_OK);
    ck_assert_int_eq(hr.error_code, 25);
}
END_TEST

KSFT_TEST(test_group_proto_member_metadata, 30)
{
    ksfi_gp_buf b = {0};
    const char *topics[] = {"math.sum.reply"};
    /* NestJS's bytes exactly when there is no launch time. */
    ck_assert_int_eq(ksfi_gp_encode_member_meta(&b, topics, 1, NULL, 0, 0, NULL), KSF_OK);
    assert_bytes(&b, META_51);
    ksfi_gp_member_meta m;
    ck_assert_int_eq(ksfi_gp_decode_member_meta(b.data, b.len, &m, NULL), KSF_OK);
    ck_assert_uint_eq(m.topic_count, 1);
    ck_assert_str_eq(m.topics[0], "math.sum.reply");
    ck_assert_uint_eq(m.previous_count, 0);
    ck_assert(!m.has_launch_time);
    ksfi_gp_member_meta_free(&m);
    ksfi_gp_buf_free(&b);

    /* Section 8.3 with a previous assignment (userData 0x2b = 43 bytes). */
    ksfi_gp_prev prev = {(char *)"math.sum.reply", 0};
    ck_assert_int_eq(ksfi_gp_encode_member_meta(&b, topics, 1, &prev, 1, 0, NULL),
                     KSF_OK);
    assert_bytes(&b,
                 "0001 00000001" TOPIC "0000002b 7b2270726576696f757341737369676e6d656e74"
                 "223a7b226d6174682e73756d2e7265706c79223a307d7d");
    ksfi_gp_buf_free(&b);

    /* Ours: launchTime travels as an extra key, a decimal string of nanoseconds. */
    prev.partition = 3;
    ck_assert_int_eq(
        ksfi_gp_encode_member_meta(&b, topics, 1, &prev, 1, 1732612345123456789LL, NULL),
        KSF_OK);
    const char *json = "{\"previousAssignment\":{\"math.sum.reply\":3},"
                       "\"launchTime\":\"1732612345123456789\"}";
    ck_assert_uint_eq(b.len, 2 + 4 + 16 + 4 + strlen(json));
    ck_assert(memcmp(b.data + 26, json, strlen(json)) == 0);
    ck_assert_int_eq(ksfi_gp_decode_member_meta(b.data, b.len, &m, NULL), KSF_OK);
    ck_assert_uint_eq(m.previous_count, 1);
    ck_assert_str_eq(m.previous[0].topic, "math.sum.reply");
    ck_assert_int_eq(m.previous[0].partition, 3);
    ck_assert(m.has_launch_time);
    ck_assert(m.launch_time_ns == 1732612345123456789LL);
    ksfi_gp_member_meta_free(&m);
    ksfi_gp_buf_free(&b);
}
END_TEST

/* Metadata whose userData is @p ud: decodes, with no previous and no launch time. */
static void
odd_user_data(const char *ud)
{
    uint8_t blob[256];
    size_t n = unhex("0001 00000001" TOPIC, blob, sizeof blob);
    size_t len = strlen(ud);
    blob[n++] = 0;
    blob[n++] = 0;
    blob[n++] = (uint8_t)(len >> 8);
    blob[n++] = (uint8_t)len;
    memcpy(blob + n, ud, len);
    ksfi_gp_member_meta m;
    ck_assert_int_eq(ksfi_gp_decode_member_meta(blob, n + len, &m, NULL), KSF_OK);
    ck_assert_msg(m.previous_count == 0 && !m.has_launch_time, "userData %s", ud);
    ck_assert_uint_eq(m.topic_count, 1);
    ksfi_gp_member_meta_free(&m);
}

KSFT_TEST(test_group_proto_user_data_tolerance, 30)
{
    static const char *odd[] = {
        "",
        "not json",
        "[]",
        "{}",
        "null",
        "{\"previousAssignment\":5}",
        "{\"previousAssignment\":{\"t\":\"1\"}}",
        "{\"previousAssignment\":{\"t\":-1}}",
        "{\"previousAssignment\":{\"t\":1.5}}",
        "{\"launchTime\":\"abc\"}",
        "{\"launchTime\":\"-5\"}",
        "{\"launchTime\":\"99999999999999999999\"}",
        "{\"launchTime\":\"\"}",
        "{\"launchTime\":[1]}",
        "{\"previousAssignment\":{",
    };
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        odd_user_data(odd[i]);
    }
    /* Java-style v1 with owned_partitions after userData: the tail is ignored. */
    uint8_t blob[128];
    size_t n = unhex(META_51 "00000001" TOPIC "00000001 00000002", blob, sizeof blob);
    ksfi_gp_member_meta m;
    ck_assert_int_eq(ksfi_gp_decode_member_meta(blob, n, &m, NULL), KSF_OK);
    ck_assert_uint_eq(m.topic_count, 1);
    ksfi_gp_member_meta_free(&m);
    /* A NestJS member before its first assignment. */
    odd_user_data("{\"previousAssignment\":{}}");
}
END_TEST

KSFT_TEST(test_group_proto_assignment, 30)
{
    int32_t parts[] = {0, 2};
    ksfi_gp_topic_parts tp = {(char *)"math.sum.reply", parts, 2};
    ksfi_gp_assignment a = {&tp, 1}, d;
    ksfi_gp_buf b = {0};
    ck_assert_int_eq(ksfi_gp_encode_assignment(&b, &a, NULL), KSF_OK);
    assert_bytes(&b, ASSIGN_38);
    ksfi_gp_buf_free(&b);
    /* kafkajs: fewer than 2 bytes is no assignment. */
    ck_assert_int_eq(ksfi_gp_decode_assignment(NULL, 0, &d, NULL), KSF_OK);
    ck_assert_uint_eq(d.count, 0);
    ck_assert_int_eq(ksfi_gp_decode_assignment((const uint8_t *)"\x00", 1, &d, NULL),
                     KSF_OK);
    ck_assert_uint_eq(d.count, 0);
    /* A negative partition is refused, naming the field. */
    uint8_t bad[64];
    size_t n = unhex("0001 00000001" TOPIC "00000001 ffffffff 00000000", bad, sizeof bad);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksfi_gp_decode_assignment(bad, n, &d, &ei), KSF_EPROTO);
    ck_assert_ptr_nonnull(strstr(ei.text, "partitions"));
}
END_TEST

/* Decode with each decoder's own out type, freeing on success. */
static ksf_err
decode_any(int which, const uint8_t *p, size_t len, ksf_errinfo *ei)
{
    ksf_err e;
    switch (which) {
    case 0: {
        ksfi_gp_join_group_resp r;
        e = ksfi_gp_decode_join_group(p, len, 5, &r, ei);
        ksfi_gp_join_group_resp_free(&r);
        return e;
    }
    case 1: {
        ksfi_gp_find_coordinator_resp r;
        e = ksfi_gp_decode_find_coordinator(p, len, 2, &r, ei);
        ksfi_gp_find_coordinator_resp_free(&r);
        return e;
    }
    case 2: {
        ksfi_gp_sync_group_resp r;
        e = ksfi_gp_decode_sync_group(p, len, 3, &r, ei);
        ksfi_gp_sync_group_resp_free(&r);
        return e;
    }
    case 3: {
        ksfi_gp_member_meta r;
        e = ksfi_gp_decode_member_meta(p, len, &r, ei);
        ksfi_gp_member_meta_free(&r);
        return e;
    }
    default: {
        ksfi_gp_assignment r;
        e = ksfi_gp_decode_assignment(p, len, &r, ei);
        ksfi_gp_assignment_free(&r);
        return e;
    }
    }
}

KSFT_TEST(test_group_proto_truncated, 30)
{
    static const char *full[] = {
        JOIN_LEADER,
        "0000001f 00000004 00000000 0000 ffff 00000001 0009 3132372e302e302e31 0000a76d",
        "00000034 00000002 00000000 0000 00000026" ASSIGN_38,
    };
    uint8_t f[512], blob[128];
    const uint8_t *body;
    int32_t corr;
    for (int w = 0; w < 3; w++) {
        size_t n = response_body(full[w], f, sizeof f, &body, &corr);
        ck_assert_int_eq(decode_any(w, body, n, NULL), KSF_OK);
        for (size_t cut = 0; cut < n; cut++) {
            ksf_errinfo ei = {0};
            ck_assert_int_eq(decode_any(w, body, cut, &ei), KSF_EPROTO);
            ck_assert_msg(strstr(ei.text, "field ") && (strstr(ei.text, "truncated") ||
                                                        strstr(ei.text, "bytes remain")),
                          "cut %zu: %s", cut, ei.text);
        }
    }
    size_t n = unhex(META_51, blob, sizeof blob);
    for (size_t cut = 0; cut < n; cut++) {
        ck_assert_int_eq(decode_any(3, blob, cut, NULL), KSF_EPROTO);
    }
    n = unhex(ASSIGN_38, blob, sizeof blob);
    for (size_t cut = 2; cut < n - 4; cut++) { /* the trailing userData is not read */
        ck_assert_int_eq(decode_any(4, blob, cut, NULL), KSF_EPROTO);
    }
}
END_TEST

KSFT_TEST(test_group_proto_garbage, 30)
{
    /* A huge member count is refused before anything is allocated for it. */
    uint8_t f[128];
    const uint8_t *body;
    int32_t corr;
    size_t n =
        response_body("00000018 00000001 00000000 0000 00000002 0000 0000 0000 7fffffff",
                      f, sizeof f, &body, &corr);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(decode_any(0, body, n, &ei), KSF_EPROTO);
    ck_assert_ptr_nonnull(strstr(ei.text, "members"));
    /* A string length below -1, a NUL inside a member id. */
    n = response_body("00000010 00000001 00000000 0000 00000002 fffe", f, sizeof f, &body,
                      &corr);
    ck_assert_int_eq(decode_any(0, body, n, &ei), KSF_EPROTO);
    ck_assert_ptr_nonnull(strstr(ei.text, "protocol_name has a negative length"));
    n = response_body("00000016 00000001 00000000 0000 00000002 0000 0000 0002 6100", f,
                      sizeof f, &body, &corr);
    ck_assert_int_eq(decode_any(0, body, n, &ei), KSF_EPROTO);
    ck_assert_ptr_nonnull(strstr(ei.text, "NUL"));
    /* Pseudo-random bytes never crash any decoder (valgrind/ASan watch the reads). */
    uint8_t junk[97];
    unsigned seed = 12345;
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < sizeof junk; i++) {
            seed = seed * 1103515245u + 12345u;
            junk[i] = (uint8_t)(seed >> 16);
        }
        if (round % 2) {
            junk[4] = junk[5] = 0; /* small counts reach the deeper fields */
        }
        for (int w = 0; w < 5; w++) {
            ksf_err e = decode_any(w, junk, (size_t)round % sizeof junk, NULL);
            ck_assert(e == KSF_OK || e == KSF_EPROTO);
        }
    }
}
END_TEST

KSFT_TEST(test_group_proto_alloc_failures, 30)
{
    uint8_t f[512];
    const uint8_t *body;
    int32_t corr;
    size_t n = response_body(JOIN_LEADER, f, sizeof f, &body, &corr);
    int ok = 0;
    for (unsigned long nth = 1; nth < 40; nth++) {
        ksfi_alloc_fail_after(nth, 1);
        ksf_err e = decode_any(0, body, n, NULL);
        ksf_err e2 = decode_any(3, body + 96, 51, NULL); /* member 0's metadata */
        ksfi_gp_buf b = {0};
        const char *topics[] = {"t"};
        ksfi_gp_prev prev = {(char *)"t", 1};
        ksf_err e3 = ksfi_gp_encode_member_meta(&b, topics, 1, &prev, 1, 5, NULL);
        ksfi_alloc_fail_after(0, 0);
        ksfi_gp_buf_free(&b);
        ck_assert(e == KSF_OK || e == KSF_ENOMEM);
        ck_assert(e2 == KSF_OK || e2 == KSF_ENOMEM);
        ck_assert(e3 == KSF_OK || e3 == KSF_ENOMEM);
        ok += e == KSF_OK && e2 == KSF_OK && e3 == KSF_OK;
    }
    ck_assert_int_gt(ok, 0); /* the sweep went past the last allocation */
}
END_TEST

KSFT_MAIN("group_proto")
