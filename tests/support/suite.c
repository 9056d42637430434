#include "suite.h"

#include <stdlib.h>

int
ksft_run_cases(const char *name, const ksft_case *cases, size_t count)
{
    Suite *s = suite_create(name);
    for (size_t i = 0; i < count; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, cases[i].timeout_s);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
