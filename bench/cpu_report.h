/*
 * The benchmark servers' own CPU accounting: on SIGUSR1 a server writes one line
 *   {"cpu_ms":<user + system CPU of the whole process so far>,"handled":<requests>}
 * to stdout. bench/run signals it when the client starts its run and again when the
 * client has reported, so the server's CPU per request comes from the process's own
 * getrusage, like the client's cpu_ms, and not from sampling /proc from outside.
 */
#ifndef KSF_BENCH_CPU_REPORT_H
#define KSF_BENCH_CPU_REPORT_H

#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Requests the server has answered; bumped by its handler. */
static atomic_long bench_handled;

/* Appends the decimal digits of @p v to @p p; returns the new end. */
static char *
bench_put_long(char *p, long v)
{
    char d[24];
    int n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (n > 0) {
        *p++ = d[--n];
    }
    return p;
}

/* The SIGUSR1 handler: only async-signal-safe calls (getrusage, write). */
static void
bench_on_usr1(int sig)
{
    (void)sig;
    struct rusage ru;
    char line[96], *p = line;
    getrusage(RUSAGE_SELF, &ru);
    long us = (long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
              (long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    memcpy(p, "{\"cpu_ms\":", 10);
    p = bench_put_long(p + 10, us / 1000);
    *p++ = '.';
    *p++ = (char)('0' + (us / 100) % 10);
    memcpy(p, ",\"handled\":", 11);
    p = bench_put_long(p + 11, atomic_load(&bench_handled));
    *p++ = '}';
    *p++ = '\n';
    ssize_t w = write(STDOUT_FILENO, line, (size_t)(p - line));
    (void)w;
}

/* Install the handler; call before the server says it is ready. */
static void
bench_cpu_report_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = bench_on_usr1;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
}

#endif
