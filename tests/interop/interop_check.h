/*
 * What the two C interop callers (interop_client.c against NestJS, spring/spring_client.c
 * against Spring) share: the "ok NAME" / "not ok NAME: DETAIL" lines run.sh reads with
 * their counts, and the wait for the peer to log an event. Header-only: each caller is
 * one translation unit and neither links anything of the other.
 */
#ifndef KSF_INTEROP_CHECK_H
#define KSF_INTEROP_CHECK_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The checks so far; main prints "N passed, N failed" from them. */
static int passed, failed;

/* Count one check and print its line (flushed: run.sh shows them as they come). */
static void
check(const char *name, bool ok, const char *detail)
{
    if (ok) {
        passed++;
        printf("ok %s\n", name);
    } else {
        failed++;
        printf("not ok %s: %s\n", name, detail);
    }
    fflush(stdout);
}

/* Wait (up to 15 s) until @p path holds a line equal to @p line. */
static bool
wait_for_line(const char *path, const char *line)
{
    struct timespec pause = {0, 50 * 1000 * 1000};
    for (int i = 0; i < 300; i++) {
        FILE *f = fopen(path, "r");
        char buf[4096];
        while (f && fgets(buf, sizeof buf, f)) {
            buf[strcspn(buf, "\n")] = '\0';
            if (!strcmp(buf, line)) {
                fclose(f);
                return true;
            }
        }
        if (f) {
            fclose(f);
        }
        nanosleep(&pause, NULL); /* polling a file another process writes */
    }
    return false;
}

#endif
