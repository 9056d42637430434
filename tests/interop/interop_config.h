/*
 * What the C interop programs (interop_server.c, interop_client.c and
 * spring/spring_client.c) share in setting up: a configuration from {key, value} rows,
 * and a client connected with its reply topics taken first. Header-only (static inline):
 * each program stays one translation unit, one source per executable in meson.
 */
#ifndef KSF_INTEROP_CONFIG_H
#define KSF_INTEROP_CONFIG_H

#include <ksf/ksf.h>
#include <stddef.h>
#include <stdio.h>

/* A new configuration for the brokers @p brokers with what every interop program sets
 * (a 5 ms fetch wait: the matrices are many short calls), then the @p n rows of @p kv
 * in order, in @p out; on an error (a refused row: @p ei names it) *out is NULL. */
static inline ksf_err
interop_config(const char *brokers, const char *const kv[][2], size_t n, ksf_config **out,
               ksf_errinfo *ei)
{
    const char *const common[][2] = {{"brokers", brokers},
                                     {"consumer.fetch.wait.max.ms", "5"}};
    ksf_config *cfg = NULL;
    ksf_err e = ksf_config_new(&cfg);
    if (e) {
        snprintf(ei->text, sizeof ei->text, "out of memory creating a configuration");
    }
    for (size_t i = 0; !e && i < 2; i++) {
        e = ksf_config_set(cfg, common[i][0], common[i][1], ei);
    }
    for (size_t i = 0; !e && i < n; i++) {
        e = ksf_config_set(cfg, kv[i][0], kv[i][1], ei);
    }
    if (e) {
        ksf_config_destroy(cfg);
        cfg = NULL;
    }
    *out = cfg;
    return e;
}

/* A client on interop_config(@p brokers, @p kv, @p n) that takes the reply topics of @p
 * patterns (NULL-terminated) before it connects, as NestJS's subscribeToResponseOf does,
 * so the reply group is joined once rather than once per pattern; then connected within
 * @p timeout_ms. NULL, with "PROG: error: sentence" on stderr, on any error. */
static inline ksf_client *
interop_client_connect(const char *prog, const char *brokers, const char *const kv[][2],
                       size_t n, const char *const *patterns, int timeout_ms)
{
    ksf_config *cfg = NULL;
    ksf_client *cli = NULL;
    ksf_errinfo ei = {0};
    ksf_err e = interop_config(brokers, kv, n, &cfg, &ei);
    if (!e) {
        e = ksf_client_new(&cli, cfg, &ei);
    }
    ksf_config_destroy(cfg);
    for (size_t i = 0; !e && patterns[i]; i++) {
        e = ksf_client_subscribe_to_response_of(cli, patterns[i], &ei);
    }
    if (!e) {
        e = ksf_client_connect(cli, timeout_ms, &ei);
    }
    if (e) {
        fprintf(stderr, "%s: %s: %s\n", prog, ksf_strerror(e), ei.text);
        ksf_client_destroy(cli);
        return NULL;
    }
    return cli;
}

#endif
