#include "group/assignor.h"

#include "base/alloc.h"
#include "base/errinfo.h"

#include <stdlib.h>
#include <string.h>

/* Partition counts beyond this are refused rather than allocated for. */
#define MAX_PARTITIONS (1 << 20)

/* Working state for one ksfi_assign() call. */
typedef struct plan {
    const ksfi_assignor_member *members;
    size_t n;
    const ksfi_assignor_topic *topics;
    size_t nt;
    size_t *order;   /* member indexes, launch order */
    int32_t **owner; /* owner[t][p]: member index or -1 */
    int32_t *lowest; /* lowest[t * n + m]: member m's lowest partition of t, or -1 */
    size_t *subs;    /* scratch: the subscribers of one topic, launch order */
} plan;

/* Launch order: launch time, then member id; members without a launch time last. */
static int
member_cmp(const ksfi_assignor_member *a, const ksfi_assignor_member *b)
{
    bool ha = a->meta && a->meta->has_launch_time;
    bool hb = b->meta && b->meta->has_launch_time;
    if (ha != hb) {
        return ha ? -1 : 1;
    }
    if (ha && a->meta->launch_time_ns != b->meta->launch_time_ns) {
        return a->meta->launch_time_ns < b->meta->launch_time_ns ? -1 : 1;
    }
    return strcmp(a->member_id, b->member_id);
}

/* Insertion sort: groups are small and this keeps the function reentrant. */
static void
sort_members(plan *pl)
{
    for (size_t i = 0; i < pl->n; i++) {
        pl->order[i] = i;
    }
    for (size_t i = 1; i < pl->n; i++) {
        size_t cur = pl->order[i], j = i;
        while (j > 0 &&
               member_cmp(&pl->members[pl->order[j - 1]], &pl->members[cur]) > 0) {
            pl->order[j] = pl->order[j - 1];
            j--;
        }
        pl->order[j] = cur;
    }
}

static bool
subscribes(const ksfi_assignor_member *m, const char *topic)
{
    for (size_t i = 0; m->meta && i < m->meta->topic_count; i++) {
        if (strcmp(m->meta->topics[i], topic) == 0) {
            return true;
        }
    }
    return false;
}

static int32_t
previous_of(const ksfi_assignor_member *m, const char *topic)
{
    for (size_t i = 0; m->meta && i < m->meta->previous_count; i++) {
        if (strcmp(m->meta->previous[i].topic, topic) == 0) {
            return m->meta->previous[i].partition;
        }
    }
    return -1;
}

/* The subscribers of topic @p t in launch order, into pl->subs; returns the count. */
static size_t
collect_subs(plan *pl, size_t t)
{
    size_t k = 0;
    for (size_t i = 0; i < pl->n; i++) {
        if (subscribes(&pl->members[pl->order[i]], pl->topics[t].name)) {
            pl->subs[k++] = pl->order[i];
        }
    }
    return k;
}

static void
give(plan *pl, size_t t, int32_t p, size_t m)
{
    pl->owner[t][p] = (int32_t)m;
    int32_t *low = &pl->lowest[t * pl->n + m];
    if (*low < 0 || p < *low) {
        *low = p;
    }
}

/* Passes 1 and 2 for topic @p t: keep previous partitions, then fill the empty. */
static void
keep_and_fill(plan *pl, size_t t)
{
    size_t ns = collect_subs(pl, t);
    int32_t count = pl->topics[t].partitions;
    for (size_t i = 0; i < ns; i++) {
        int32_t prev = previous_of(&pl->members[pl->subs[i]], pl->topics[t].name);
        /* Earlier launch wins a double claim: it was checked first. */
        if (prev >= 0 && prev < count && pl->owner[t][prev] < 0) {
            give(pl, t, prev, pl->subs[i]);
        }
    }
    int32_t next_free = 0;
    for (size_t i = 0; i < ns; i++) {
        if (pl->lowest[t * pl->n + pl->subs[i]] >= 0) {
            continue;
        }
        while (next_free < count && pl->owner[t][next_free] >= 0) {
            next_free++;
        }
        if (next_free == count) {
            break; /* the surplus members get nothing */
        }
        give(pl, t, next_free, pl->subs[i]);
    }
}

/* Pass 3: deal every still-free partition, one round-robin index across all topics. */
static void
deal_rest(plan *pl)
{
    size_t i = 0;
    for (size_t t = 0; t < pl->nt; t++) {
        size_t ns = collect_subs(pl, t);
        for (int32_t p = 0; ns && p < pl->topics[t].partitions; p++) {
            if (pl->owner[t][p] >= 0) {
                continue;
            }
            size_t start = i++ % ns, pick = pl->subs[start];
            for (size_t k = 0; k < ns; k++) {
                size_t m = pl->subs[(start + k) % ns];
                int32_t low = pl->lowest[t * pl->n + m];
                if (low >= 0 && low < p) {
                    pick = m; /* taking p leaves m's lowest partition where it is */
                    break;
                }
            }
            give(pl, t, p, pick);
        }
    }
}

/* Member @p m's assignment from the owner tables. */
static ksf_err
build_one(const plan *pl, size_t m, ksfi_gp_assignment *a)
{
    a->topics = ksfi_calloc(pl->nt ? pl->nt : 1, sizeof *a->topics);
    if (!a->topics) {
        return KSF_ENOMEM;
    }
    for (size_t t = 0; t < pl->nt; t++) {
        if (!subscribes(&pl->members[m], pl->topics[t].name)) {
            continue;
        }
        ksfi_gp_topic_parts *tp = &a->topics[a->count++];
        int32_t count = pl->topics[t].partitions;
        tp->topic = ksfi_strdup(pl->topics[t].name);
        tp->partitions = ksfi_calloc(count ? (size_t)count : 1, sizeof(int32_t));
        if (!tp->topic || !tp->partitions) {
            return KSF_ENOMEM;
        }
        for (int32_t p = 0; p < count; p++) {
            if (pl->owner[t][p] == (int32_t)m) {
                tp->partitions[tp->count++] = p;
            }
        }
    }
    return KSF_OK;
}

static ksf_err
validate(const plan *pl, ksf_errinfo *ei)
{
    for (size_t t = 0; t < pl->nt; t++) {
        if (pl->topics[t].partitions < 0 || pl->topics[t].partitions > MAX_PARTITIONS) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "assignor: topic \"%s\" has %d partitions; expected 0..%d",
                             pl->topics[t].name, (int)pl->topics[t].partitions,
                             MAX_PARTITIONS);
        }
    }
    for (size_t i = 1; i < pl->n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(pl->members[j].member_id, pl->members[i].member_id) == 0) {
                return ksfi_fail(ei, KSF_EINVAL,
                                 "assignor: member id \"%s\" appears twice in the group",
                                 pl->members[i].member_id);
            }
        }
    }
    return KSF_OK;
}

static void
plan_free(plan *pl)
{
    for (size_t t = 0; pl->owner && t < pl->nt; t++) {
        ksfi_free(pl->owner[t]);
    }
    ksfi_free(pl->owner);
    ksfi_free(pl->order);
    ksfi_free(pl->lowest);
    ksfi_free(pl->subs);
}

static ksf_err
plan_init(plan *pl)
{
    size_t n = pl->n ? pl->n : 1, nt = pl->nt ? pl->nt : 1;
    pl->order = ksfi_calloc(n, sizeof *pl->order);
    pl->subs = ksfi_calloc(n, sizeof *pl->subs);
    pl->owner = ksfi_calloc(nt, sizeof *pl->owner);
    pl->lowest = n > SIZE_MAX / nt ? NULL : ksfi_malloc(n * nt * sizeof(int32_t));
    if (!pl->order || !pl->subs || !pl->owner || !pl->lowest) {
        return KSF_ENOMEM;
    }
    memset(pl->lowest, 0xff, n * nt * sizeof(int32_t)); /* all -1 */
    for (size_t t = 0; t < pl->nt; t++) {
        size_t count =
            pl->topics[t].partitions > 0 ? (size_t)pl->topics[t].partitions : 1;
        if (!(pl->owner[t] = ksfi_malloc(count * sizeof(int32_t)))) {
            return KSF_ENOMEM;
        }
        memset(pl->owner[t], 0xff, count * sizeof(int32_t));
    }
    return KSF_OK;
}

ksf_err
ksfi_assign(const ksfi_assignor_member *members, size_t member_count,
            const ksfi_assignor_topic *topics, size_t topic_count,
            ksfi_gp_assignment *out, ksf_errinfo *ei)
{
    plan pl = {members, member_count, topics, topic_count, NULL, NULL, NULL, NULL};
    ksf_err err;
    memset(out, 0, member_count * sizeof *out);
    if ((err = plan_init(&pl)) != KSF_OK) {
        goto fail;
    }
    sort_members(&pl);
    if ((err = validate(&pl, ei)) != KSF_OK) {
        goto fail;
    }
    for (size_t t = 0; t < topic_count; t++) {
        keep_and_fill(&pl, t);
    }
    deal_rest(&pl);
    for (size_t m = 0; m < member_count; m++) {
        if ((err = build_one(&pl, m, &out[m])) != KSF_OK) {
            goto fail;
        }
    }
    plan_free(&pl);
    return KSF_OK;
fail:
    for (size_t m = 0; m < member_count; m++) {
        ksfi_gp_assignment_free(&out[m]);
    }
    plan_free(&pl);
    if (err == KSF_ENOMEM) {
        ksfi_fail(ei, KSF_ENOMEM, "out of memory assigning reply partitions");
    }
    return err;
}
