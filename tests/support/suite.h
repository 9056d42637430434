/*
 * The main() of every Check test executable. A case is declared with KSFT_TEST(name,
 * timeout_s) where Check's START_TEST stood: it registers itself (a constructor), so a
 * file has no case table to keep in step with its tests, and main is KSFT_MAIN("suite")
 * (or a main that parses its arguments and then returns ksft_main("suite")). Each case
 * is its own TCase (its own timeout and, with CK_FORK, its own process), named after the
 * function without "test_<suite>_" (CK_RUN_CASE=name runs one; KSFT_EXCLUDE_CASES=a,b
 * leaves those out of a run of all registered cases). The runner prints, once,
 * which broker the integration cases talk to (broker.h: the mock, or KSF_TEST_KAFKA).
 */
#ifndef KSF_TEST_SUITE_H
#define KSF_TEST_SUITE_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Register @p test with a timeout of @p timeout_s seconds (CK_TIMEOUT_MULTIPLIER scales
 * it). With @p loop_end non-NULL it is a loop test run for _i = 0 .. *loop_end - 1, the
 * count read when the suite runs (main may compute it from its arguments first). */
void ksft_register(const TTest *test, int timeout_s, const int *loop_end);

/* Run every registered case as suite @p name; returns main()'s exit status. */
int ksft_main(const char *name);

/* Declare and register a case; the function body follows, as after START_TEST. */
#define KSFT_TEST(name, timeout_s) KSFT_TEST_IMPL_(name, timeout_s, NULL)

/* A loop test: runs once per _i from 0 to @p loop_end - 1 (an int variable). */
#define KSFT_LOOP_TEST(name, timeout_s, loop_end)                                        \
    KSFT_TEST_IMPL_(name, timeout_s, &(loop_end))

#define KSFT_TEST_IMPL_(name, timeout_s, loop_end)                                       \
    static void name##_fn(int _i CK_ATTRIBUTE_UNUSED);                                   \
    static const TTest name##_ttest = {#name, name##_fn, __FILE__, __LINE__};            \
    __attribute__((constructor)) static void name##_register(void)                       \
    {                                                                                    \
        ksft_register(&name##_ttest, (timeout_s), (loop_end));                           \
    }                                                                                    \
    static void name##_fn(int _i CK_ATTRIBUTE_UNUSED)

/* main() for a suite that takes no arguments. */
#define KSFT_MAIN(suite)                                                                 \
    int main(void)                                                                       \
    {                                                                                    \
        return ksft_main(suite);                                                         \
    }

/* The older table form, kept for files that still list their cases: one TCase per row. */
typedef struct ksft_case {
    const char *name;  /* the TCase name: the test's name without "test_<suite>_" */
    const TTest *test; /* from START_TEST */
    int timeout_s;     /* per case; CK_TIMEOUT_MULTIPLIER scales it */
} ksft_case;

/* Run suite @p name made of @p cases (and any KSFT_TEST cases); main()'s exit status. */
int ksft_run_cases(const char *name, const ksft_case *cases, size_t count);

#define KSFT_RUN(name, cases)                                                            \
    ksft_run_cases((name), (cases), sizeof(cases) / sizeof((cases)[0]))

/* ---- waiting on a condition -------------------------------------------------------- */

/* A condition for ksft_wait_until: true once what is awaited happened. */
typedef bool (*ksft_cond_fn)(void *arg);

/* Poll @p cond(@p arg) every few milliseconds until it is true (returns true) or
 * ksft_scaled_ms(@p timeout_ms) passed (returns false; the caller names what failed). */
bool ksft_wait_until(ksft_cond_fn cond, void *arg, int timeout_ms);

/* A deadline ksft_scaled_ms(@p timeout_ms) from now, for KSFT_WAIT_UNTIL and loops that
 * must do work between checks: `while (!done && ksft_deadline_wait(&d))`. */
typedef struct ksft_deadline {
    int64_t until_ms;
    int timeout_ms; /* scaled, for messages */
} ksft_deadline;
ksft_deadline ksft_deadline_in(int timeout_ms);

/* Sleep a short poll interval (5 ms) and return true, or return false when @p d passed.
 */
bool ksft_deadline_wait(const ksft_deadline *d);

/* Wait until the expression @p cond holds, for at most ksft_scaled_ms(@p wait_ms);
 * otherwise fail the test with "waited N ms for " and the printf-style @p ... naming
 * what was awaited (and, ideally, what was seen instead). */
#define KSFT_WAIT_UNTIL(cond, wait_ms, ...)                                              \
    do {                                                                                 \
        ksft_deadline ksft_d_ = ksft_deadline_in(wait_ms);                               \
        while (!(cond)) {                                                                \
            if (!ksft_deadline_wait(&ksft_d_)) {                                         \
                ksft_wait_failed_(__FILE__, __LINE__, ksft_d_.timeout_ms, __VA_ARGS__);  \
            }                                                                            \
        }                                                                                \
    } while (0)

/* KSFT_WAIT_UNTIL's failure: fails the current test (does not return). */
void ksft_wait_failed_(const char *file, int line, int timeout_ms, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));

#endif
