/*
 * API hygiene: destroy(NULL) no-ops, strings for every enum value, the version.
 * ksf_server_destroy(NULL) and ksf_client_destroy(NULL) belong here too; they are
 * added with the server and client (see the lead's merge notes).
 */
#include <check.h>
#include <ksf/ksf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_api_destroy_null)
{
    ksf_config_destroy(NULL);
    ksf_config_set_log(NULL, NULL, NULL, KSF_LOG_DEBUG);
}
END_TEST

START_TEST(test_api_strerror_total)
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
    ck_assert_int_eq(known, 16); /* KSF_OK..KSF_EMSGSIZE, KSF_DEFERRED, KSF_SKIP */
}
END_TEST

START_TEST(test_api_log_level_names)
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

START_TEST(test_api_version)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", KSF_VERSION_MAJOR, KSF_VERSION_MINOR,
             KSF_VERSION_PATCH);
    ck_assert_str_eq(ksf_version(), want);
    ck_assert_str_eq(KSF_VERSION_STRING, want);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("hygiene");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_api_destroy_null);
    tcase_add_test(tc, test_api_strerror_total);
    tcase_add_test(tc, test_api_log_level_names);
    tcase_add_test(tc, test_api_version);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
