/*
 * The leader's part of a SyncGroup round: decode every member's metadata and run the
 * assignor (assignor.c, ordered by launch time) over the union of their topics.
 */
#include "base/alloc.h"
#include "group/membership_internal.h"

#include <inttypes.h>
#include <string.h>
#include <sys/types.h>

/* ---- the leader's part: run the assignor over every member ------------------------ */

void
ksfi_membership_plan_free(ksfi_membership_plan *lp)
{
    for (size_t i = 0; lp->bufs && i < lp->n; i++) {
        ksfi_gp_buf_free(&lp->bufs[i]);
    }
    ksfi_free(lp->bufs);
    ksfi_free(lp->blobs);
}

static void
log_plan(ksfi_membership *m, const ksfi_assignor_member *am, const ksfi_gp_assignment *a,
         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char line[256];
        size_t off = 0;
        bool full = false; /* the line is cut short, never overrun */
        line[0] = '\0';
        for (size_t t = 0; t < a[i].count && !full; t++) {
            for (size_t j = 0; j < a[i].topics[t].count && !full; j++) {
                int w = snprintf(line + off, sizeof line - off, " %s[%d]",
                                 a[i].topics[t].topic, (int)a[i].topics[t].partitions[j]);
                full = w < 0 || (size_t)w >= sizeof line - off;
                off = full ? sizeof line - 1 : off + (size_t)w;
            }
        }
        ksfi_log(&m->log, KSF_LOG_INFO, COMPONENT,
                 "group %s: assign %s (launch %" PRId64 "):%s", m->group_id,
                 am[i].member_id,
                 am[i].meta->has_launch_time ? am[i].meta->launch_time_ns : 0,
                 off ? line : " nothing");
    }
}

/* Topic @p name's index in @p topics[0..n), or -1. */
static ssize_t
topic_index(const ksfi_assignor_topic *topics, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(topics[i].name, name)) {
            return (ssize_t)i;
        }
    }
    return -1;
}

/* The topics to deal out: ours and every member's (kafkajs deals only the leader's, so
 * a member whose reply topic the leader does not use would get nothing). Partition
 * counts come from the owner when it can tell; a topic whose count nobody knows is
 * left out. *out is ksfi_malloc'd; names borrow from m and @p metas. */
static ksf_err
union_topics(ksfi_membership *m, const ksfi_gp_member_meta *metas, size_t members,
             ksfi_assignor_topic **out, size_t *count)
{
    size_t cap = m->topic_count;
    for (size_t i = 0; i < members; i++) {
        cap += metas[i].topic_count;
    }
    ksfi_assignor_topic *topics = ksfi_calloc(cap ? cap : 1, sizeof *topics);
    if (!topics) {
        return KSF_ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < m->topic_count; i++) {
        topics[n++] = m->topics[i];
    }
    for (size_t i = 0; i < members; i++) {
        for (size_t t = 0; t < metas[i].topic_count; t++) {
            if (topic_index(topics, n, metas[i].topics[t]) < 0) {
                topics[n++] = (ksfi_assignor_topic){metas[i].topics[t], -1};
            }
        }
    }
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = m->cb.partition_count
                        ? m->cb.partition_count(m->cb.user, topics[i].name)
                        : -1;
        topics[i].partitions = c >= 0 ? c : topics[i].partitions;
        if (topics[i].partitions < 0) {
            ksfi_log(
                &m->log, KSF_LOG_WARNING, COMPONENT,
                "group %s: partition count of %s unknown; its members get none of it "
                "this round",
                m->group_id, topics[i].name);
            continue;
        }
        topics[kept++] = topics[i];
    }
    *out = topics;
    *count = kept;
    return KSF_OK;
}

/* Decode every member's metadata and run the assignor over the union of topics. */
static ksf_err
assign_members(ksfi_membership *m, const ksfi_gp_join_group_resp *jr,
               ksfi_gp_member_meta *metas, ksfi_assignor_member *am,
               ksfi_gp_assignment *out)
{
    ksf_errinfo ei = {0};
    for (size_t i = 0; i < jr->member_count; i++) {
        const ksfi_gp_join_member *jm = &jr->members[i];
        if (ksfi_gp_decode_member_meta(jm->metadata, jm->metadata_len, &metas[i], &ei) !=
            KSF_OK) {
            ksfi_log(&m->log, KSF_LOG_WARNING, COMPONENT,
                     "group %s: member %s sent unreadable metadata (%s); it gets nothing",
                     m->group_id, jm->member_id, ei.text);
        }
        am[i].member_id = jm->member_id;
        am[i].meta = &metas[i];
    }
    ksfi_assignor_topic *topics;
    size_t ntopics;
    if (union_topics(m, metas, jr->member_count, &topics, &ntopics) != KSF_OK) {
        return KSF_ENOMEM;
    }
    ksf_err err = ksfi_assign(am, jr->member_count, topics, ntopics, out, &ei);
    if (err != KSF_OK) {
        ksfi_log(&m->log, KSF_LOG_ERROR, COMPONENT, "group %s: %s", m->group_id, ei.text);
    } else {
        log_plan(m, am, out, jr->member_count);
    }
    ksfi_free(topics);
    return err;
}

ksf_err
ksfi_membership_plan_build(ksfi_membership *m, const ksfi_gp_join_group_resp *jr,
                           ksfi_membership_plan *lp)
{
    size_t n = jr->member_count ? jr->member_count : 1;
    ksfi_gp_member_meta *metas = ksfi_calloc(n, sizeof *metas);
    ksfi_assignor_member *am = ksfi_calloc(n, sizeof *am);
    ksfi_gp_assignment *out = ksfi_calloc(n, sizeof *out);
    ksf_err err = KSF_ENOMEM;
    lp->n = jr->member_count;
    lp->bufs = ksfi_calloc(n, sizeof *lp->bufs);
    lp->blobs = ksfi_calloc(n, sizeof *lp->blobs);
    if (!metas || !am || !out || !lp->bufs || !lp->blobs ||
        (err = assign_members(m, jr, metas, am, out)) != KSF_OK) {
        goto done;
    }
    for (size_t i = 0; i < lp->n && err == KSF_OK; i++) {
        err = ksfi_gp_encode_assignment(&lp->bufs[i], &out[i], NULL);
        lp->blobs[i].member_id = jr->members[i].member_id;
        lp->blobs[i].data = lp->bufs[i].data;
        lp->blobs[i].len = lp->bufs[i].len;
    }
done:
    for (size_t i = 0; i < jr->member_count; i++) {
        if (metas) {
            ksfi_gp_member_meta_free(&metas[i]);
        }
        if (out) {
            ksfi_gp_assignment_free(&out[i]);
        }
    }
    ksfi_free(metas);
    ksfi_free(am);
    ksfi_free(out);
    return err;
}
