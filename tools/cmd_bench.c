/*
 * ksf bench: ghz for ksf. Keep C requests (or events) in flight against a pattern for
 * a count or a duration, then report the latency distribution and the rate.
 *
 * Each finished request starts the next one from its reply callback, so the client
 * never has more than C requests in flight and no extra thread hop sits between a
 * reply and the next request.
 */
#include "commands.h"
#include "flags.h"
#include "measure.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ksf/ksf.h>

enum {
    EXIT_OK = 0,
    EXIT_FAILED = 1, /* some requests failed or timed out */
    EXIT_USAGE = KSF_TOOL_EXIT_USAGE,
    EXIT_KAFKA = 4,         /* could not connect or create the client */
    EXIT_INTERRUPTED = 130, /* SIGINT or SIGTERM: the report covers what was measured */
};

/* After an interrupt, how long lanes may take to bring their requests home. */
#define DRAIN_MS 2000

/* Set by SIGINT/SIGTERM while the lanes run. */
static volatile sig_atomic_t interrupted;

static void
on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

#define MAX_CONCURRENCY 100000
#define CONNECT_TIMEOUT_MS 30000

typedef struct bench_opts {
    const char *pattern;
    const char *json;
    long count;        /* 0: use duration */
    double duration_s; /* 0: use count */
    int concurrency;
    int timeout_ms;
    bool timeout_given; /* --timeout-ms was given: events carry it as their deadline */
    double idle_s;      /* stay connected and idle this long after the report */
    bool emit;
    bool raw_reply; /* KSF_SEND_RAW_REPLY, the payload sent as bytes encoded once */
    bool raw_value; /* the payload sent as bytes encoded once (implied by raw_reply) */
    bool json_out;
    bool prometheus;
    bool verbose;
    ksf_config *cfg;
} bench_opts;

typedef struct bench bench;

/* One in-flight lane: a request at a time, reissued when its reply arrives. */
typedef struct lane {
    bench *b;
    int64_t start_ns;
} lane;

struct bench {
    const bench_opts *o;
    ksf_client *cli;
    json_t *data;
    char *raw; /* --raw-value: the payload's bytes (NULL: a null payload, sent as data) */
    size_t raw_len;
    lane *lanes;
    int64_t t0_ns, end_ns; /* run start; for --duration the time to stop issuing */
    int64_t first_done_ns; /* first completion, for the cold-start figure */
    double cpu_ms;         /* this process's CPU time during the run */
    pthread_mutex_t m;     /* guards everything below */
    pthread_cond_t c;      /* a lane stopped */
    long issued, done, ok, errors, timeouts;
    bool stopping;    /* interrupted: lanes stop as their requests come back */
    int active;       /* lanes with a request in flight */
    uint32_t *lat_us; /* one latency per completion */
    size_t nlat, caplat;
    char first_error[KSF_ERRINFO_TEXT_SIZE + 64]; /* "<error name>: <text>" */
};

static void
usage(FILE *out)
{
    fprintf(
        out,
        "Usage: ksf bench PATTERN [JSON|-] (--count N | --duration S) [OPTIONS]\n\n"
        "Keep --concurrency requests in flight to PATTERN and report count, ok,\n"
        "errors, timeouts, p50/p90/p99/max latency (microseconds) and requests/s.\n"
        "A progress line goes to stderr once a second. JSON is parsed as in ksf call.\n\n"
        "Options:\n"
        "  --count N          send N requests in all\n"
        "  --duration S       send for S seconds (fractions allowed), then wait for\n"
        "                     the requests still in flight\n"
        "  --concurrency C    requests in flight at once, 1..%d (default 1)\n"
        "  --emit             emit events instead; latency is the broker's ack\n"
        "  --raw-reply        take replies undecoded (KSF_SEND_RAW_REPLY) and send the\n"
        "                     payload as bytes encoded once (opts.raw_value): what a\n"
        "                     service forwarding JSON text pays, without jansson trees\n"
        "  --raw-value        send the payload as bytes encoded once (opts.raw_value),\n"
        "                     for requests and events (--raw-reply implies it)\n"
        "%s"
        "  --timeout-ms N     per-request timeout (default 30000); events carry a\n"
        "                     deadline (ksf_deadline) only when it is given, as\n"
        "                     ksf_client_emit does without opts.timeout_ms\n"
        "  --json             make the last stdout line one JSON object: count, ok,\n"
        "                     errors, timeouts, p50_us, p90_us, p99_us, max_us, rps,\n"
        "                     elapsed_s, connect_ms, first_reply_ms, cpu_ms,\n"
        "                     peak_rss_kb\n"
        "  --prometheus       after the report, print the client's metrics in the\n"
        "                     Prometheus text format (before the --json line)\n"
        "  -v, --verbose      log ksf and librdkafka messages to stderr\n"
        "  -h, --help         this text\n\n"
        "first_reply_ms counts from process start when the environment variable\n"
        "KSF_BENCH_T0_US holds the wall-clock start in microseconds (set by harnesses\n"
        "such as bench/run), else from the start of ksf bench's main.\n\n"
        "Exit status: 0 every request succeeded, 1 some failed or timed out,\n"
        "2 usage error, 4 client creation or connection failed, 130 interrupted\n"
        "(SIGINT or SIGTERM while running: the report covers what was measured, plus\n"
        "what came back within 2 s).\n",
        MAX_CONCURRENCY, ksf_config_args_help());
}

/* The subcommand's usage errors all start "ksf bench: ". */
#define usage_error(...) ksf_tool_usage_error("bench", __VA_ARGS__)

static bool
parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

/* One flag or positional at argv[*i]; returns an exit code, or -1 to go on. */
static int
parse_one(int argc, char **argv, int *i, bench_opts *o, int *npos)
{
    const char *a = argv[*i], *v;
    long n;
    if (!strcmp(a, "--emit")) {
        o->emit = true;
    } else if (!strcmp(a, "--raw-reply")) {
        o->raw_reply = o->raw_value = true;
    } else if (!strcmp(a, "--raw-value")) {
        o->raw_value = true;
    } else if (!strcmp(a, "--json")) {
        o->json_out = true;
    } else if (!strcmp(a, "--prometheus")) {
        o->prometheus = true;
    } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
        o->verbose = true;
    } else if ((v = ksf_tool_flag_value(argc, argv, i, "--count"))) {
        if (!parse_long(v, 1, 1000000000L, &o->count)) {
            return usage_error("--count \"%s\": expected 1..1000000000", v);
        }
    } else if ((v = ksf_tool_flag_value(argc, argv, i, "--duration"))) {
        char *end;
        o->duration_s = strtod(v, &end);
        if (!*v || *end || !(o->duration_s > 0 && o->duration_s <= 86400)) {
            return usage_error("--duration \"%s\": expected seconds, 0 < S <= 86400", v);
        }
    } else if ((v = ksf_tool_flag_value(argc, argv, i, "--idle"))) {
        char *end;
        o->idle_s = strtod(v, &end);
        if (!*v || *end || !(o->idle_s >= 0 && o->idle_s <= 86400)) {
            return usage_error("--idle \"%s\": expected seconds, 0 <= S <= 86400", v);
        }
    } else if ((v = ksf_tool_flag_value(argc, argv, i, "--concurrency"))) {
        if (!parse_long(v, 1, MAX_CONCURRENCY, &n)) {
            return usage_error("--concurrency \"%s\": expected 1..%d", v,
                               MAX_CONCURRENCY);
        }
        o->concurrency = (int)n;
    } else if ((v = ksf_tool_flag_value(argc, argv, i, "--timeout-ms"))) {
        if (!parse_long(v, 1, 86400000L, &n)) {
            return usage_error("--timeout-ms \"%s\": expected 1..86400000", v);
        }
        o->timeout_ms = (int)n;
        o->timeout_given = true;
    } else if (a[0] == '-' && a[1] != '\0') {
        return usage_error("unknown option or missing value: %s", a);
    } else if (*npos < 2) {
        *(*npos == 0 ? &o->pattern : &o->json) = a;
        ++*npos;
    } else {
        return usage_error("unexpected argument \"%s\"", a);
    }
    return -1;
}

static int
parse_args(int argc, char **argv, bench_opts *o)
{
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return EXIT_OK;
        }
        int rc = parse_one(argc, argv, &i, o, &npos);
        if (rc >= 0) {
            return rc;
        }
    }
    if (!o->pattern) {
        return usage_error("missing PATTERN");
    }
    if (ksf_tool_check_pattern("bench", o->pattern)) {
        return EXIT_USAGE;
    }
    if ((o->count > 0) == (o->duration_s > 0)) {
        return usage_error("give exactly one of --count N and --duration S");
    }
    if (o->raw_reply && o->emit) {
        return usage_error("--raw-reply is for requests: an event has no reply");
    }
    if (o->count > 0 && o->concurrency > o->count) {
        o->concurrency = (int)o->count; /* more lanes than requests would idle */
    }
    return -1;
}

/* The payload: JSON when it parses, else the text as a string; NULL text: null. */
static json_t *
payload(const char *text)
{
    if (!text) {
        return json_null();
    }
    json_t *v = !strcmp(text, "-") ? json_loadf(stdin, JSON_DECODE_ANY, NULL)
                                   : json_loads(text, JSON_DECODE_ANY, NULL);
    return v ? v : json_string(text);
}

/* The payload's bytes as ksf would encode them (NestJS's rules: a string raw, anything
 * else as compact JSON text), once, for --raw-value; a null payload stays NULL. */
static bool
payload_bytes(bench *b)
{
    if (json_is_null(b->data)) {
        return true;
    }
    b->raw = json_is_string(b->data)
                 ? strdup(json_string_value(b->data))
                 : json_dumps(b->data, JSON_COMPACT | JSON_ENCODE_ANY);
    b->raw_len = b->raw ? strlen(b->raw) : 0;
    return b->raw != NULL;
}

/* ---- the run ---------------------------------------------------------------------- */

static void issue(lane *l);

/* Record one completion and decide whether the lane goes on; returns true if so. */
static bool
record(bench *b, lane *l, ksf_err err, const char *text)
{
    int64_t now = ksf_tool_mono_ns();
    uint64_t us = (uint64_t)(now - l->start_ns) / 1000;
    pthread_mutex_lock(&b->m);
    b->done++;
    if (err == KSF_OK) {
        b->ok++;
    } else if (err == KSF_ETIMEDOUT) {
        b->timeouts++;
    } else {
        b->errors++;
    }
    if (err != KSF_OK && !b->first_error[0]) {
        snprintf(b->first_error, sizeof b->first_error, "%s: %s", ksf_strerror(err),
                 text && *text ? text : "(no details)");
    }
    if (!b->first_done_ns) {
        b->first_done_ns = now;
    }
    if (b->nlat < b->caplat) {
        b->lat_us[b->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    }
    bool more = !b->stopping && (b->o->count ? b->issued < b->o->count : now < b->end_ns);
    if (more) {
        b->issued++;
    } else {
        b->active--;
        b->end_ns = now > b->end_ns ? now : b->end_ns;
        pthread_cond_signal(&b->c);
    }
    pthread_mutex_unlock(&b->m);
    return more;
}

static void
on_reply(const ksf_reply *r, void *user)
{
    lane *l = user;
    if (r->done && record(l->b, l, r->err, r->text)) {
        issue(l);
    }
}

static void
on_emitted(ksf_err err, const char *text, void *user)
{
    lane *l = user;
    if (record(l->b, l, err, text)) {
        issue(l);
    }
}

/* Start the lane's next request; a refused send counts as a failed request. */
static void
issue(lane *l)
{
    bench *b = l->b;
    ksf_errinfo ei; /* set by a failing call; not zeroed per request (320 bytes) */
    ei.text[0] = '\0';
    /* An event gets a deadline only when asked for one (ksf_client_emit's default is
     * none, as NestJS's emit): it would add a ksf_deadline header to every event. */
    ksf_send_opts so = {.timeout_ms =
                            !b->o->emit || b->o->timeout_given ? b->o->timeout_ms : 0};
    if (b->o->raw_reply) {
        so.flags = KSF_SEND_RAW_REPLY;
    }
    if (b->o->raw_value) {
        so.raw_value = b->raw;
        so.raw_len = b->raw_len;
    }
    for (;;) {
        l->start_ns = ksf_tool_mono_ns();
        ksf_err e =
            b->o->emit
                ? ksf_client_emit(b->cli, b->o->pattern, b->data, &so, on_emitted, l, &ei)
                : ksf_client_send(b->cli, b->o->pattern, b->data, &so, on_reply, l, &ei);
        if (e == KSF_OK || !record(b, l, e, ei.text)) {
            return;
        }
    }
}

/* Grow the latency array to @p n entries up front: no allocation while measuring. */
static bool
reserve_latencies(bench *b, size_t n)
{
    b->lat_us = malloc(n * sizeof *b->lat_us);
    b->caplat = b->lat_us ? n : 0;
    return b->lat_us != NULL;
}

static void
progress(bench *b, bool tty, bool last)
{
    double s = (double)(ksf_tool_mono_ns() - b->t0_ns) / 1e9;
    fprintf(stderr, "%s[%5.1fs] %ld done, %ld ok, %ld errors, %ld timeouts, %.0f/s%s",
            tty ? "\r" : "", s, b->done, b->ok, b->errors, b->timeouts,
            s > 0 ? (double)b->done / s : 0.0, tty && !last ? "   " : "\n");
    fflush(stderr);
}

/* Issue the first request of every lane, then wait for all lanes to stop. */
static void
run_lanes(bench *b)
{
    bool tty = isatty(STDERR_FILENO);
    pthread_mutex_lock(&b->m);
    b->t0_ns = ksf_tool_mono_ns();
    b->end_ns = b->o->count ? 0 : b->t0_ns + (int64_t)(b->o->duration_s * 1e9);
    b->active = b->o->concurrency;
    b->issued = b->o->concurrency;
    pthread_mutex_unlock(&b->m);
    for (int i = 0; i < b->o->concurrency; i++) {
        b->lanes[i].b = b;
        issue(&b->lanes[i]);
    }
    pthread_mutex_lock(&b->m);
    int64_t next_progress = ksf_tool_mono_ns() + 1000000000, drain_until = 0;
    while (b->active > 0) {
        if (interrupted && !b->stopping) {
            /* Stop issuing; what comes back within DRAIN_MS is counted too. */
            b->stopping = true;
            b->end_ns = ksf_tool_mono_ns();
            drain_until = b->end_ns + (int64_t)DRAIN_MS * 1000000;
            fprintf(stderr,
                    "\nksf bench: interrupted after %.1f s; waiting up to %d ms for the "
                    "%d request(s) in flight, then reporting\n",
                    (double)(b->end_ns - b->t0_ns) / 1e9, DRAIN_MS, b->active);
        }
        if (b->stopping && ksf_tool_mono_ns() >= drain_until) {
            fprintf(stderr,
                    "ksf bench: %d request(s) still in flight are not in the report\n",
                    b->active);
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&b->c, &b->m, &ts);
        if (ksf_tool_mono_ns() >= next_progress) {
            progress(b, tty, false);
            next_progress += 1000000000;
        }
    }
    if (tty) {
        progress(b, tty, true);
    }
    pthread_mutex_unlock(&b->m);
}

static void
report(bench *b, double connect_ms, double first_ms)
{
    qsort(b->lat_us, b->nlat, sizeof *b->lat_us, ksf_tool_cmp_u32);
    double elapsed = (double)(b->end_ns - b->t0_ns) / 1e9;
    double rps = elapsed > 0 ? (double)b->done / elapsed : 0;
    uint32_t p50 = ksf_tool_percentile(b->lat_us, b->nlat, 0.50);
    uint32_t p90 = ksf_tool_percentile(b->lat_us, b->nlat, 0.90);
    uint32_t p99 = ksf_tool_percentile(b->lat_us, b->nlat, 0.99);
    uint32_t max = ksf_tool_percentile(b->lat_us, b->nlat, 1.0);
    printf("%s %s, concurrency %d\n"
           "  count     %ld\n  ok        %ld\n  errors    %ld\n  timeouts  %ld\n"
           "  latency   p50 %u us, p90 %u us, p99 %u us, max %u us\n"
           "  rate      %.0f %s/s over %.3f s\n",
           b->o->emit ? "emit" : "send", b->o->pattern, b->o->concurrency, b->done, b->ok,
           b->errors, b->timeouts, p50, p90, p99, max, rps,
           b->o->emit ? "events" : "requests", elapsed);
    if (b->first_error[0]) {
        printf("  first error: %s\n", b->first_error);
    }
    if (b->o->prometheus) {
        fflush(stdout);
        ksf_client_write_prometheus(b->cli, stdout);
    }
    if (b->o->json_out) {
        printf("{\"pattern\":\"%s\",\"mode\":\"%s\",\"concurrency\":%d,\"count\":%ld,"
               "\"ok\":%ld,\"errors\":%ld,\"timeouts\":%ld,\"p50_us\":%u,\"p90_us\":%u,"
               "\"p99_us\":%u,\"max_us\":%u,\"rps\":%.1f,\"elapsed_s\":%.3f,"
               "\"connect_ms\":%.1f,\"first_reply_ms\":%.1f,\"cpu_ms\":%.1f,"
               "\"peak_rss_kb\":%ld}\n",
               b->o->pattern, b->o->emit ? "emit" : "send", b->o->concurrency, b->done,
               b->ok, b->errors, b->timeouts, p50, p90, p99, max, rps, elapsed,
               connect_ms, first_ms, b->cpu_ms, ksf_tool_peak_rss_kb());
    }
    fflush(stdout);
}

/* Connect, run, report; returns the exit code. */
static int
bench_run(bench *b, int64_t start_us)
{
    ksf_errinfo ei = {0};
    int64_t c0 = ksf_tool_mono_ns();
    /* Both clocks read together: process start is c0 minus (c0_real_us - start_us). */
    int64_t c0_real_us = ksf_tool_real_us();
    ksf_err e = KSF_OK;
    if (!b->o->emit) {
        e = ksf_client_subscribe_to_response_of(b->cli, b->o->pattern, &ei);
    }
    if (!e) {
        e = ksf_client_connect(b->cli, CONNECT_TIMEOUT_MS, &ei);
    }
    if (e) {
        fprintf(stderr, "ksf bench: %s\n", ei.text);
        return e == KSF_EINVAL ? EXIT_USAGE : EXIT_KAFKA;
    }
    double connect_ms = (double)(ksf_tool_mono_ns() - c0) / 1e6;
    size_t want = b->o->count ? (size_t)b->o->count : 1u << 22;
    if (!(b->lanes = calloc((size_t)b->o->concurrency, sizeof *b->lanes)) ||
        !reserve_latencies(b, want)) {
        fprintf(stderr, "ksf bench: out of memory\n");
        return EXIT_KAFKA;
    }
    int64_t start_mono_ns = c0 - (c0_real_us - start_us) * 1000;
    fprintf(stderr, "ksf bench: connected in %.1f ms; running\n", connect_ms);
    double cpu0 = ksf_tool_cpu_ms();
    struct sigaction sa = {.sa_handler = on_interrupt}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int); /* during the run only: a report is due then */
    sigaction(SIGTERM, &sa, &old_term);
    CALLGRIND_START_INSTRUMENTATION;
    run_lanes(b);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    b->cpu_ms = ksf_tool_cpu_ms() - cpu0;
    pthread_mutex_lock(&b->m); /* after an interrupt, late replies may still come */
    bool stopped = b->stopping;
    report(b, connect_ms, (double)(b->first_done_ns - start_mono_ns) / 1e6);
    pthread_mutex_unlock(&b->m);
    if (stopped) {
        return EXIT_INTERRUPTED;
    }
    if (b->o->idle_s > 0) {
        struct timespec ts = {
            (time_t)b->o->idle_s,
            (long)((b->o->idle_s - (double)(time_t)b->o->idle_s) * 1e9)};
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
    return b->ok == b->done ? EXIT_OK : EXIT_FAILED;
}

/* Wall-clock process start from KSF_BENCH_T0_US, else now. */
static int64_t
start_time_us(void)
{
    const char *s = getenv("KSF_BENCH_T0_US");
    char *end;
    long long v = s ? strtoll(s, &end, 10) : 0;
    return s && *s && !*end && v > 0 ? (int64_t)v : ksf_tool_real_us();
}

int
ksf_cmd_bench(int argc, char **argv)
{
    int64_t start_us = start_time_us();
    bench_opts o = {.concurrency = 1, .timeout_ms = 30000};
    bench b = {.o = &o, .m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    ksf_errinfo ei = {0};
    int rc;
    char inflight[16];
    if (ksf_config_new(&o.cfg) != KSF_OK) {
        fprintf(stderr, "ksf bench: out of memory\n");
        return EXIT_KAFKA;
    }
    if ((rc = ksf_tool_configure("bench", o.cfg, &argc, argv)) >= 0 ||
        (rc = parse_args(argc, argv, &o)) >= 0) {
        goto done;
    }
    /* Room for every lane, unless the user asked for a limit explicitly. */
    if (ksf_config_get(o.cfg, "client.max.in.flight", inflight, sizeof inflight) ==
            KSF_OK &&
        atol(inflight) < o.concurrency) {
        snprintf(inflight, sizeof inflight, "%d", o.concurrency);
        ksf_config_set(o.cfg, "client.max.in.flight", inflight, NULL);
    }
    if (o.verbose) { /* else silent, or what KSF_LOG says */
        ksf_config_set_log(o.cfg, ksf_log_stderr, NULL, KSF_LOG_INFO);
    }
    if (!(b.data = payload(o.json))) {
        rc = usage_error("cannot read the payload");
        goto done;
    }
    if (o.raw_value && !payload_bytes(&b)) {
        fprintf(stderr, "ksf bench: out of memory\n");
        rc = EXIT_KAFKA;
        goto done;
    }
    if (ksf_client_new(&b.cli, o.cfg, &ei) != KSF_OK) {
        fprintf(stderr, "ksf bench: %s\n", ei.text);
        rc = ei.code == KSF_EINVAL ? EXIT_USAGE : EXIT_KAFKA;
        goto done;
    }
    rc = bench_run(&b, start_us);
done:
    ksf_client_destroy(b.cli);
    json_decref(b.data);
    free(b.raw);
    free(b.lanes);
    free(b.lat_us);
    ksf_config_destroy(o.cfg);
    return rc;
}
