/*
 * The floor: the least a request/reply pair over librdkafka can do, written by hand
 * with the same wire headers as ksf and NestJS. bench/run compares ksf against it.
 *
 *   floor server BROKERS [--work-ns N] [--set PROP=VALUE]...
 *       consume bench.echo (group floor-server) and answer each request with its own
 *       value on kafka_replyTopic/kafka_replyPartition; prints "floor server ready";
 *       SIGUSR1 prints its CPU time and requests answered so far (cpu_report.h).
 *   floor client BROKERS (--count N | --duration S) [--concurrency C] [--emit]
 *                [--work-ns N] [--set PROP=VALUE]...
 *       keep C requests to bench.echo in flight (replies on bench.echo.reply [0]),
 *       or with --emit C events to bench.event, and print ksf bench's JSON line.
 *
 * One thread each, no allocation per message beyond librdkafka's own, correlation ids
 * that name their lane so a reply is matched without a lookup, ksf's librdkafka
 * settings (see make()). --set applies a librdkafka property to every handle (bench/run
 * sets fetch.wait.max.ms and its batching settings there).
 *
 * --work-ns N adds N ns of busy work (a loop on the monotonic clock) to every request
 * the server answers or every reply the client takes, on the thread that handles it:
 * a measuring tool, not part of the floor. It shows how much a side's cost per message
 * moves requests/s (docs/benchmarks.md, "What 256 in flight on Kafka is bound by").
 */
#include "../framework/codec/wire.h"
#include "../tools/measure.h"
#include "cpu_report.h"

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REQUEST_TOPIC "bench.echo"
#define REPLY_TOPIC "bench.echo" KSFI_REPLY_SUFFIX
#define EVENT_TOPIC "bench.event"
#define MAX_SETS 32
#define STALL_NS                                                                         \
    (10 * (int64_t)1000000000) /* give up after this long without a reply                \
                                */

static volatile sig_atomic_t stop;

typedef struct opts {
    const char *brokers;
    const char *sets[MAX_SETS];
    int nsets;
    long count;
    double duration_s;
    int concurrency;
    int emit;
    double idle_s;
    long work_ns;
} opts;

typedef struct lane {
    int64_t start_ns;
    long seq;
} lane;

/* --work-ns: spin for @p ns on this thread (0: nothing). */
static void
busy_work(long ns)
{
    if (ns > 0) {
        int64_t until = ksf_tool_mono_ns() + ns;
        while (ksf_tool_mono_ns() < until) {
        }
    }
}

static void
on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void
die(const char *what, const char *why)
{
    fprintf(stderr, "floor: %s: %s\n", what, why);
    exit(1);
}

static rd_kafka_t *
make(const opts *o, rd_kafka_type_t type, const char *group, rd_kafka_conf_t *conf)
{
    char err[256];
    /* ksf's defaults for the same role (framework/kafka/kafka.c), so the two are
     * compared like for like: the same batching (linger.ms=0 and librdkafka's sticky
     * partitioning of keyless requests on both sides), the same idempotent producer
     * (at most 5 produce requests in flight per connection), the same fetch wait. The
     * floor commits automatically instead of storing offsets after each reply is
     * acknowledged as ksf does: a floor may do less. --set overrides any of these. */
    static const char *const producer[][2] = {
        {"linger.ms", "0"},
        {"enable.idempotence", "true"},
        {"acks", "all"},
    };
    static const char *const consumer[][2] = {
        {"enable.auto.commit", "true"},
        {"fetch.wait.max.ms", "100"},
        {"auto.commit.interval.ms", "1000"},
        /* bench/run gives every scenario a fresh broker (or fresh topics), so nothing
         * old is replayed, and no request made right after "ready" can be skipped by
         * a late reset. */
        {"auto.offset.reset", "earliest"},
    };
    rd_kafka_conf_set(conf, "bootstrap.servers", o->brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "socket.nagle.disable", "true", err, sizeof err);
    if (type == RD_KAFKA_PRODUCER) {
        for (size_t i = 0; i < sizeof producer / sizeof producer[0]; i++) {
            rd_kafka_conf_set(conf, producer[i][0], producer[i][1], err, sizeof err);
        }
    } else {
        for (size_t i = 0; i < sizeof consumer / sizeof consumer[0]; i++) {
            rd_kafka_conf_set(conf, consumer[i][0], consumer[i][1], err, sizeof err);
        }
    }
    if (group) {
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof err);
    }
    for (int i = 0; i < o->nsets; i++) {
        char key[128];
        const char *eq = strchr(o->sets[i], '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->sets[i]), o->sets[i]);
        if (rd_kafka_conf_set(conf, key, eq + 1, err, sizeof err) != RD_KAFKA_CONF_OK) {
            die(o->sets[i], err);
        }
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof err);
    if (!rk) {
        die("rd_kafka_new", err);
    }
    return rk;
}

/* ---- server ------------------------------------------------------------------------ */

/* The decimal value of s[0..len) (digits only), or -1. Formatting and parsing by hand:
 * snprintf/atoi cost the floor about 1,700 instructions per request, more than a
 * careful implementation pays. */
static long
parse_decimal(const char *s, size_t len)
{
    long v = 0;
    if (len == 0 || len > 18) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static void
answer(rd_kafka_t *producer, const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *in;
    const void *id, *topic, *part;
    size_t id_len, topic_len, part_len;
    if (rd_kafka_message_headers(m, &in) ||
        rd_kafka_header_get_last(in, KSFI_HDR_CORRELATION_ID, &id, &id_len) ||
        rd_kafka_header_get_last(in, KSFI_HDR_REPLY_TOPIC, &topic, &topic_len) ||
        rd_kafka_header_get_last(in, KSFI_HDR_REPLY_PARTITION, &part, &part_len)) {
        return;
    }
    char tname[256];
    long partition = parse_decimal(part, part_len);
    if (topic_len >= sizeof tname || partition < 0) {
        return;
    }
    memcpy(tname, topic, topic_len);
    tname[topic_len] = '\0';
    rd_kafka_headers_t *out = rd_kafka_headers_new(2);
    rd_kafka_header_add(out, KSFI_HDR_CORRELATION_ID, -1, id, (ssize_t)id_len);
    rd_kafka_header_add(out, KSFI_HDR_NEST_IS_DISPOSED, -1, "1", 1);
    if (rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(tname),
                          RD_KAFKA_V_PARTITION((int32_t)partition),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_HEADERS(out),
                          RD_KAFKA_V_END)) {
        rd_kafka_headers_destroy(out);
    }
}

/* Start every assigned partition at once, at a known offset (its committed one, else its
 * end), as ksf's server does. Left to librdkafka, each partition's offset lookup ends at
 * its own time, and (most likely) one that ends while the Fetch for the others is held
 * is not fetched until that Fetch comes back, as a consumer has one Fetch per broker in
 * flight: on Kafka 4.4 at fetch.wait.max.ms=1000, 2 of 4 runs' first request took about
 * 1 s; with this, 1 of 14. */
static void
on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
             rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    (void)opaque;
    if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, NULL);
        return;
    }
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(parts);
    int committed = rd_kafka_committed(rk, c, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; i < parts->cnt; i++) {
        int64_t lo, hi;
        if (committed && c->elems[i].offset >= 0) {
            parts->elems[i].offset = c->elems[i].offset;
        } else if (!rd_kafka_query_watermark_offsets(rk, parts->elems[i].topic,
                                                     parts->elems[i].partition, &lo, &hi,
                                                     10000)) {
            parts->elems[i].offset = hi;
        }
    }
    rd_kafka_topic_partition_list_destroy(c);
    rd_kafka_assign(rk, parts);
}

static int
serve(const opts *o)
{
    rd_kafka_t *producer = make(o, RD_KAFKA_PRODUCER, NULL, rd_kafka_conf_new());
    rd_kafka_conf_t *cconf = rd_kafka_conf_new();
    rd_kafka_conf_set_rebalance_cb(cconf, on_rebalance);
    rd_kafka_t *consumer = make(o, RD_KAFKA_CONSUMER, "floor-server", cconf);
    rd_kafka_poll_set_consumer(consumer);
    /* Know every topic before the first request: librdkafka looks a topic it has not
     * produced to up on first use (about 0.9 s for the first reply on Kafka 4.4 and on
     * the mock), a cost of the first request, not of the floor's request path. */
    const struct rd_kafka_metadata *md;
    if (rd_kafka_metadata(producer, 1, NULL, &md, 10000) == 0) {
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, REQUEST_TOPIC, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    int ready = 0;
    while (!stop) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 100);
        if (!ready) {
            rd_kafka_topic_partition_list_t *a = NULL;
            if (!rd_kafka_assignment(consumer, &a) && a->cnt > 0) {
                printf("floor server ready\n");
                fflush(stdout);
                ready = 1;
            }
            rd_kafka_topic_partition_list_destroy(a);
        }
        if (m && !m->err) {
            busy_work(o->work_ns);
            answer(producer, m);
            atomic_fetch_add_explicit(&bench_handled, 1, memory_order_relaxed);
        }
        if (m) {
            rd_kafka_message_destroy(m);
        }
        rd_kafka_poll(producer, 0);
    }
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    rd_kafka_flush(producer, 5000);
    rd_kafka_destroy(producer);
    return 0;
}

/* ---- client ------------------------------------------------------------------------ */

typedef struct run {
    const opts *o;
    rd_kafka_t *producer, *consumer;
    lane *lanes;
    uint32_t *lat_us;
    size_t nlat, caplat;
    long issued, done, ok, errors;
    int active;
    int64_t t0_ns, end_ns, first_ns;
    double cpu_ms;
} run;

static void
issue(run *r, int i)
{
    lane *l = &r->lanes[i];
    char id[48], part[] = "0";
    char *end = bench_put_long(id, i);
    *end++ = ':';
    end = bench_put_long(end, ++l->seq);
    int n = (int)(end - id);
    static const char value[] = "{\"hero\":\"bench\",\"n\":42}";
    l->start_ns = ksf_tool_mono_ns();
    rd_kafka_resp_err_t err;
    if (r->o->emit) {
        err = rd_kafka_producev(r->producer, RD_KAFKA_V_TOPIC(EVENT_TOPIC),
                                RD_KAFKA_V_VALUE((void *)value, sizeof value - 1),
                                RD_KAFKA_V_OPAQUE((void *)(intptr_t)i), RD_KAFKA_V_END);
    } else {
        rd_kafka_headers_t *h = rd_kafka_headers_new(3);
        rd_kafka_header_add(h, KSFI_HDR_CORRELATION_ID, -1, id, n);
        rd_kafka_header_add(h, KSFI_HDR_REPLY_TOPIC, -1, REPLY_TOPIC, -1);
        rd_kafka_header_add(h, KSFI_HDR_REPLY_PARTITION, -1, part, 1);
        err = rd_kafka_producev(r->producer, RD_KAFKA_V_TOPIC(REQUEST_TOPIC),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_VALUE((void *)value, sizeof value - 1),
                                RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
        if (err) {
            rd_kafka_headers_destroy(h);
        }
    }
    if (err) {
        die("produce", rd_kafka_err2str(err));
    }
}

/* Lane @p i finished its request with @p ok: record it and go on or stop the lane. */
static void
complete(run *r, int i, int ok)
{
    int64_t now = ksf_tool_mono_ns();
    if (!r->first_ns) {
        r->first_ns = now;
    }
    if (r->nlat < r->caplat) {
        r->lat_us[r->nlat++] = (uint32_t)((now - r->lanes[i].start_ns) / 1000);
    }
    r->done++;
    r->ok += ok;
    r->errors += !ok;
    if (r->o->count ? r->issued < r->o->count : now < r->end_ns) {
        r->issued++;
        issue(r, i);
    } else {
        r->active--;
        r->end_ns = now > r->end_ns ? now : r->end_ns;
    }
}

static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    run *r = opaque;
    if (r->o->emit) {
        complete(r, (int)(intptr_t)m->_private, !m->err);
    }
}

static void
on_reply(run *r, const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *h;
    const void *id;
    size_t len;
    if (rd_kafka_message_headers(m, &h) ||
        rd_kafka_header_get_last(h, KSFI_HDR_CORRELATION_ID, &id, &len) || len >= 48) {
        return;
    }
    const char *text = id, *colon = memchr(text, ':', len);
    long i = colon ? parse_decimal(text, (size_t)(colon - text)) : -1;
    if (i < 0 || i >= r->o->concurrency ||
        parse_decimal(colon + 1, len - (size_t)(colon + 1 - text)) != r->lanes[i].seq) {
        return; /* not a reply to a request in flight */
    }
    busy_work(r->o->work_ns);
    complete(r, (int)i, 1);
}

/* Assign the reply partition at its current end, so no reply can be missed. */
static void
assign_replies(run *r)
{
    int64_t lo, hi;
    rd_kafka_resp_err_t err =
        rd_kafka_query_watermark_offsets(r->consumer, REPLY_TOPIC, 0, &lo, &hi, 10000);
    if (err) {
        die("reply partition offsets", rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, REPLY_TOPIC, 0)->offset = hi;
    rd_kafka_assign(r->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
}

static uint32_t
pct(const run *r, double q)
{
    return ksf_tool_percentile(r->lat_us, r->nlat, q);
}

static void
report(run *r, double connect_ms, double first_ms)
{
    qsort(r->lat_us, r->nlat, sizeof *r->lat_us, ksf_tool_cmp_u32);
    double elapsed = (double)(r->end_ns - r->t0_ns) / 1e9;
    printf("{\"pattern\":\"%s\",\"mode\":\"%s\",\"concurrency\":%d,\"count\":%ld,"
           "\"ok\":%ld,\"errors\":%ld,\"timeouts\":0,\"p50_us\":%u,\"p90_us\":%u,"
           "\"p99_us\":%u,\"max_us\":%u,\"rps\":%.1f,\"elapsed_s\":%.3f,"
           "\"connect_ms\":%.1f,\"first_reply_ms\":%.1f,\"cpu_ms\":%.1f,"
           "\"peak_rss_kb\":%ld}\n",
           r->o->emit ? EVENT_TOPIC : REQUEST_TOPIC, r->o->emit ? "emit" : "send",
           r->o->concurrency, r->done, r->ok, r->errors, pct(r, 0.5), pct(r, 0.9),
           pct(r, 0.99), pct(r, 1.0), elapsed > 0 ? (double)r->done / elapsed : 0.0,
           elapsed, connect_ms, first_ms, r->cpu_ms, ksf_tool_peak_rss_kb());
    fflush(stdout);
}

static int
client(const opts *o, int64_t t0_real_us)
{
    run r = {.o = o};
    int64_t c0 = ksf_tool_mono_ns();
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &r);
    r.producer = make(o, RD_KAFKA_PRODUCER, NULL, conf);
    r.consumer = make(o, RD_KAFKA_CONSUMER, "floor-client", rd_kafka_conf_new());
    rd_kafka_poll_set_consumer(r.consumer);
    if (!o->emit) {
        assign_replies(&r);
    }
    /* Connected, as after ksf_client_connect, and every topic known: a topic looked up
     * on its first produce delays the first request (see serve()). */
    const struct rd_kafka_metadata *md;
    if (rd_kafka_metadata(r.producer, 1, NULL, &md, 10000) == 0) {
        rd_kafka_metadata_destroy(md);
    }
    double connect_ms = (double)(ksf_tool_mono_ns() - c0) / 1e6;
    r.caplat = o->count ? (size_t)o->count : 1u << 22;
    r.lat_us = malloc(r.caplat * sizeof *r.lat_us);
    r.lanes = calloc((size_t)o->concurrency, sizeof *r.lanes);
    fprintf(stderr, "floor client: connected in %.1f ms; running\n", connect_ms);
    double cpu0 = ksf_tool_cpu_ms();
    CALLGRIND_START_INSTRUMENTATION;
    r.t0_ns = ksf_tool_mono_ns();
    r.end_ns = o->count ? 0 : r.t0_ns + (int64_t)(o->duration_s * 1e9);
    r.active = r.issued = o->concurrency;
    for (int i = 0; i < o->concurrency; i++) {
        issue(&r, i);
    }
    int64_t last_done = 0, stall_at = ksf_tool_mono_ns() + STALL_NS;
    while (r.active > 0 && !stop) {
        if (r.done != last_done) {
            last_done = r.done;
            stall_at = ksf_tool_mono_ns() + STALL_NS;
        } else if (ksf_tool_mono_ns() > stall_at) {
            fprintf(stderr, "floor client: no reply for %d s; giving up\n",
                    (int)(STALL_NS / 1000000000));
            r.errors += r.active;
            r.end_ns = ksf_tool_mono_ns();
            break;
        }
        if (o->emit) {
            rd_kafka_poll(r.producer, 100);
            continue;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r.consumer, 100);
        if (m && !m->err) {
            on_reply(&r, m);
        }
        if (m) {
            rd_kafka_message_destroy(m);
        }
        rd_kafka_poll(r.producer, 0);
    }
    r.cpu_ms = ksf_tool_cpu_ms() - cpu0;
    int64_t now_us = ksf_tool_real_us();
    int64_t start_ns =
        ksf_tool_mono_ns() - (now_us - t0_real_us) * 1000; /* process start */
    report(&r, connect_ms, (double)(r.first_ns - start_ns) / 1e6);
    /* Idle with the handles open, as an idle client would be (bench/run measures it). */
    for (int64_t until = ksf_tool_mono_ns() + (int64_t)(o->idle_s * 1e9);
         ksf_tool_mono_ns() < until;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r.consumer, 100);
        if (m) {
            rd_kafka_message_destroy(m);
        }
        rd_kafka_poll(r.producer, 0);
    }
    rd_kafka_consumer_close(r.consumer);
    rd_kafka_destroy(r.consumer);
    rd_kafka_flush(r.producer, 5000);
    rd_kafka_destroy(r.producer);
    free(r.lat_us);
    free(r.lanes);
    return r.ok == r.done ? 0 : 1;
}

/* ---- main -------------------------------------------------------------------------- */

static int64_t
start_time_us(void)
{
    const char *s = getenv("KSF_BENCH_T0_US");
    long long v = s ? atoll(s) : 0;
    return v > 0 ? (int64_t)v : ksf_tool_real_us();
}

int
main(int argc, char **argv)
{
    int64_t t0 = start_time_us();
    opts o = {.concurrency = 1};
    if (argc < 3 || (strcmp(argv[1], "server") && strcmp(argv[1], "client"))) {
        fprintf(stderr, "Usage: floor server|client BROKERS [OPTIONS] (see floor.c)\n");
        return 2;
    }
    o.brokers = argv[2];
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--emit")) {
            o.emit = 1;
            continue;
        }
        i++;
        if (!strcmp(a, "--count")) {
            o.count = atol(v);
        } else if (!strcmp(a, "--duration")) {
            o.duration_s = atof(v);
        } else if (!strcmp(a, "--idle")) {
            o.idle_s = atof(v);
        } else if (!strcmp(a, "--work-ns") && atol(v) >= 0) {
            o.work_ns = atol(v);
        } else if (!strcmp(a, "--concurrency")) {
            o.concurrency = atoi(v);
        } else if (!strcmp(a, "--set") && strchr(v, '=') && o.nsets < MAX_SETS) {
            o.sets[o.nsets++] = v;
        } else {
            fprintf(stderr, "floor: bad option %s\n", a);
            return 2;
        }
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (!strcmp(argv[1], "server")) {
        bench_cpu_report_install();
        return serve(&o);
    }
    if ((o.count > 0) == (o.duration_s > 0) || o.concurrency < 1) {
        fprintf(stderr,
                "floor client: give one of --count/--duration, concurrency >= 1\n");
        return 2;
    }
    return client(&o, t0);
}
