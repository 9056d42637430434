/* libFuzzer target: every group-protocol response decoder and the consumer-protocol
 * blobs (member metadata with its userData JSON, assignments). The first byte picks
 * the decoder and version; the rest is the input. */
#include "group/group_proto.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    int16_t version = (int16_t)(data[0] >> 4);
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] & 7) {
    case 0: {
        ksfi_gp_api_versions_resp r;
        if (ksfi_gp_decode_api_versions(p, n, version % 3, &r, NULL) == KSF_OK) {
            (void)ksfi_gp_pick_version(&r, KSFI_GP_API_JOIN_GROUP, 2, 5);
        }
        ksfi_gp_api_versions_resp_free(&r);
        break;
    }
    case 1: {
        ksfi_gp_find_coordinator_resp r;
        ksfi_gp_decode_find_coordinator(p, n, version % 3, &r, NULL);
        ksfi_gp_find_coordinator_resp_free(&r);
        break;
    }
    case 2: {
        ksfi_gp_join_group_resp r;
        ksfi_gp_decode_join_group(p, n, 2 + version % 4, &r, NULL);
        ksfi_gp_join_group_resp_free(&r);
        break;
    }
    case 3: {
        ksfi_gp_sync_group_resp r;
        if (ksfi_gp_decode_sync_group(p, n, 1 + version % 3, &r, NULL) == KSF_OK) {
            ksfi_gp_assignment a;
            ksfi_gp_decode_assignment(r.assignment, r.assignment_len, &a, NULL);
            ksfi_gp_assignment_free(&a);
        }
        ksfi_gp_sync_group_resp_free(&r);
        break;
    }
    case 4: {
        ksfi_gp_simple_resp r;
        ksfi_gp_decode_heartbeat(p, n, 1 + version % 3, &r, NULL);
        ksfi_gp_decode_leave_group(p, n, 1, &r, NULL);
        break;
    }
    case 5: {
        ksfi_gp_member_meta m;
        ksfi_gp_decode_member_meta(p, n, &m, NULL);
        ksfi_gp_member_meta_free(&m);
        break;
    }
    default: {
        ksfi_gp_assignment a;
        ksfi_gp_decode_assignment(p, n, &a, NULL);
        ksfi_gp_assignment_free(&a);
        break;
    }
    }
    return 0;
}
