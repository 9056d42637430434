/*
 * bench/legs' timestamps: an LD_PRELOAD module that notes the monotonic time (us) of
 * every rd_kafka_producev call ('P') and of every message without error that
 * rd_kafka_consumer_poll or rd_kafka_consume_batch_queue hands to the program ('C'),
 * in the order they happen, and writes them to $KSF_LEGS_OUT at exit, one
 * "<kind> <us>" line each. The floor and ksf both produce and consume through these
 * calls, so the same module times either without changing either.
 *
 * One sequential round trip is then: the client's P, the server's C, the server's P,
 * the client's C (bench/legs.py pairs them). Nothing is written before exit: a write
 * per message would be part of what is measured. At most MAX_EVENTS are kept.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_EVENTS (1 << 20)
#define MAX_VUS 32

static uint64_t stamp_us[MAX_EVENTS];
static char stamp_kind[MAX_EVENTS];
static atomic_size_t nstamps;

static void
note(char kind)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    size_t i = atomic_fetch_add_explicit(&nstamps, 1, memory_order_relaxed);
    if (i < MAX_EVENTS) {
        stamp_us[i] = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        stamp_kind[i] = kind;
    }
}

/* The next definition of @p name (librdkafka's) into the function pointer at @p fn:
 * copied as bytes, as ISO C has no conversion from dlsym's object pointer. */
static void
next_symbol(const char *name, void *fn, size_t size)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f || size != sizeof f) {
        fprintf(stderr, "legs_shim: %s not found\n", name);
        abort();
    }
    memcpy(fn, &f, size);
}

rd_kafka_message_t *
rd_kafka_consumer_poll(rd_kafka_t *rk, int timeout_ms)
{
    static rd_kafka_message_t *(*real)(rd_kafka_t *, int);
    if (!real) {
        next_symbol(__func__, &real, sizeof real);
    }
    rd_kafka_message_t *m = real(rk, timeout_ms);
    if (m && !m->err) {
        note('C');
    }
    return m;
}

ssize_t
rd_kafka_consume_batch_queue(rd_kafka_queue_t *q, int timeout_ms,
                             rd_kafka_message_t **msgs, size_t size)
{
    static ssize_t (*real)(rd_kafka_queue_t *, int, rd_kafka_message_t **, size_t);
    if (!real) {
        next_symbol(__func__, &real, sizeof real);
    }
    ssize_t n = real(q, timeout_ms, msgs, size);
    for (ssize_t i = 0; i < n; i++) {
        if (!msgs[i]->err) {
            note('C');
        }
    }
    return n;
}

/* producev's arguments as rd_kafka_produceva's array: a variadic call cannot be passed
 * on as it came. Each RD_KAFKA_V_* tag is followed by its own arguments (rdkafka.h). */
rd_kafka_resp_err_t
rd_kafka_producev(rd_kafka_t *rk, ...)
{
    rd_kafka_vu_t vus[MAX_VUS];
    size_t n = 0;
    va_list ap;
    va_start(ap, rk);
    for (int t; (t = va_arg(ap, int)) != RD_KAFKA_VTYPE_END;) {
        if (n == MAX_VUS) {
            va_end(ap);
            return RD_KAFKA_RESP_ERR__INVALID_ARG;
        }
        rd_kafka_vu_t *v = &vus[n++];
        v->vtype = (rd_kafka_vtype_t)t;
        switch (t) {
        case RD_KAFKA_VTYPE_TOPIC:
            v->u.cstr = va_arg(ap, const char *);
            break;
        case RD_KAFKA_VTYPE_RKT:
            v->u.rkt = va_arg(ap, rd_kafka_topic_t *);
            break;
        case RD_KAFKA_VTYPE_PARTITION:
            v->u.i32 = va_arg(ap, int32_t);
            break;
        case RD_KAFKA_VTYPE_VALUE:
        case RD_KAFKA_VTYPE_KEY:
            v->u.mem.ptr = va_arg(ap, void *);
            v->u.mem.size = va_arg(ap, size_t);
            break;
        case RD_KAFKA_VTYPE_OPAQUE:
            v->u.ptr = va_arg(ap, void *);
            break;
        case RD_KAFKA_VTYPE_MSGFLAGS:
            v->u.i = va_arg(ap, int);
            break;
        case RD_KAFKA_VTYPE_TIMESTAMP:
            v->u.i64 = va_arg(ap, int64_t);
            break;
        case RD_KAFKA_VTYPE_HEADER:
            v->u.header.name = va_arg(ap, const char *);
            v->u.header.val = va_arg(ap, const void *);
            v->u.header.size = va_arg(ap, ssize_t);
            break;
        case RD_KAFKA_VTYPE_HEADERS:
            v->u.headers = va_arg(ap, rd_kafka_headers_t *);
            break;
        default: /* a tag this librdkafka has and this module does not know */
            fprintf(stderr, "legs_shim: rd_kafka_producev tag %d unknown\n", t);
            abort();
        }
    }
    va_end(ap);
    note('P');
    rd_kafka_error_t *error = rd_kafka_produceva(rk, vus, n);
    if (!error) {
        return RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    rd_kafka_resp_err_t err = rd_kafka_error_code(error);
    rd_kafka_error_destroy(error);
    return err;
}

__attribute__((destructor)) static void
write_stamps(void)
{
    const char *path = getenv("KSF_LEGS_OUT");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (!f) {
        return;
    }
    size_t n = atomic_load(&nstamps);
    for (size_t i = 0; i < n && i < MAX_EVENTS; i++) {
        fprintf(f, "%c %llu\n", stamp_kind[i], (unsigned long long)stamp_us[i]);
    }
    fclose(f);
}
