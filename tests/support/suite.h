/*
 * The main() of every Check test executable: one suite, one TCase per case (so each
 * case gets its own timeout and, with CK_FORK, its own process).
 */
#ifndef KSF_TEST_SUITE_H
#define KSF_TEST_SUITE_H

#include <check.h>
#include <stddef.h>

typedef struct ksft_case {
    const char *name;  /* the TCase name: the test's name without "test_<suite>_" */
    const TTest *test; /* from START_TEST */
    int timeout_s;     /* per case; CK_TIMEOUT_MULTIPLIER scales it */
} ksft_case;

/* Run suite @p name made of @p cases; returns main()'s exit status. */
int ksft_run_cases(const char *name, const ksft_case *cases, size_t count);

#define KSFT_RUN(name, cases)                                                            \
    ksft_run_cases((name), (cases), sizeof(cases) / sizeof((cases)[0]))

#endif
