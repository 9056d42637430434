#include "suite.h"

#include "broker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Cases registered by KSFT_TEST before main: a test file holds a few dozen at most. */
#define MAX_CASES 256

typedef struct registered {
    const TTest *test;
    int timeout_s;
    const int *loop_end;
} registered;

static registered cases[MAX_CASES];
static size_t ncases;

void
ksft_register(const TTest *test, int timeout_s, const int *loop_end)
{
    if (ncases == MAX_CASES) {
        /* Before main: no test is running to fail, so say it and stop the program. */
        fprintf(stderr, "ksft_register: more than %d cases; raise MAX_CASES in %s\n",
                MAX_CASES, __FILE__);
        exit(EXIT_FAILURE);
    }
    cases[ncases++] = (registered){test, timeout_s, loop_end};
}

/* Source order (file, then line), whatever order the constructors ran in. */
static int
by_place(const void *a, const void *b)
{
    const TTest *x = ((const registered *)a)->test, *y = ((const registered *)b)->test;
    int c = strcmp(x->file, y->file);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

/* "test_<suite>_name" -> "name"; otherwise without "test_". */
static const char *
case_name(const char *suite, const char *fn)
{
    size_t n = strlen(suite);
    if (!strncmp(fn, "test_", 5) && !strncmp(fn + 5, suite, n) && fn[5 + n] == '_') {
        return fn + 6 + n;
    }
    return strncmp(fn, "test_", 5) ? fn : fn + 5;
}

/* True when @p name is in KSFT_EXCLUDE_CASES (comma-separated case names): meson runs
 * a slow case that only waits apart from its file's other cases (tests/meson.build,
 * ksf_tests_split), with CK_RUN_CASE. Check itself has no such variable. */
static bool
excluded(const char *name)
{
    const char *list = getenv("KSFT_EXCLUDE_CASES");
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) {
            return true;
        }
        p = end ? end + 1 : NULL;
    }
    return false;
}

static TCase *
add_case(Suite *s, const char *name, int timeout_s)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, timeout_s);
    suite_add_tcase(s, tc);
    return tc;
}

static int
run(Suite *s, const char *name, size_t table_cases)
{
    if (ncases + table_cases == 0 && !getenv("KSFT_EXCLUDE_CASES")) {
        /* A suite that checks nothing must not pass: its cases did not register. */
        fprintf(stderr, "suite %s: no cases (declare them with KSFT_TEST)\n", name);
        return EXIT_FAILURE;
    }
    const char *kafka = ksft_real_kafka();
    printf("suite %s: %zu registered cases; broker: %s%s\n", name, ncases,
           kafka ? "real Kafka at " : "the embedded mock (KSF_TEST_KAFKA unset)",
           kafka ? kafka : "");
    fflush(stdout); /* before Check forks, or each child repeats it */
    qsort(cases, ncases, sizeof cases[0], by_place);
    size_t added = table_cases;
    for (size_t i = 0; i < ncases; i++) {
        const char *cname = case_name(name, cases[i].test->name);
        if (excluded(cname)) {
            printf("suite %s: case %s left out (KSFT_EXCLUDE_CASES)\n", name, cname);
            fflush(stdout);
            continue;
        }
        TCase *tc = add_case(s, cname, cases[i].timeout_s);
        added++;
        if (cases[i].loop_end) {
            tcase_add_loop_test(tc, cases[i].test, 0, *cases[i].loop_end);
        } else {
            tcase_add_test(tc, cases[i].test);
        }
    }
    if (added == 0) {
        fprintf(stderr, "suite %s: KSFT_EXCLUDE_CASES left no case to run\n", name);
        srunner_free(srunner_create(s)); /* Check frees a suite with its runner */
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

int
ksft_main(const char *name)
{
    return run(suite_create(name), name, 0);
}

int
ksft_run_cases(const char *name, const ksft_case *table, size_t count)
{
    Suite *s = suite_create(name);
    size_t kept = 0;
    for (size_t i = 0; i < count; i++) {
        if (!excluded(table[i].name)) {
            tcase_add_test(add_case(s, table[i].name, table[i].timeout_s), table[i].test);
            kept++;
        }
    }
    return run(s, name, kept);
}

/* ---- waiting -------------------------------------------------------------------- */

#define POLL_MS 5

ksft_deadline
ksft_deadline_in(int timeout_ms)
{
    int scaled = ksft_scaled_ms(timeout_ms);
    return (ksft_deadline){ksft_now_ms() + scaled, scaled};
}

bool
ksft_deadline_wait(const ksft_deadline *d)
{
    int64_t left = d->until_ms - ksft_now_ms();
    if (left <= 0) {
        return false;
    }
    int ms = left < POLL_MS ? (int)left : POLL_MS;
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
    return true;
}

bool
ksft_wait_until(ksft_cond_fn cond, void *arg, int timeout_ms)
{
    ksft_deadline d = ksft_deadline_in(timeout_ms);
    while (!cond(arg)) {
        if (!ksft_deadline_wait(&d)) {
            return cond(arg); /* one last look: it may have come during the sleep */
        }
    }
    return true;
}

void
ksft_wait_failed_(const char *file, int line, int timeout_ms, const char *fmt, ...)
{
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    _ck_assert_failed(file, line, "Wait failed", "waited %d ms for %s", timeout_ms, what);
}
