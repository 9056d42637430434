/*
 * Running the project's programs from a test: the ksf tool (KSF_TOOL), bench helpers,
 * the README sample. meson passes their paths in the environment.
 */
#ifndef KSF_TEST_PROC_H
#define KSF_TEST_PROC_H

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

#endif
