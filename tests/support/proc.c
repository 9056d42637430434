#include "proc.h"

#include "suite.h"

#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

void
ksft_program_start(ksft_program *p, const char *path, const char *arg,
                   const char *brokers)
{
    snprintf(p->err_path, sizeof p->err_path, "/tmp/ksft-program-XXXXXX");
    int e = mkstemp(p->err_path);
    ck_assert_msg(e >= 0, "mkstemp %s failed", p->err_path);
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    p->pid = fork();
    ck_assert_int_ge(p->pid, 0);
    if (p->pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        dup2(e, STDERR_FILENO);
        close(fds[0]);
        setenv("KSF_BROKERS", brokers, 1);
        unsetenv("KSF_LOG");
        execl(path, path, arg, (char *)NULL);
        _exit(127);
    }
    close(e);
    close(fds[1]);
    p->out = fdopen(fds[0], "r");
    ck_assert_ptr_nonnull(p->out);
}

void
ksft_program_expect_line(ksft_program *p, const char *want)
{
    char line[256] = "";
    ck_assert_msg(fgets(line, sizeof line, p->out) != NULL, "no line on stdout; want %s",
                  want);
    ck_assert_str_eq(line, want);
}

/* The first @p size - 1 bytes of @p f (NUL-terminated). */
static void
read_all(FILE *f, char *buf, size_t size)
{
    size_t n = f ? fread(buf, 1, size - 1, f) : 0;
    buf[n] = '\0';
}

int
ksft_program_stop(ksft_program *p, bool term, int timeout_ms, char *rest,
                  size_t rest_size, char *err, size_t err_size)
{
    if (term) {
        kill(p->pid, SIGTERM);
    }
    if (rest) {
        read_all(p->out, rest, rest_size); /* to its end: until it exits */
    }
    int st = ksft_wait_child(p->pid, timeout_ms);
    fclose(p->out);
    if (err) {
        FILE *f = fopen(p->err_path, "r");
        read_all(f, err, err_size);
        if (f) {
            fclose(f);
        }
    }
    unlink(p->err_path);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
