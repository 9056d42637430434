#include "proc.h"

#include "suite.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

int
ksft_run_tool(const char *tool_env, const char *env, const char *args, ksft_stream which,
              char *out, size_t size)
{
    const char *tool = getenv(tool_env);
    ck_assert_msg(tool != NULL, "%s is not set (meson test sets it)", tool_env);
    char cmd[2048];
    /* For stderr: 2>&1 first (stderr to the pipe), then stdout away. */
    snprintf(cmd, sizeof cmd, "%s \"%s\" %s%s", env, tool, args,
             which == KSFT_STDERR ? " 2>&1 >/dev/null" : "");
    FILE *p = popen(cmd, "r");
    ck_assert_msg(p != NULL, "popen %s: failed", cmd);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int
ksft_wait_child(pid_t pid, int timeout_ms)
{
    int status = -1;
    ksft_deadline d = ksft_deadline_in(timeout_ms);
    do {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            return status;
        }
    } while (ksft_deadline_wait(&d));
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

void
ksft_assert_usage_errors(const char *tool_env, const char *const cases[][2], size_t n)
{
    char err[2048];
    for (size_t i = 0; i < n; i++) {
        int rc = ksft_run_tool(tool_env, "", cases[i][0], KSFT_STDERR, err, sizeof err);
        ck_assert_msg(rc == 2, "%s %s: exit %d, want 2 (stderr: %s)", tool_env,
                      cases[i][0], rc, err);
        ck_assert_msg(strstr(err, cases[i][1]), "%s %s: stderr \"%s\" lacks \"%s\"",
                      tool_env, cases[i][0], err, cases[i][1]);
    }
}
