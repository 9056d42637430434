/*
 * One registered handler, as the server keeps it (registry.c fills them before run;
 * afterwards they are read without a lock). Below the ctx, which hands the handler's
 * user pointer out, and the message lifecycle, which calls it.
 */
#ifndef KSF_HANDLER_H
#define KSF_HANDLER_H

#include <ksf/ksf.h>

#include <stdatomic.h>
#include <stdint.h>

struct ksfi_pmetrics;
struct ksfi_chain;

/* One registered handler. file/line say where it was defined ("" / 0 when by call). */
typedef struct ksfi_handler {
    char *pattern;
    ksf_handler_kind kind;
    ksf_handler_fn fn;
    void *user;
    const char *file;
    int line;
    struct ksfi_pmetrics *metrics; /* owned; NULL when it could not be allocated */
    /* The handler's recent run time in microseconds (a moving average; 0 before its
     * first run): what shedding expects the next run to take (docs/deadlines.md). */
    _Atomic int64_t run_us;
    /* Its middleware chain (pipeline.h), set at run; NULL when it has none, so that
     * an empty chain costs one test per message. */
    const struct ksfi_chain *chain;
    /* KSF_HANDLER_RAW: the value is not decoded before the call; the handler's `data`
     * is NULL and ksf_ctx_data / ksf_ctx_unpack decode it on first use (ctx.h). */
    bool raw;
} ksfi_handler;

#endif
