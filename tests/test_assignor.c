/* The reply-partition assigner: worked examples (NESTJS-KAFKA-WIRE.md 8.2) and
 * randomized properties. */
#include "base/alloc.h"
#include "group/assignor.h"

#include "suite.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXM 10

/* One member of a table case: id, launch time (0 = none), previous t and u (-1 none),
 * subscribes to u too. */
typedef struct mspec {
    const char *id;
    int64_t launch;
    int32_t prev_t, prev_u;
    bool sub_u;
} mspec;

typedef struct acase {
    const char *name;
    int32_t parts_t, parts_u; /* parts_u < 0: only topic t */
    mspec m[MAXM];
    const char *want[MAXM]; /* "t[0,2] u[0]" per member */
} acase;

/* "t[0,2] u[]" for one assignment. */
static void
render(const ksfi_gp_assignment *a, char *buf, size_t size)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < a->count; i++) {
        off += (size_t)snprintf(buf + off, size - off, "%s%s[", i ? " " : "",
                                a->topics[i].topic);
        for (size_t j = 0; j < a->topics[i].count; j++) {
            off += (size_t)snprintf(buf + off, size - off, "%s%d", j ? "," : "",
                                    (int)a->topics[i].partitions[j]);
        }
        off += (size_t)snprintf(buf + off, size - off, "]");
    }
}

static void
run_case(const acase *c)
{
    char *ta[] = {(char *)"t", (char *)"u"};
    ksfi_gp_member_meta meta[MAXM];
    ksfi_gp_prev prev[MAXM][2];
    ksfi_assignor_member am[MAXM];
    ksfi_gp_assignment out[MAXM];
    ksfi_assignor_topic topics[2] = {{"t", c->parts_t}, {"u", c->parts_u}};
    size_t n = 0;
    for (; n < MAXM && c->m[n].id; n++) {
        const mspec *s = &c->m[n];
        size_t np = 0;
        memset(&meta[n], 0, sizeof meta[n]);
        meta[n].topics = ta;
        meta[n].topic_count = s->sub_u ? 2 : 1;
        if (s->prev_t >= 0) {
            prev[n][np++] = (ksfi_gp_prev){(char *)"t", s->prev_t};
        }
        if (s->prev_u >= 0) {
            prev[n][np++] = (ksfi_gp_prev){(char *)"u", s->prev_u};
        }
        meta[n].previous = prev[n];
        meta[n].previous_count = np;
        meta[n].has_launch_time = s->launch > 0;
        meta[n].launch_time_ns = s->launch;
        am[n] = (ksfi_assignor_member){s->id, &meta[n]};
    }
    ck_assert_int_eq(ksfi_assign(am, n, topics, c->parts_u < 0 ? 1 : 2, out, NULL),
                     KSF_OK);
    for (size_t i = 0; i < n; i++) {
        char got[256];
        render(&out[i], got, sizeof got);
        ck_assert_msg(strcmp(got, c->want[i]) == 0,
                      "%s: member %s got \"%s\", want \"%s\"", c->name, c->m[i].id, got,
                      c->want[i]);
        ksfi_gp_assignment_free(&out[i]);
    }
}

static const acase cases[] = {
    /* Section 8.2's worked examples; members without launch time order by id. */
    {"8.2: 3 partitions, 2 members",
     3,
     -1,
     {{"c-a", 0, -1, -1, 0}, {"c-b", 0, -1, -1, 0}},
     {"t[0,2]", "t[1]"}},
    {"8.2: topics t and u",
     3,
     3,
     {{"c-a", 0, -1, -1, 1}, {"c-b", 0, -1, -1, 1}},
     {"t[0,2] u[0]", "t[1] u[1,2]"}},
    {"8.2: 2 partitions, 3 members",
     2,
     -1,
     {{"c-a", 0, 1, -1, 0}, {"c-b", 0, 0, -1, 0}, {"c-c", 0, -1, -1, 0}},
     {"t[1]", "t[0]", "t[]"}},
    {"8.2: after c-a leaves",
     2,
     -1,
     {{"c-b", 0, 1, -1, 0}, {"c-c", 0, -1, -1, 0}},
     {"t[1]", "t[0]"}},
    /* Deliberate difference: NestJS gives c-a [0,1] and c-b [0,2], partition 0 twice. */
    {"8.2: double claim",
     3,
     -1,
     {{"c-a", 0, 0, -1, 0}, {"c-b", 0, 0, -1, 0}},
     {"t[0,2]", "t[1]"}},
    /* The earlier launch wins a double claim, whatever the ids say. */
    {"double claim by launch",
     3,
     -1,
     {{"c-a", 200, 0, -1, 0}, {"c-b", 100, 0, -1, 0}},
     {"t[1]", "t[0,2]"}},
    /* Launch order first, then members without a launch time, by id. */
    {"launch order",
     4,
     -1,
     {{"z", 100, -1, -1, 0}, {"a", 200, -1, -1, 0}, {"m", 0, -1, -1, 0}},
     {"t[0,3]", "t[1]", "t[2]"}},
    {"launch tie by id",
     2,
     -1,
     {{"b", 100, -1, -1, 0}, {"a", 100, -1, -1, 0}},
     {"t[1]", "t[0]"}},
    /* Deliberate difference: NestJS deals 0 to A and 1 to B, moving B's lowest partition
     * (its reply partition) from 3 to 1; we give 1 to A, whose lowest is already 0. */
    {"lowest partition kept",
     4,
     -1,
     {{"A", 1, 2, -1, 0}, {"B", 2, 3, -1, 0}},
     {"t[0,1,2]", "t[3]"}},
    {"previous beyond the topic",
     2,
     -1,
     {{"A", 1, 5, -1, 0}, {"B", 2, 1, -1, 0}},
     {"t[0]", "t[1]"}},
    {"surplus member",
     2,
     -1,
     {{"A", 1, -1, -1, 0}, {"B", 2, -1, -1, 0}, {"C", 3, -1, -1, 0}},
     {"t[0]", "t[1]", "t[]"}},
    {"only subscribers",
     2,
     2,
     {{"A", 1, -1, -1, 1}, {"B", 2, -1, -1, 0}},
     {"t[0] u[0,1]", "t[1]"}},
    /* The membership test's story: 3 join, a 4th joins, the 2nd leaves. */
    {"three join",
     4,
     -1,
     {{"A", 1, -1, -1, 0}, {"B", 2, -1, -1, 0}, {"C", 3, -1, -1, 0}},
     {"t[0,3]", "t[1]", "t[2]"}},
    {"a fourth joins",
     4,
     -1,
     {{"A", 1, 0, -1, 0}, {"B", 2, 1, -1, 0}, {"C", 3, 2, -1, 0}, {"D", 4, -1, -1, 0}},
     {"t[0]", "t[1]", "t[2]", "t[3]"}},
    {"the second leaves",
     4,
     -1,
     {{"A", 1, 0, -1, 0}, {"C", 3, 2, -1, 0}, {"D", 4, 3, -1, 0}},
     {"t[0,1]", "t[2]", "t[3]"}},
};

static const int ncases = (int)(sizeof cases / sizeof cases[0]);

KSFT_LOOP_TEST(test_assignor_table, 30, ncases)
{
    run_case(&cases[_i]);
}
END_TEST

KSFT_TEST(test_assignor_invalid, 30)
{
    ksfi_gp_member_meta meta = {0};
    ksfi_assignor_member am[2] = {{"x", &meta}, {"x", &meta}};
    ksfi_assignor_topic t = {"t", 2};
    ksfi_gp_assignment out[2];
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksfi_assign(am, 2, &t, 1, out, &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "\"x\" appears twice"));
    t.partitions = -1;
    ck_assert_int_eq(ksfi_assign(am, 1, &t, 1, out, &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "-1 partitions"));
    /* An empty group and a member without readable metadata are fine. */
    t.partitions = 3;
    ck_assert_int_eq(ksfi_assign(am, 0, &t, 1, out, NULL), KSF_OK);
    am[0].meta = NULL;
    ck_assert_int_eq(ksfi_assign(am, 1, &t, 1, out, NULL), KSF_OK);
    ck_assert_uint_eq(out[0].count, 0);
    ksfi_gp_assignment_free(&out[0]);
}
END_TEST

/* A small deterministic generator, so a failure names a reproducible round. */
static unsigned
rnd(unsigned *s, unsigned n)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) % n;
}

typedef struct world {
    size_t n, nt;
    char ids[MAXM][24]; /* "m" + any size_t */
    char *names[2];
    ksfi_gp_member_meta meta[MAXM];
    ksfi_gp_prev prev[MAXM][2];
    ksfi_assignor_member am[MAXM];
    ksfi_assignor_topic topics[2];
    size_t order[MAXM]; /* launch order, computed independently of the assignor */
} world;

static void
make_world(world *w, unsigned *seed)
{
    memset(w, 0, sizeof *w);
    w->n = 1 + rnd(seed, MAXM);
    w->nt = 1 + rnd(seed, 2);
    w->names[0] = (char *)"t";
    w->names[1] = (char *)"u";
    for (size_t t = 0; t < w->nt; t++) {
        w->topics[t] = (ksfi_assignor_topic){w->names[t], (int32_t)rnd(seed, 9)};
    }
    for (size_t i = 0; i < w->n; i++) {
        ksfi_gp_member_meta *m = &w->meta[i];
        snprintf(w->ids[i], sizeof w->ids[i], "m%u", (unsigned)(i % 1000000));
        m->topics = w->names;
        m->topic_count = w->nt;
        m->previous = w->prev[i];
        for (size_t t = 0; t < w->nt; t++) {
            if (rnd(seed, 3)) { /* some claim partitions beyond the topic or taken ones */
                w->prev[i][m->previous_count++] =
                    (ksfi_gp_prev){w->names[t], (int32_t)rnd(seed, 11)};
            }
        }
        m->has_launch_time = rnd(seed, 4) != 0;
        m->launch_time_ns = 1 + rnd(seed, 4); /* ties on purpose */
        w->am[i] = (ksfi_assignor_member){w->ids[i], m};
    }
    /* Reference order: a selection sort on (has launch, launch, id). */
    bool used[MAXM] = {0};
    for (size_t k = 0; k < w->n; k++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < w->n; i++) {
            if (used[i]) {
                continue;
            }
            const ksfi_gp_member_meta *a = &w->meta[i];
            const ksfi_gp_member_meta *b = best == SIZE_MAX ? NULL : &w->meta[best];
            bool better = !b || (a->has_launch_time && !b->has_launch_time) ||
                          (a->has_launch_time == b->has_launch_time &&
                           ((a->has_launch_time && a->launch_time_ns != b->launch_time_ns)
                                ? a->launch_time_ns < b->launch_time_ns
                                : strcmp(w->ids[i], w->ids[best]) < 0));
            if (better) {
                best = i;
            }
        }
        used[best] = true;
        w->order[k] = best;
    }
}

static bool
holds(const ksfi_gp_assignment *a, size_t t, int32_t p)
{
    for (size_t j = 0; j < a->topics[t].count; j++) {
        if (a->topics[t].partitions[j] == p) {
            return true;
        }
    }
    return false;
}

/* Whether member @p i holds the previous partition it advertised for topic @p t. */
static bool
kept_previous(const world *w, const ksfi_gp_assignment *a, size_t i, size_t t)
{
    for (size_t j = 0; j < w->meta[i].previous_count; j++) {
        if (w->prev[i][j].topic == w->names[t] && holds(a, t, w->prev[i][j].partition)) {
            return true;
        }
    }
    return false;
}

/* Every partition exactly once; a valid, unclaimed-by-an-earlier-member previous
 * partition is kept; only the latest-launched surplus members go without. */
static void
check_properties(const world *w, const ksfi_gp_assignment *out, unsigned round)
{
    for (size_t t = 0; t < w->nt; t++) {
        int32_t count = w->topics[t].partitions;
        for (int32_t p = 0; p < count; p++) {
            int owners = 0;
            for (size_t i = 0; i < w->n; i++) {
                owners += holds(&out[i], t, p);
            }
            ck_assert_msg(owners == 1, "round %u: %s[%d] has %d owners", round,
                          w->names[t], (int)p, owners);
        }
        size_t without = 0;
        for (size_t k = 0; k < w->n; k++) {
            size_t i = w->order[k];
            /* Members that kept nothing are filled in launch order: once one of them
             * goes without, every later one does too. */
            if (out[i].topics[t].count == 0) {
                without++;
            } else {
                ck_assert_msg(without == 0 || kept_previous(w, &out[i], i, t),
                              "round %u: member %zu of %zu in launch order was filled "
                              "before an earlier one",
                              round, k, w->n);
            }
            int32_t prev = -1;
            for (size_t j = 0; j < w->meta[i].previous_count; j++) {
                if (w->prev[i][j].topic == w->names[t]) {
                    prev = w->prev[i][j].partition;
                }
            }
            bool claimed_before = false;
            for (size_t e = 0; e < k; e++) {
                const ksfi_gp_member_meta *em = &w->meta[w->order[e]];
                for (size_t j = 0; j < em->previous_count; j++) {
                    claimed_before |= em->previous[j].topic == w->names[t] &&
                                      em->previous[j].partition == prev;
                }
            }
            if (prev >= 0 && prev < count && !claimed_before) {
                ck_assert_msg(holds(&out[i], t, prev), "round %u: member lost %s[%d]",
                              round, w->names[t], (int)prev);
            }
        }
        ck_assert_uint_eq(without, w->n > (size_t)count ? w->n - (size_t)count : 0);
    }
}

KSFT_TEST(test_assignor_properties, 60)
{
    unsigned seed = 20241126;
    for (unsigned round = 0; round < 3000; round++) {
        world w;
        ksfi_gp_assignment out[MAXM], again[MAXM];
        make_world(&w, &seed);
        ck_assert_int_eq(ksfi_assign(w.am, w.n, w.topics, w.nt, out, NULL), KSF_OK);
        check_properties(&w, out, round);
        /* Stability: feeding each member's lowest partitions back as its previous ones
         * (what members advertise) changes nobody's lowest partition. */
        for (size_t i = 0; i < w.n; i++) {
            w.meta[i].previous_count = 0;
            for (size_t t = 0; t < w.nt; t++) {
                int32_t low = ksfi_gp_assignment_min(&out[i], w.names[t]);
                if (low >= 0) {
                    w.prev[i][w.meta[i].previous_count++] =
                        (ksfi_gp_prev){w.names[t], low};
                }
            }
        }
        ck_assert_int_eq(ksfi_assign(w.am, w.n, w.topics, w.nt, again, NULL), KSF_OK);
        check_properties(&w, again, round);
        for (size_t i = 0; i < w.n; i++) {
            for (size_t t = 0; t < w.nt; t++) {
                ck_assert_int_eq(ksfi_gp_assignment_min(&again[i], w.names[t]),
                                 ksfi_gp_assignment_min(&out[i], w.names[t]));
            }
            ksfi_gp_assignment_free(&out[i]);
            ksfi_gp_assignment_free(&again[i]);
        }
    }
}
END_TEST

KSFT_TEST(test_assignor_alloc_failures, 30)
{
    unsigned seed = 7;
    world w;
    do {
        make_world(&w, &seed);
    } while (w.n < 3);
    int ok = 0;
    for (unsigned long nth = 1; nth < 60; nth++) {
        ksfi_gp_assignment out[MAXM];
        ksfi_alloc_fail_after(nth, 1);
        ksf_err e = ksfi_assign(w.am, w.n, w.topics, w.nt, out, NULL);
        ksfi_alloc_fail_after(0, 0);
        ck_assert(e == KSF_OK || e == KSF_ENOMEM);
        for (size_t i = 0; i < w.n; i++) {
            ck_assert(e == KSF_OK || out[i].count == 0);
            ksfi_gp_assignment_free(&out[i]);
        }
        ok += e == KSF_OK;
    }
    ck_assert_int_gt(ok, 0);
}
END_TEST

KSFT_MAIN("assignor")
