/*
 * API hygiene: destroy(NULL) no-ops, strings for every enum value, the version, and
 * the failure contract of every constructor and out-parameter function: on failure
 * the out-parameter holds NULL (or "" for ksf_config_get), and the code is the same
 * whether or not the caller passed a ksf_errinfo.
 */
#include "base/alloc.h"
#include "suite.h"

#include <check.h>
#include <ksf/ksf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* What an out-parameter holds before the call, so a failure that leaves it alone
 * shows (never dereferenced). */
#define STALE ((void *)(uintptr_t)0x5a5a5a5a)

KSFT_TEST(test_api_destroy_null, 30)
{
    ksf_config_destroy(NULL);
    ksf_config_set_log(NULL, NULL, NULL, KSF_LOG_DEBUG);
}
END_TEST

KSFT_TEST(test_api_strerror_total, 30)
{
    /* every value, known or not, has a non-NULL string; the known ones are distinct */
    int known = 0;
    for (int e = -2; e <= 128; e++) {
        const char *s = ksf_strerror((ksf_err)e);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_gt(strlen(s), 0);
        if (strcmp(s, "unknown ksf error")) {
            known++;
            for (int f = -2; f < e; f++) {
                ck_assert_str_ne(s, ksf_strerror((ksf_err)f));
            }
        }
    }
    ck_assert_int_eq(known, 16); /* KSF_OK..KSF_EMSGSIZE, KSF_DEFERRED, KSF_SKIP */
}
END_TEST

KSFT_TEST(test_api_log_level_names, 30)
{
    static const ksf_log_level all[] = {KSF_LOG_ERROR, KSF_LOG_WARNING, KSF_LOG_NOTICE,
                                        KSF_LOG_INFO, KSF_LOG_DEBUG};
    static const char *const names[] = {"error", "warning", "notice", "info", "debug"};
    for (size_t i = 0; i < 5; i++) {
        ck_assert_str_eq(ksf_log_level_name(all[i]), names[i]);
    }
    ck_assert_ptr_nonnull(ksf_log_level_name((ksf_log_level)99));
}
END_TEST

KSFT_TEST(test_api_version, 30)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", KSF_VERSION_MAJOR, KSF_VERSION_MINOR,
             KSF_VERSION_PATCH);
    ck_assert_str_eq(ksf_version(), want);
    ck_assert_str_eq(KSF_VERSION_STRING, want);
}
END_TEST

KSFT_TEST(test_api_destroy_null_objects, 30)
{
    ksf_server_destroy(NULL);
    ksf_client_destroy(NULL);
}
END_TEST

/* A configuration no object can be made from fails the same with and without ei. */
static ksf_config *
config_with(const char *key, const char *value, const char *key2, const char *value2)
{
    ksf_config *cfg = NULL;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "brokers", "127.0.0.1:1", NULL), KSF_OK);
    if (key) {
        ck_assert_int_eq(ksf_config_set(cfg, key, value, NULL), KSF_OK);
    }
    if (key2) {
        ck_assert_int_eq(ksf_config_set(cfg, key2, value2, NULL), KSF_OK);
    }
    return cfg;
}

typedef enum ctor { CTOR_CONFIG_NEW, CTOR_CONFIG_DUP, CTOR_SERVER, CTOR_CLIENT } ctor;

/* Run constructor @p which once with allocation @p nth failing (sticky or once; 0:
 * none);
 * *used gets the allocations it attempted. Returns its code; *out NULL on failure. */
static ksf_err
ctor_run(ctor which, const ksf_config *cfg, unsigned long nth, int sticky,
         ksf_errinfo *ei, unsigned long *used)
{
    void *out = STALE;
    ksf_err e = KSF_EINVAL;
    ksfi_alloc_fail_after(nth, sticky);
    switch (which) {
    case CTOR_CONFIG_NEW:
        e = ksf_config_new((ksf_config **)&out);
        break;
    case CTOR_CONFIG_DUP:
        e = ksf_config_dup(cfg, (ksf_config **)&out);
        break;
    case CTOR_SERVER:
        e = ksf_server_new((ksf_server **)&out, cfg, ei);
        break;
    case CTOR_CLIENT:
        e = ksf_client_new((ksf_client **)&out, cfg, ei);
        break;
    }
    *used = ksfi_alloc_count();
    ksfi_alloc_fail_after(0, 0);
    if (e != KSF_OK) {
        ck_assert_msg(out == NULL, "constructor %d, failure %lu: *out not NULL", which,
                      nth);
        return e;
    }
    ck_assert_ptr_nonnull(out);
    if (which == CTOR_SERVER) {
        ksf_server_destroy(out);
    } else if (which == CTOR_CLIENT) {
        ksf_client_destroy(out);
    } else {
        ksf_config_destroy(out);
    }
    return e;
}

/* Constructor @p which on @p cfg with an errinfo (whose code and sentence must agree)
 * and without one: the same code, and *out NULL on failure (ctor_run checks). */
static ksf_err
new_both(ctor which, const ksf_config *cfg)
{
    ksf_errinfo ei = {0};
    unsigned long used;
    ksf_err e = ctor_run(which, cfg, 0, 0, &ei, &used);
    ck_assert_int_eq(ctor_run(which, cfg, 0, 0, NULL, &used), e);
    if (e) {
        ck_assert_int_eq(ei.code, e);
        ck_assert_uint_gt(strlen(ei.text), 0);
    }
    return e;
}

KSFT_TEST(test_api_new_bad_arguments, 60)
{
    ksf_config *cfg = config_with(NULL, NULL, NULL, NULL), *copy = STALE;
    ck_assert_int_eq(ksf_config_new(NULL), KSF_EINVAL);
    ck_assert_int_eq(ksf_config_dup(NULL, &copy), KSF_EINVAL);
    ck_assert_ptr_null(copy);
    ck_assert_int_eq(ksf_config_dup(cfg, NULL), KSF_EINVAL);
    ck_assert_int_eq(new_both(CTOR_CLIENT, NULL), KSF_EINVAL);
    ck_assert_int_eq(new_both(CTOR_SERVER, NULL), KSF_EINVAL);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_new(NULL, cfg, &ei), KSF_EINVAL);
    ck_assert_int_eq(ksf_client_new(NULL, cfg, NULL), KSF_EINVAL);
    ck_assert_int_eq(ksf_server_new(NULL, cfg, &ei), KSF_EINVAL);
    ck_assert_int_eq(ksf_server_new(NULL, cfg, NULL), KSF_EINVAL);
    ksf_config_destroy(cfg);
}
END_TEST

KSFT_TEST(test_api_new_bad_config, 60)
{
    /* GSSAPI (librdkafka's default mechanism): librdkafka refuses it when built
     * without Kerberos (KSF_EKAFKA), else the reply-group connection (KSF_EINVAL) */
    ksf_config *cfg =
        config_with("kafka.security.protocol", "sasl_plaintext", NULL, NULL);
    ksf_err e = new_both(CTOR_CLIENT, cfg);
    ck_assert_msg(e == KSF_EKAFKA || e == KSF_EINVAL, "%s", ksf_strerror(e));
    ksf_config_destroy(cfg);
    /* a heartbeat as long as the session */
    cfg = config_with("consumer.session.timeout.ms", "6000",
                      "consumer.heartbeat.interval.ms", "6000");
    ck_assert_int_eq(new_both(CTOR_CLIENT, cfg), KSF_EINVAL);
    ksf_config_destroy(cfg);
    /* a good configuration makes both, so the failures above were the settings */
    cfg = config_with("consumer.session.timeout.ms", "6000", NULL, NULL);
    ck_assert_int_eq(new_both(CTOR_CLIENT, cfg), KSF_OK);
    ck_assert_int_eq(new_both(CTOR_SERVER, cfg), KSF_OK);
    ksf_config_destroy(cfg);
}
END_TEST

/* No file descriptor left: the server's eventfd fails, with the same code either way
 * (KSF_EINVAL; it once returned KSF_ENOMEM when the caller passed no errinfo). */
KSFT_TEST(test_api_server_new_no_fd, 60)
{
    ksf_config *cfg = config_with(NULL, NULL, NULL, NULL);
    struct rlimit old, none;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    none = old;
    none.rlim_cur = 0;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &none), 0);
    ksf_err e = new_both(CTOR_SERVER, cfg);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    ck_assert_int_eq(e, KSF_EINVAL);
    ksf_config_destroy(cfg);
}
END_TEST

/* The other out-parameter functions, on their argument errors. */
KSFT_TEST(test_api_out_params_bad_arguments, 60)
{
    json_t *j = STALE;
    ck_assert_int_eq(ksf_server_metrics_json(NULL, &j), KSF_EINVAL);
    ck_assert_ptr_null(j);
    j = STALE;
    ck_assert_int_eq(ksf_client_metrics_json(NULL, &j), KSF_EINVAL);
    ck_assert_ptr_null(j);
    ksf_errinfo ei = {0};
    j = STALE;
    ck_assert_int_eq(ksf_client_call(NULL, "p", NULL, 10, &j, &ei), KSF_EINVAL);
    ck_assert_ptr_null(j);
    j = STALE;
    ck_assert_int_eq(ksf_client_call(NULL, "p", NULL, 10, &j, NULL), KSF_EINVAL);
    ck_assert_ptr_null(j);
    ck_assert_int_eq(ksf_client_call(NULL, "p", NULL, 10, NULL, NULL), KSF_EINVAL);

    ksf_config *cfg = config_with(NULL, NULL, NULL, NULL);
    char buf[16];
    strcpy(buf, "stale");
    ck_assert_int_eq(ksf_config_get(cfg, "no.such.key", buf, sizeof buf), KSF_ENOENT);
    ck_assert_str_eq(buf, "");
    strcpy(buf, "stale");
    ck_assert_int_eq(ksf_config_get(cfg, "group.instance.id", buf, sizeof buf),
                     KSF_ENOENT); /* unset */
    ck_assert_str_eq(buf, "");
    strcpy(buf, "stale");
    ck_assert_int_eq(ksf_config_get(NULL, "brokers", buf, sizeof buf), KSF_EINVAL);
    ck_assert_str_eq(buf, "");
    strcpy(buf, "stale");
    ck_assert_int_eq(ksf_config_get(cfg, "brokers", buf, 4), KSF_EINVAL);
    ck_assert_str_eq(buf, "127"); /* too small: the documented truncated value */
    ksf_config_destroy(cfg);
}
END_TEST

static ksf_err
dummy_handler(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx, (void)data, (void)reply;
    return KSF_OK;
}

/* Call @p fn(args..., ei) with an errinfo and with NULL: both return @p want, and the
 * errinfo's code and sentence agree. */
#define BOTH(want, fn, ...)                                                              \
    do {                                                                                 \
        ksf_errinfo ei_ = {0};                                                           \
        ksf_err with_ = fn(__VA_ARGS__, &ei_);                                           \
        ksf_err without_ = fn(__VA_ARGS__, NULL);                                        \
        ck_assert_msg(with_ == (want) && without_ == (want),                             \
                      "%s line %d: %s with ei, %s without, want %s", #fn, __LINE__,      \
                      ksf_strerror(with_), ksf_strerror(without_), ksf_strerror(want));  \
        if ((want) != KSF_OK) {                                                          \
            ck_assert_int_eq(ei_.code, (want));                                          \
            ck_assert_uint_gt(strlen(ei_.text), 0);                                      \
        }                                                                                \
    } while (0)

/* Every function taking an errinfo, on its argument and state errors: the code is the
 * same with and without one. */
KSFT_TEST(test_api_codes_without_errinfo, 60)
{
    ksf_config *cfg = config_with("client.reply.provider", "static", NULL, NULL);
    BOTH(KSF_EINVAL, ksf_config_set, NULL, "brokers", "127.0.0.1:1");
    BOTH(KSF_EINVAL, ksf_config_set, cfg, "brokers", "127.0.0.1");
    BOTH(KSF_ENOENT, ksf_config_set, cfg, "no.such.key", "1");
    BOTH(KSF_EINVAL, ksf_config_set_kafka, cfg, (ksf_kafka_role)9, "linger.ms", "1");
    BOTH(KSF_ENOENT, ksf_config_set_kafka, cfg, KSF_KAFKA_ALL, "no.such.prop", "1");
    BOTH(KSF_EINVAL, ksf_config_set_kafka, cfg, KSF_KAFKA_ALL, "group.id", "g");
    BOTH(KSF_EINVAL, ksf_config_set_from_env, NULL);
    int argc = 2;
    char a0[] = "prog", a1[] = "--set";
    char *argv[] = {a0, a1, NULL};
    BOTH(KSF_EINVAL, ksf_config_set_from_args, cfg, &argc, argv);
    BOTH(KSF_EINVAL, ksf_config_set_from_args, NULL, &argc, argv);

    BOTH(KSF_EINVAL, ksf_server_on_message, NULL, "p", dummy_handler, NULL);
    BOTH(KSF_EINVAL, ksf_server_on_event, NULL, "p", dummy_handler, NULL);
    BOTH(KSF_EINVAL, ksf_server_mount, NULL, NULL);
    BOTH(KSF_EINVAL, ksf_server_run, NULL);
    BOTH(KSF_EINVAL, ksf_server_stop_on_signals, NULL);
    ksf_server *srv = NULL;
    ck_assert_int_eq(ksf_server_new(&srv, cfg, NULL), KSF_OK);
    BOTH(KSF_EINVAL, ksf_server_on_message, srv, "bad topic", dummy_handler, NULL);
    BOTH(KSF_EINVAL, ksf_server_on_message, srv, "p", NULL, NULL);
    BOTH(KSF_ENOENT, ksf_server_mount, srv, "no-such-controller");
    ck_assert_int_eq(ksf_server_on_message(srv, "p", dummy_handler, NULL, NULL), KSF_OK);
    BOTH(KSF_EEXIST, ksf_server_on_event, srv, "p", dummy_handler, NULL);
    ksf_server_destroy(srv);
    /* no handler; a server runs once, so each call gets its own */
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_server_new(&srv, cfg, NULL), KSF_OK);
    ck_assert_int_eq(ksf_server_run(srv, &ei), KSF_EINVAL);
    ksf_server_destroy(srv);
    ck_assert_int_eq(ksf_server_new(&srv, cfg, NULL), KSF_OK);
    ck_assert_int_eq(ksf_server_run(srv, NULL), KSF_EINVAL);
    BOTH(KSF_ESTATE, ksf_server_run, srv); /* and then it has run */
    ksf_server_destroy(srv);

    json_t *v = json_string("x");
    BOTH(KSF_EINVAL, ksf_client_subscribe_to_response_of, NULL, "p");
    BOTH(KSF_EINVAL, ksf_client_connect, NULL, 10);
    BOTH(KSF_EINVAL, ksf_client_send, NULL, "p", v, NULL, NULL, NULL);
    BOTH(KSF_EINVAL, ksf_client_emit, NULL, "p", v, NULL, NULL, NULL);
    BOTH(KSF_EINVAL, ksf_client_flush, NULL, 10);
    ksf_client *cli = NULL;
    ck_assert_int_eq(ksf_client_new(&cli, cfg, NULL), KSF_OK);
    BOTH(KSF_EINVAL, ksf_client_subscribe_to_response_of, cli, "bad topic");
    BOTH(KSF_EINVAL, ksf_client_connect, cli, -1);
    BOTH(KSF_EINVAL, ksf_client_send, cli, "bad topic", v, NULL, NULL, NULL);
    BOTH(KSF_EINVAL, ksf_client_emit, cli, "", v, NULL, NULL, NULL);
    ksf_send_opts bad_trace = {.traceparent = "not-a-traceparent"};
    BOTH(KSF_EINVAL, ksf_client_emit, cli, "p", v, &bad_trace, NULL, NULL);
    ksf_client_destroy(cli);
    json_decref(v);
    ksf_config_destroy(cfg);
}
END_TEST

/*
 * Fail each allocation of constructor @p which in turn (the first failing run returns
 * at the first allocation past the count it made without failures): every failing run
 * returns KSF_ENOMEM with *out NULL, the same code without an errinfo, and a sentence
 * with one. Returns the number of failure points exercised.
 */
static unsigned long
ctor_sweep(ctor which, int sticky)
{
    ksf_config *cfg = config_with("kafka.linger.ms", "1", "postfix.id", "-p");
    unsigned long nth;
    for (nth = 1; nth < 2000; nth++) {
        ksf_errinfo ei = {0};
        unsigned long used, used2;
        ksf_err e = ctor_run(which, cfg, nth, sticky, &ei, &used);
        if (used < nth) {
            ck_assert_int_eq(e, KSF_OK); /* no failure injected: success */
            break;
        }
        if (e == KSF_OK && which == CTOR_CLIENT) {
            break; /* the failure hit a thread the client had just started */
        }
        ck_assert_msg(e == KSF_ENOMEM, "constructor %d, failure %lu returned %s", which,
                      nth, ksf_strerror(e));
        if (which == CTOR_SERVER || which == CTOR_CLIENT) {
            ck_assert_int_eq(ei.code, KSF_ENOMEM);
            ck_assert_uint_gt(strlen(ei.text), 0);
        }
        ksf_err e2 = ctor_run(which, cfg, nth, sticky, NULL, &used2);
        ck_assert_msg(e2 == e, "constructor %d, failure %lu: %s with ei, %s without",
                      which, nth, ksf_strerror(e), ksf_strerror(e2));
    }
    ksf_config_destroy(cfg);
    return nth - 1;
}

KSFT_TEST(test_api_new_alloc_failures, 60)
{
    for (int sticky = 0; sticky <= 1; sticky++) {
        ck_assert_uint_eq(ctor_sweep(CTOR_CONFIG_NEW, sticky), 4);
        ck_assert_uint_ge(ctor_sweep(CTOR_CONFIG_DUP, sticky), 7);
        ck_assert_uint_ge(ctor_sweep(CTOR_SERVER, sticky), 10);
        ck_assert_uint_ge(ctor_sweep(CTOR_CLIENT, sticky), 10);
    }
}
END_TEST
KSFT_MAIN("api")
