/*
 * API hygiene: destroy(NULL) no-ops, strings for every enum value, the version.
 * ksf_server_destroy(NULL) and ksf_client_destroy(NULL) belong here too; they are
 * added with the server and client (see the lead's merge notes).
 */
#include "suite.h"

#include <check.h>
#include <ksf/ksf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

KSFT_TEST(test_api_destroy_null, 30)
{
    ksf_config_destroy(NULL);
    ksf_config_set_log(NULL, NULL, NULL, KSF_LOG_DEBUG);
}
END_TEST

KSFT_TEST(test_api_strerror_total, 30)
{
    /* every value, known or not, has a non-NULL string; the known ones are distinct */
    int known = 0;
    for (int e = -2; e <= 128; e++) {
        const char *s = ksf_strerror((ksf_err)e);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_gt(strlen(s), 0);
        if (strcmp(s, "unknown ksf error")) {
            known++;
            for (int f = -2; f < e; f++) {
                ck_assert_str_ne(s, ksf_strerror((ksf_err)f));
            }
        }
    }
    ck_assert_int_eq(known, 15); /* KSF_OK..KSF_EMSGSIZE and KSF_DEFERRED */
}
END_TEST

KSFT_TEST(test_api_log_level_names, 30)
{
    static const ksf_log_level all[] = {KSF_LOG_ERROR, KSF_LOG_WARNING, KSF_LOG_NOTICE,
                                        KSF_LOG_INFO, KSF_LOG_DEBUG};
    static const char *const names[] = {"error", "warning", "notice", "info", "debug"};
    for (size_t i = 0; i < 5; i++) {
        ck_assert_str_eq(ksf_log_level_name(all[i]), names[i]);
    }
    ck_assert_ptr_nonnull(ksf_log_level_name((ksf_log_level)99));
}
END_TEST

KSFT_TEST(test_api_version, 30)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", KSF_VERSION_MAJOR, KSF_VERSION_MINOR,
             KSF_VERSION_PATCH);
    ck_assert_str_eq(ksf_version(), want);
    ck_assert_str_eq(KSF_VERSION_STRING, want);
}
END_TEST

KSFT_MAIN("api")
