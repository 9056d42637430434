/*
 * The goodput scenario's caller (docs/benchmarks.md, "Goodput under overload"): an
 * open-loop ksf client sending "bench.echo" at a fixed rate, whatever comes back, for a
 * number of seconds, every request with the same timeout; then it waits for every
 * callback and prints one JSON line: what was sent, answered in time, shed by the
 * server (the "overloaded" error), timed out or failed otherwise, and the on-time
 * replies per second of sending.
 *
 * Usage: goodput --rate R --seconds S [--timeout-ms T] [--brokers B] [--set K=V]...
 */
#include "../tools/measure.h"

#include <ksf/ksf.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_ulong on_time, shed, timeouts, other, done;

static void
on_reply(const ksf_reply *r, void *user)
{
    (void)user;
    if (r->err == KSF_OK) {
        atomic_fetch_add(&on_time, 1); /* a reply after the timeout is never delivered */
    } else if (r->err == KSF_ETIMEDOUT) {
        atomic_fetch_add(&timeouts, 1);
    } else if (r->err == KSF_EREMOTE && r->text && strstr(r->text, "overloaded")) {
        atomic_fetch_add(&shed, 1);
    } else {
        atomic_fetch_add(&other, 1);
    }
    atomic_fetch_add(&done, 1);
}

static int
usage(void)
{
    fprintf(stderr, "Usage: goodput --rate R --seconds S [--timeout-ms T] [--brokers B] "
                    "[--set KEY=VALUE]...\n");
    return 2;
}

int
main(int argc, char **argv)
{
    double rate = 0, seconds = 0;
    int timeout_ms = 5000;
    ksf_config *cfg = NULL;
    ksf_client *cli = NULL;
    ksf_errinfo ei = {0};
    if (ksf_config_new(&cfg)) {
        return 1;
    }
    ksf_config_set_log(cfg, ksf_log_stderr, NULL, KSF_LOG_ERROR);
    if (ksf_config_set_from_args(cfg, &argc, argv, &ei)) { /* --brokers, --set */
        fprintf(stderr, "goodput: %s\n", ei.text);
        return 2;
    }
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "--rate")) {
            rate = atof(v);
        } else if (!strcmp(f, "--seconds")) {
            seconds = atof(v);
        } else if (!strcmp(f, "--timeout-ms")) {
            timeout_ms = atoi(v);
        } else {
            return usage();
        }
    }
    if (rate <= 0 || seconds <= 0 || timeout_ms <= 0 || argc % 2 == 0) {
        return usage();
    }
    if (ksf_client_new(&cli, cfg, &ei) ||
        ksf_client_subscribe_to_response_of(cli, "bench.echo", &ei) ||
        ksf_client_connect(cli, 60000, &ei)) {
        fprintf(stderr, "goodput: %s\n", ei.text);
        return 4;
    }
    json_t *v = json_pack("{s:s, s:i}", "hero", "bench", "n", 42);
    ksf_send_opts o = {.timeout_ms = timeout_ms};
    unsigned long sent = 0, refused = 0;
    int64_t start = ksf_tool_mono_ms(), end = start + (int64_t)(seconds * 1000);
    for (int64_t t = start; t < end; t = ksf_tool_mono_ms()) {
        unsigned long due = (unsigned long)((double)(t - start) * rate / 1000.0) + 1;
        for (; sent < due; sent++) {
            if (ksf_client_send(cli, "bench.echo", v, &o, on_reply, NULL, &ei)) {
                refused++; /* counted as sent and failed */
                atomic_fetch_add(&other, 1);
                atomic_fetch_add(&done, 1);
            }
        }
        ksf_tool_sleep_ms(1); /* pacing the open loop, 1 ms ticks */
    }
    double sending_s = (double)(ksf_tool_mono_ms() - start) / 1000.0;
    int64_t until = ksf_tool_mono_ms() + timeout_ms + 5000;
    while (atomic_load(&done) < sent && ksf_tool_mono_ms() < until) {
        ksf_tool_sleep_ms(10);
    }
    printf("{\"rate\": %.0f, \"seconds\": %.1f, \"timeout_ms\": %d, \"sent\": %lu, "
           "\"on_time\": %lu, \"shed\": %lu, \"timeouts\": %lu, \"other\": %lu, "
           "\"refused_sends\": %lu, \"unfinished\": %lu, \"on_time_per_s\": %.1f}\n",
           rate, sending_s, timeout_ms, sent, atomic_load(&on_time), atomic_load(&shed),
           atomic_load(&timeouts), atomic_load(&other), refused,
           sent - atomic_load(&done), (double)atomic_load(&on_time) / sending_s);
    json_decref(v);
    ksf_client_destroy(cli);
    ksf_config_destroy(cfg);
    return 0;
}
