#include "base/alloc.h"
#include "base/errinfo.h"

#include "suite.h"

#include <check.h>
#include <ksf/ksf.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

KSFT_TEST(test_errors_every_code_has_a_string, 10)
{
    static const ksf_err all[] = {
        KSF_OK,      KSF_ENOMEM,   KSF_EINVAL,       KSF_ETIMEDOUT,
        KSF_ECLOSED, KSF_EPROTO,   KSF_EREMOTE,      KSF_EKAFKA,
        KSF_EEXIST,  KSF_ENOENT,   KSF_ENOPARTITION, KSF_EBUSY,
        KSF_ESTATE,  KSF_EMSGSIZE, KSF_DEFERRED,     KSF_SKIP};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *s = ksf_strerror(all[i]);
        ck_assert_ptr_nonnull(s);
        ck_assert_str_ne(s, "unknown ksf error");
        for (size_t j = 0; j < i; j++) {
            ck_assert_str_ne(s, ksf_strerror(all[j])); /* distinct texts */
        }
    }
    ck_assert_str_eq(ksf_strerror(KSF_OK), "success");
    ck_assert_str_eq(ksf_strerror(KSF_ETIMEDOUT), "timed out");
}
END_TEST

KSFT_TEST(test_errors_unknown_code_is_not_null, 10)
{
    ck_assert_str_eq(ksf_strerror((ksf_err)12345), "unknown ksf error");
    ck_assert_str_eq(ksf_strerror((ksf_err)-1), "unknown ksf error");
}
END_TEST

KSFT_TEST(test_errors_fail_fills_errinfo, 10)
{
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksfi_fail(&ei, KSF_EINVAL, "key %s: %d", "x", 7), KSF_EINVAL);
    ck_assert_int_eq(ei.code, KSF_EINVAL);
    ck_assert_int_eq(ei.kafka_err, 0);
    ck_assert_str_eq(ei.text, "key x: 7");
    ck_assert_int_eq(ksfi_fail_kafka(&ei, -195, "produce"), KSF_EKAFKA);
    ck_assert_int_eq(ei.code, KSF_EKAFKA);
    ck_assert_int_eq(ei.kafka_err, -195);
    ck_assert_int_eq(ksfi_fail(NULL, KSF_ENOMEM, "ignored"), KSF_ENOMEM);
}
END_TEST

KSFT_TEST(test_errors_long_text_is_truncated_and_terminated, 10)
{
    ksf_errinfo ei;
    memset(&ei, 'x', sizeof ei);
    char big[1000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ksfi_fail(&ei, KSF_EINVAL, "%s", big);
    ck_assert_uint_eq(strlen(ei.text), KSF_ERRINFO_TEXT_SIZE - 1);
}
END_TEST

KSFT_TEST(test_errors_version, 10)
{
    ck_assert_str_eq(ksf_version(), KSF_VERSION_STRING);
}
END_TEST

/* The base/alloc.h helpers the growable buffers and id strings share (#18). */
KSFT_TEST(test_alloc_grow_doubles_and_keeps_data_on_oom, 10)
{
    size_t cap = 0;
    char *p = ksfi_grow(NULL, &cap, 5, 4); /* 4 -> 8 */
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(cap, 8);
    memcpy(p, "abcdefg", 8);
    char *q = ksfi_grow(p, &cap, 33, 4); /* 8 -> 16 -> 32 -> 64 */
    ck_assert_ptr_nonnull(q);
    ck_assert_uint_eq(cap, 64);
    ck_assert_str_eq(q, "abcdefg");
    ksfi_alloc_fail_after(1, 0);
    ck_assert_ptr_null(ksfi_grow(q, &cap, 65, 4));
    ksfi_alloc_fail_after(0, 0);
    ck_assert_uint_eq(cap, 64); /* unchanged, and q still the caller's */
    ck_assert_str_eq(q, "abcdefg");
    ck_assert_ptr_null(ksfi_grow(q, &cap, SIZE_MAX, 4)); /* beyond doubling */
    ck_assert_uint_eq(cap, 64);
    ksfi_free(q);
}
END_TEST

KSFT_TEST(test_alloc_strcat2, 10)
{
    char *s = ksfi_strcat2("orders.create", ".reply");
    ck_assert_str_eq(s, "orders.create.reply");
    ksfi_free(s);
    s = ksfi_strcat2("", "");
    ck_assert_str_eq(s, "");
    ksfi_free(s);
    ksfi_alloc_fail_after(1, 0);
    ck_assert_ptr_null(ksfi_strcat2("a", "b"));
    ksfi_alloc_fail_after(0, 0);
}
END_TEST

KSFT_MAIN("errors")
