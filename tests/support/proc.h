/*
 * Running the project's programs from a test: the ksf tool (KSF_TOOL), bench helpers,
 * the README sample. meson passes their paths in the environment.
 */
#ifndef KSF_TEST_PROC_H
#define KSF_TEST_PROC_H

#include <stdbool.h>
#include <stddef.h>

/* Which of the program's output streams ksft_run_tool collects. */
typedef enum ksft_stream { KSFT_STDOUT, KSFT_STDERR } ksft_stream;

/* Run the program named by environment variable @p tool_env (fails the test when it is
 * unset) through the shell, as `ENV "PROGRAM" ARGS` with @p env (may be "") in front;
 * the first @p size - 1 bytes of @p which stream go to @p out (NUL-terminated), the
 * other stream is left as it is (stderr) or discarded (stdout). Returns the exit status,
 * or -1 when it did not exit normally. */
int ksft_run_tool(const char *tool_env, const char *env, const char *args,
                  ksft_stream which, char *out, size_t size);

/* For each {arguments, fragment} row of @p cases: the program of @p tool_env with those
 * arguments exits with status 2 (a usage error) and its stderr contains the fragment;
 * a failure names the row. */
void ksft_assert_usage_errors(const char *tool_env, const char *const cases[][2],
                              size_t n);

#include <sys/types.h>

/* Wait up to ksft_scaled_ms(@p timeout_ms) for child @p pid to exit; its raw wait status
 * (WIFEXITED, ...), or -1 after the timeout, when it is killed (SIGKILL) and reaped so
 * that nothing outlives the test. */
int ksft_wait_child(pid_t pid, int timeout_ms);

/* ---- a program run as its users run it (the README sample, the examples) ---------- */

#include <stdio.h>

typedef struct ksft_program {
    pid_t pid;
    FILE *out;         /* its stdout, through a pipe */
    char err_path[64]; /* its stderr, a temporary file */
} ksft_program;

/* Start @p path (with the one argument @p arg, or none when NULL) with
 * KSF_BROKERS=@p brokers and KSF_LOG unset. */
void ksft_program_start(ksft_program *p, const char *path, const char *arg,
                        const char *brokers);

/* Read its next stdout line (blocking until it prints one) and fail the test unless it
 * is @p want, newline included. */
void ksft_program_expect_line(ksft_program *p, const char *want);

/* SIGTERM it when @p term, read the rest of its stdout into @p rest (NULL: not read),
 * wait up to @p timeout_ms for it to exit (ksft_wait_child), and put its stderr into
 * @p err (NULL: not read; the file is removed either way). Returns its exit status, or
 * -1 when it did not exit normally. */
int ksft_program_stop(ksft_program *p, bool term, int timeout_ms, char *rest,
                      size_t rest_size, char *err, size_t err_size);

#endif
