/*
 * ksf call / ksf emit: grpcurl for ksf. Send one request (or event) to a pattern from
 * the command line and print what comes back.
 */
#include "commands.h"
#include "flags.h"

#include <ksf/ksf.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Exit codes (documented in --help and docs/client.md). */
enum {
    EXIT_OK = 0,
    EXIT_REMOTE = 1,                  /* the handler answered with an error */
    EXIT_USAGE = KSF_TOOL_EXIT_USAGE, /* bad flags, pattern or configuration */
    EXIT_TIMEOUT = 3,                 /* no reply (or delivery report) in time */
    EXIT_KAFKA = 4, /* brokers unreachable, no reply partition, Kafka errors */
};

typedef struct call_opts {
    bool emit;
    const char *pattern;
    const char *json; /* NULL: a null value; "-": stdin */
    int timeout_ms;
    const char *key;
    json_t *headers;
    ksf_config *cfg;
    bool verbose;
    bool raw; /* --raw: JSON is text, sent as it is */
} call_opts;

static void
usage(FILE *out, bool emit)
{
    const char *cmd = emit ? "emit" : "call";
    fprintf(out,
            "Usage: ksf %s PATTERN [JSON|-] [OPTIONS]\n\n"
            "%s\n\n"
            "JSON must be valid JSON (objects, arrays, numbers, \"strings\",\n"
            "true/false/null); anything else is refused (exit 2) unless --raw is given,\n"
            "which sends the text as it is (a NestJS handler sees a string). '-' reads\n"
            "stdin. Without JSON the message has a null value.\n\n"
            "Options:\n"
            "%s"
            "  --timeout-ms N     %s (default 30000)\n"
            "  --key K            message key\n"
            "  --header K=V       extra header (repeatable; kafka_* names are reserved)\n"
            "  --raw              send JSON's text as it is, not parsed\n"
            "  -v, --verbose      log ksf and librdkafka messages (debug level, one\n"
            "                     line per message) and a summary line to stderr;\n"
            "                     KSF_LOG=level[,text|logfmt|json] also sets logging\n"
            "  -h, --help         this text\n\n"
            "Exit status:\n"
            "  0  success%s\n"
            "  1  the remote handler answered with an error (error JSON on stderr)\n"
            "  2  usage error: bad flag, pattern, JSON or configuration value\n"
            "  3  timeout: %s\n"
            "  4  Kafka or connection error (brokers unreachable, no reply partition)\n"
            "\nReplies come to client.reply.partition (0) unless --set\n"
            "client.reply.provider=group.\n",
            cmd,
            emit ? "Emit an event to PATTERN (no reply) and wait for the broker's ack."
                 : "Send a request to PATTERN and print the reply JSON on stdout\n"
                   "(a streamed reply prints one value per line).",
            ksf_config_args_help(),
            emit ? "how long to wait for the delivery report" : "request timeout",
            emit ? " (the broker acknowledged the event)" : " (reply printed)",
            emit ? "no delivery report in time" : "no reply in time");
}

/* --header NAME=VALUE */
static int
add_header(call_opts *o, const char *cmd, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) {
        return ksf_tool_usage_error(cmd, "--header \"%s\": expected NAME=VALUE", kv);
    }
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
    if (!o->headers) {
        o->headers = json_object();
    }
    json_object_set_new(o->headers, key, json_string(eq + 1));
    return EXIT_OK;
}

/* Parse flags and positionals into @p o; returns an exit code, or -1 to go on. */
static int
parse_args(int argc, char **argv, call_opts *o)
{
    const char *cmd = argv[0];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int rc = EXIT_OK;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout, o->emit);
            return EXIT_OK;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose = true;
        } else if (!strcmp(a, "--raw")) {
            o->raw = true;
        } else if ((v = ksf_tool_flag_value(argc, argv, &i, "--timeout-ms"))) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n <= 0 || n > 86400000) {
                return ksf_tool_usage_error(
                    cmd, "--timeout-ms \"%s\": expected 1..86400000", v);
            }
            o->timeout_ms = (int)n;
        } else if ((v = ksf_tool_flag_value(argc, argv, &i, "--key"))) {
            o->key = v;
        } else if ((v = ksf_tool_flag_value(argc, argv, &i, "--header"))) {
            rc = add_header(o, cmd, v);
        } else if (a[0] == '-' && a[1] != '\0') {
            return ksf_tool_usage_error(cmd, "unknown option or missing value: %s", a);
        } else if (npos == 0) {
            o->pattern = a;
            npos++;
        } else if (npos == 1) {
            o->json = a;
            npos++;
        } else {
            return ksf_tool_usage_error(cmd, "unexpected argument \"%s\"", a);
        }
        if (rc) {
            return rc;
        }
    }
    if (!o->pattern) {
        return ksf_tool_usage_error(cmd, "%s", "missing PATTERN");
    }
    return ksf_tool_check_pattern(cmd, o->pattern) ? KSF_TOOL_EXIT_USAGE : -1;
}

/* Read all of stdin; NULL on failure. */
static char *
read_stdin(void)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, stdin);
        len += n;
        if (n == 0) {
            break;
        }
        if (len + 1 == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                return NULL;
            }
            buf = b;
        }
    }
    if (buf) {
        buf[len] = '\0';
    }
    return buf;
}

/* The payload: @p text as JSON (as a string with --raw); NULL text: null. Invalid JSON
 * is a usage error: sending it as a string silently hid typos like {id:1}. Returns
 * NULL after printing the error. */
static json_t *
payload(const char *cmd, const char *text, bool raw)
{
    if (!text) {
        return json_null();
    }
    char *in = !strcmp(text, "-") ? read_stdin() : NULL;
    if (!strcmp(text, "-") && !in) {
        ksf_tool_usage_error(cmd, "%s", "cannot read the payload from stdin");
        return NULL;
    }
    const char *s = in ? in : text;
    json_t *v = NULL;
    if (raw) {
        size_t n = strlen(s);
        while (in && n && (in[n - 1] == '\n' || in[n - 1] == '\r')) {
            in[--n] = '\0'; /* `echo text | ksf call p - --raw` sends "text" */
        }
        v = json_string(s);
    } else {
        json_error_t err;
        v = json_loads(s, JSON_DECODE_ANY, &err);
        if (!v) {
            ksf_tool_usage_error(
                cmd,
                "the payload is not valid JSON (%s, at line %d column %d); "
                "quote a string as '\"%.40s\"', or pass --raw to send the text "
                "as it is",
                err.text, err.line, err.column, s);
        }
    }
    free(in);
    return v;
}

/* ---- call -------------------------------------------------------------------------- */

typedef struct call_state {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    ksf_err err;
    char text[KSF_ERRINFO_TEXT_SIZE];
} call_state;

static void
print_value(FILE *out, const ksf_reply *r)
{
    if (r->value) {
        char *s =
            json_dumps(r->value, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        fprintf(out, "%s\n", s ? s : "");
        free(s);
    } else if (r->raw) {
        fwrite(r->raw, 1, r->raw_len, out); /* binary reply: the bytes as they came */
        fputc('\n', out);
    }
    fflush(out);
}

static void
on_reply(const ksf_reply *r, void *user)
{
    call_state *st = user;
    if (r->err == KSF_OK) {
        print_value(stdout, r);
    } else if (r->err == KSF_EREMOTE) {
        print_value(stderr, r);
    }
    if (!r->done) {
        return;
    }
    pthread_mutex_lock(&st->m);
    st->err = r->err;
    snprintf(st->text, sizeof st->text, "%s", r->text ? r->text : "");
    st->done = true;
    pthread_cond_signal(&st->c);
    pthread_mutex_unlock(&st->m);
}

static void
on_emitted(ksf_err err, const char *text, void *user)
{
    call_state *st = user;
    pthread_mutex_lock(&st->m);
    st->err = err;
    snprintf(st->text, sizeof st->text, "%s", text ? text : "");
    st->done = true;
    pthread_cond_signal(&st->c);
    pthread_mutex_unlock(&st->m);
}

static int
exit_code(ksf_err e)
{
    switch (e) {
    case KSF_OK:
        return EXIT_OK;
    case KSF_EREMOTE:
        return EXIT_REMOTE;
    case KSF_ETIMEDOUT:
        return EXIT_TIMEOUT;
    case KSF_EINVAL:
    case KSF_EMSGSIZE:
    case KSF_ENOENT:
        return EXIT_USAGE;
    default:
        return EXIT_KAFKA;
    }
}

static long long
ms_between(const struct timespec *a, const struct timespec *b)
{
    return (long long)(b->tv_sec - a->tv_sec) * 1000 +
           (b->tv_nsec - a->tv_nsec) / 1000000;
}

/* Send (or emit) and wait for the outcome; returns the exit code. */
static int
run(call_opts *o, ksf_client *cli, json_t *data, call_state *st)
{
    const char *cmd = o->emit ? "emit" : "call";
    ksf_errinfo ei = {0};
    ksf_send_opts so = {.timeout_ms = o->timeout_ms,
                        .key = o->key,
                        .key_len = o->key ? strlen(o->key) : 0,
                        .headers = o->headers,
                        .flags = KSF_SEND_STREAM};
    struct timespec t0, connected, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* Reach the brokers and the reply partition first, so "unreachable" or "no reply
     * partition" (4) are not reported as a timeout (3). */
    ksf_err e =
        o->emit ? KSF_OK : ksf_client_subscribe_to_response_of(cli, o->pattern, &ei);
    if (!e) {
        e = ksf_client_connect(cli, o->timeout_ms, &ei);
    }
    clock_gettime(CLOCK_MONOTONIC, &connected);
    if (!e) {
        e = o->emit ? ksf_client_emit(cli, o->pattern, data, &so, on_emitted, st, &ei)
                    : ksf_client_send(cli, o->pattern, data, &so, on_reply, st, &ei);
    }
    if (e) {
        fprintf(stderr, "ksf %s: %s\n", cmd, ei.text);
        return e == KSF_ETIMEDOUT ? EXIT_KAFKA : exit_code(e);
    }
    /* A request always ends by its deadline; an event's delivery report may not (the
     * producer retries for message.timeout.ms), so wait for it only as long as asked. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += o->timeout_ms / 1000;
    until.tv_nsec += (long)(o->timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&st->m);
    while (!st->done) {
        if (o->emit && pthread_cond_timedwait(&st->c, &st->m, &until) != 0) {
            break;
        } else if (!o->emit) {
            pthread_cond_wait(&st->c, &st->m);
        }
    }
    bool done = st->done;
    ksf_err err = st->err;
    pthread_mutex_unlock(&st->m);
    if (o->verbose) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        fprintf(stderr, "ksf %s: %s: %s after %lld ms (%lld ms connecting)\n", cmd,
                o->pattern,
                !done  ? "no outcome"
                : !err ? (o->emit ? "acknowledged" : "answered")
                       : ksf_strerror(err),
                ms_between(&t0, &now), ms_between(&t0, &connected));
    }
    if (!done) {
        fprintf(stderr, "ksf %s: timed out: no delivery report within %d ms\n", cmd,
                o->timeout_ms);
        return EXIT_TIMEOUT;
    }
    if (err && err != KSF_EREMOTE) {
        fprintf(stderr, "ksf %s: %s: %s\n", cmd, ksf_strerror(err), st->text);
    }
    return exit_code(err);
}

static int
call_main(int argc, char **argv, bool emit)
{
    call_opts o = {.emit = emit, .timeout_ms = 30000};
    /* Outlives the client: a late delivery report may still arrive during destroy. */
    call_state st = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    ksf_errinfo ei = {0};
    ksf_client *cli = NULL;
    json_t *data = NULL;
    int rc;
    if (ksf_config_new(&o.cfg) != KSF_OK) {
        fprintf(stderr, "ksf %s: out of memory\n", argv[0]);
        return EXIT_KAFKA;
    }
    /* A one-shot call needs no reply group: joining one costs seconds and makes the
     * group's long-lived members rebalance. --set client.reply.provider=group wins. */
    ksf_config_set(o.cfg, "client.reply.provider", "static", NULL);
    if ((rc = ksf_tool_configure(argv[0], o.cfg, &argc, argv)) >= 0 ||
        (rc = parse_args(argc, argv, &o)) >= 0) {
        goto done;
    }
    if (o.verbose) { /* else silent, or what KSF_LOG says */
        ksf_config_set_log(o.cfg, ksf_log_stderr, NULL, KSF_LOG_DEBUG);
        ksf_config_set_log_structured(o.cfg, NULL, NULL, KSF_LOG_DEBUG);
    }
    if (!(data = payload(argv[0], o.json, o.raw))) {
        rc = EXIT_USAGE;
        goto done;
    }
    if (ksf_client_new(&cli, o.cfg, &ei) != KSF_OK) {
        fprintf(stderr, "ksf %s: %s\n", argv[0], ei.text);
        rc = exit_code(ei.code);
        goto done;
    }
    rc = run(&o, cli, data, &st);
done:
    ksf_client_destroy(cli);
    json_decref(data);
    json_decref(o.headers);
    ksf_config_destroy(o.cfg);
    return rc;
}

int
ksf_cmd_call(int argc, char **argv)
{
    return call_main(argc, argv, false);
}

int
ksf_cmd_emit(int argc, char **argv)
{
    return call_main(argc, argv, true);
}
