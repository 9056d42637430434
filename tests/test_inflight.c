#include "base/alloc.h"
#include "client/inflight.h"

#include "suite.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ksfi_pending *
entry(int n, int64_t deadline)
{
    ksfi_pending *p = calloc(1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    snprintf(p->id, sizeof p->id, "id-%08d", n);
    p->deadline_ms = deadline;
    return p;
}

static ksfi_inflight *
table(size_t memory)
{
    ksfi_inflight *t = NULL;
    ck_assert_int_eq(ksfi_inflight_new(memory, &t), KSF_OK);
    return t;
}

KSFT_TEST(test_inflight_add_find_remove, 10)
{
    ksfi_inflight *t = table(16);
    ksfi_pending *a = entry(1, 100), *b = entry(2, 50);
    ck_assert_int_eq(ksfi_inflight_add(t, a), KSF_OK);
    ck_assert_int_eq(ksfi_inflight_add(t, b), KSF_OK);
    ck_assert_uint_eq(ksfi_inflight_count(t), 2);
    ck_assert_ptr_eq(ksfi_inflight_find(t, "id-00000001", 11), a);
    ck_assert_ptr_eq(ksfi_inflight_find(t, "id-00000002", 11), b);
    /* A prefix or a longer id is not the same id. */
    ck_assert_ptr_null(ksfi_inflight_find(t, "id-0000000", 10));
    ck_assert_ptr_null(ksfi_inflight_find(t, "id-000000011", 12));
    ksfi_pending *dup = entry(1, 5);
    ck_assert_int_eq(ksfi_inflight_add(t, dup), KSF_EEXIST);
    ksfi_inflight_remove(t, a, KSFI_RECENT_ANSWERED);
    ck_assert_ptr_null(ksfi_inflight_find(t, "id-00000001", 11));
    ck_assert_uint_eq(ksfi_inflight_count(t), 1);
    ksfi_inflight_remove(t, a, KSFI_RECENT_ANSWERED); /* not in it any more: no-op */
    ck_assert_uint_eq(ksfi_inflight_count(t), 1);
    ck_assert_int_eq(ksfi_inflight_next_deadline(t), 50);
    ksfi_inflight_remove(t, b, KSFI_RECENT_NONE);
    ck_assert_int_eq(ksfi_inflight_next_deadline(t), INT64_MAX);
    ck_assert_ptr_null(ksfi_inflight_any(t));
    free(a);
    free(b);
    free(dup);
    ksfi_inflight_destroy(t);
}
END_TEST

KSFT_TEST(test_inflight_deadlines_in_order, 10)
{
    enum { N = 5000 };
    ksfi_inflight *t = table(0);
    static ksfi_pending *e[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        e[i] = entry(i, rand() % 1000);
        ck_assert_int_eq(ksfi_inflight_add(t, e[i]), KSF_OK);
    }
    /* Remove every third from the middle of the heap, then expire the rest in order. */
    for (int i = 0; i < N; i += 3) {
        ksfi_inflight_remove(t, e[i], KSFI_RECENT_ANSWERED);
    }
    size_t left = ksfi_inflight_count(t);
    ck_assert_uint_eq(left, N - (N + 2) / 3);
    ck_assert_ptr_null(ksfi_inflight_expire(t, -1));
    int64_t last = -1;
    size_t expired = 0;
    ksfi_pending *p;
    while ((p = ksfi_inflight_expire(t, 999)) != NULL) {
        ck_assert_int_ge(p->deadline_ms, last);
        last = p->deadline_ms;
        int n = atoi(p->id + 3);
        ck_assert_int_ne(n % 3, 0);
        expired++;
    }
    ck_assert_uint_eq(expired, left);
    ck_assert_uint_eq(ksfi_inflight_count(t), 0);
    for (int i = 0; i < N; i++) {
        free(e[i]);
    }
    ksfi_inflight_destroy(t);
}
END_TEST

KSFT_TEST(test_inflight_expire_only_due, 10)
{
    ksfi_inflight *t = table(8);
    ksfi_pending *a = entry(1, 10), *b = entry(2, 20), *c = entry(3, 30);
    ksfi_inflight_add(t, c);
    ksfi_inflight_add(t, a);
    ksfi_inflight_add(t, b);
    ck_assert_ptr_null(ksfi_inflight_expire(t, 9));
    ck_assert_ptr_eq(ksfi_inflight_expire(t, 25), a);
    ck_assert_ptr_eq(ksfi_inflight_expire(t, 25), b);
    ck_assert_ptr_null(ksfi_inflight_expire(t, 25));
    ck_assert_int_eq(ksfi_inflight_next_deadline(t), 30);
    ck_assert_int_eq(ksfi_inflight_recent(t, "id-00000001", 11), KSFI_RECENT_TIMED_OUT);
    ck_assert_int_eq(ksfi_inflight_recent(t, "id-00000003", 11), KSFI_RECENT_NONE);
    ksfi_inflight_remove(t, c, KSFI_RECENT_ANSWERED);
    ck_assert_int_eq(ksfi_inflight_recent(t, "id-00000003", 11), KSFI_RECENT_ANSWERED);
    free(a);
    free(b);
    free(c);
    ksfi_inflight_destroy(t);
}
END_TEST

KSFT_TEST(test_inflight_memory_is_bounded, 10)
{
    enum { MEM = 100, N = 350 };
    ksfi_inflight *t = table(MEM);
    for (int i = 0; i < N; i++) {
        ksfi_pending *p = entry(i, i);
        ck_assert_int_eq(ksfi_inflight_add(t, p), KSF_OK);
        ksfi_inflight_remove(t, p, i % 2 ? KSFI_RECENT_ANSWERED : KSFI_RECENT_TIMED_OUT);
        free(p);
    }
    char id[KSFI_ID_SIZE];
    size_t remembered = 0;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "id-%08d", i);
        ksfi_recent r = ksfi_inflight_recent(t, id, strlen(id));
        if (i < N - MEM) {
            ck_assert_int_eq(r, KSFI_RECENT_NONE);
        } else {
            ck_assert_int_eq(r, i % 2 ? KSFI_RECENT_ANSWERED : KSFI_RECENT_TIMED_OUT);
            remembered++;
        }
    }
    ck_assert_uint_eq(remembered, MEM);
    ck_assert_int_eq(ksfi_inflight_recent(t, "never", 5), KSFI_RECENT_NONE);
    ksfi_inflight_destroy(t);
}
END_TEST

KSFT_TEST(test_inflight_alloc_failure, 10)
{
    ksfi_inflight *t = NULL;
    for (unsigned long n = 1; n <= 4; n++) {
        ksfi_alloc_fail_after(n, 0);
        ksf_err e = ksfi_inflight_new(32, &t);
        ksfi_alloc_fail_after(0, 0);
        if (e == KSF_OK) {
            ksfi_inflight_destroy(t);
        } else {
            ck_assert_int_eq(e, KSF_ENOMEM);
        }
    }
    t = table(4);
    ksfi_pending *p = entry(1, 1);
    ksfi_alloc_fail_after(1, 0); /* the heap's first allocation */
    ck_assert_int_eq(ksfi_inflight_add(t, p), KSF_ENOMEM);
    ksfi_alloc_fail_after(0, 0);
    ck_assert_uint_eq(ksfi_inflight_count(t), 0);
    ck_assert_int_eq(ksfi_inflight_add(t, p), KSF_OK);
    ck_assert_ptr_eq(ksfi_inflight_find(t, p->id, strlen(p->id)), p);
    ksfi_inflight_remove(t, p, KSFI_RECENT_NONE);
    free(p);
    ksfi_inflight_destroy(t);
}
END_TEST

KSFT_MAIN("inflight")
