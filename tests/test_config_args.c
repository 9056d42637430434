/*
 * ksf_config_set_from_args: which arguments it takes, what it leaves in argv, the
 * values it sets and the sentences of its failures.
 */
#include "base/alloc.h"
#include "settings.h"
#include "suite.h"

#include <check.h>
#include <ksf/ksf.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 16

/* A mutable copy of @p args (NULL-terminated) as main() gets it. */
typedef struct cmdline {
    int argc;
    char *argv[MAX_ARGS + 1];
} cmdline;

static void
cmdline_init(cmdline *c, const char *const *args)
{
    c->argc = 0;
    while (args[c->argc]) {
        ck_assert_int_lt(c->argc, MAX_ARGS);
        c->argv[c->argc] = (char *)args[c->argc];
        c->argc++;
    }
    c->argv[c->argc] = NULL;
}

/* argv equals @p want (NULL-terminated), argv[argc] included. */
static void
assert_argv(const cmdline *c, const char *const *want)
{
    int n = 0;
    while (want[n]) {
        n++;
    }
    ck_assert_int_eq(c->argc, n);
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(c->argv[i], want[i]);
    }
    ck_assert_ptr_null(c->argv[n]);
}

static ksf_config *
new_config(void)
{
    ksf_config *cfg = NULL;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    return cfg;
}

KSFT_TEST(test_config_args_forms, 30)
{
    static const char *const args[] = {"prog",
                                       "--brokers",
                                       "127.0.0.1:9092",
                                       "x",
                                       "--set",
                                       "client.id=a",
                                       "-v",
                                       "--set=group.id=g",
                                       "--brokers=127.0.0.1:9093,127.0.0.1:9094",
                                       "--set",
                                       "kafka.linger.ms=7",
                                       "y",
                                       NULL};
    static const char *const left[] = {"prog", "x", "-v", "y", NULL};
    ksf_config *cfg = new_config();
    cmdline c;
    cmdline_init(&c, args);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_set_from_args(cfg, &c.argc, c.argv, &ei), KSF_OK);
    assert_argv(&c, left);
    ksft_assert_config_get(cfg, "brokers",
                           "127.0.0.1:9093,127.0.0.1:9094"); /* the later wins */
    ksft_assert_config_get(cfg, "client.id", "a");
    ksft_assert_config_get(cfg, "group.id", "g");
    ksft_assert_config_get(cfg, "kafka.linger.ms", "7");
    ck_assert_str_eq(ei.text, ""); /* untouched on success */
    ksf_config_destroy(cfg);
}
END_TEST

KSFT_TEST(test_config_args_others_untouched, 30)
{
    /* names that only start like ours, single dashes, "--" and what follows it */
    static const char *const args[] = {"prog",      "--brokersx=1", "--settings",  "-set",
                                       "a=b",       "--set",        "postfix.id=", "--",
                                       "--brokers", "h:1",          "--set",       "x",
                                       NULL};
    static const char *const left[] = {
        "prog",      "--brokersx=1", "--settings", "-set", "a=b", "--",
        "--brokers", "h:1",          "--set",      "x",    NULL};
    ksf_config *cfg = new_config();
    cmdline c;
    cmdline_init(&c, args);
    ck_assert_int_eq(ksf_config_set_from_args(cfg, &c.argc, c.argv, NULL), KSF_OK);
    assert_argv(&c, left);
    ksft_assert_config_get(cfg, "brokers",
                           "localhost:9092");      /* the one after "--" is not a flag */
    ksft_assert_config_get(cfg, "postfix.id", ""); /* an empty value is a value */
    /* nothing of ours: the same array, the same count */
    static const char *const none[] = {"prog", "p", "--timeout-ms", "5", NULL};
    cmdline_init(&c, none);
    char **before = c.argv;
    ck_assert_int_eq(ksf_config_set_from_args(cfg, &c.argc, c.argv, NULL), KSF_OK);
    assert_argv(&c, none);
    ck_assert_ptr_eq(c.argv, before);
    /* a program name alone, and no arguments at all */
    static const char *const only[] = {"prog", NULL};
    cmdline_init(&c, only);
    ck_assert_int_eq(ksf_config_set_from_args(cfg, &c.argc, c.argv, NULL), KSF_OK);
    assert_argv(&c, only);
    int zero = 0;
    ck_assert_int_eq(ksf_config_set_from_args(cfg, &zero, NULL, NULL), KSF_OK);
    ck_assert_int_eq(zero, 0);
    ksf_config_destroy(cfg);
}
END_TEST

KSFT_TEST(test_config_args_errors, 30)
{
    static const struct {
        const char *args[5];
        ksf_err code;
        const char *text;
    } cases[] = {
        {{"prog", "x", "--brokers"},
         KSF_EINVAL,
         "flag --brokers needs a value: --brokers HOST:PORT[,HOST:PORT...], e.g. "
         "--brokers 127.0.0.1:9092"},
        {{"prog", "--set"},
         KSF_EINVAL,
         "flag --set needs a value: --set KEY=VALUE, e.g. --set client.id=billing"},
        {{"prog", "--set", "client.id"},
         KSF_EINVAL,
         "flag --set \"client.id\": expected KEY=VALUE with a configuration key before "
         "the '=', e.g. --set client.id=billing"},
        {{"prog", "--set==x"},
         KSF_EINVAL,
         "flag --set \"=x\": expected KEY=VALUE with a configuration key before the "
         "'=', e.g. --set client.id=billing"},
        {{"prog", "--set", "client.idd=a"},
         KSF_ENOENT,
         "flag --set: unknown configuration key \"client.idd\" (did you mean "
         "\"client.id\"?); the keys are listed in docs/configuration.md, and librdkafka "
         "properties go under kafka., consumer. or producer."},
        {{"prog", "--brokers", "kafka"},
         KSF_EINVAL,
         "flag --brokers: brokers \"kafka\": missing :port; expected "
         "host:port[,host:port...] (e.g. 127.0.0.1:9092)"},
        {{"prog", "--set", "server.workers=-1", "--brokers=h:1"},
         KSF_EINVAL,
         "flag --set: server.workers \"-1\": expected an integer from 0 to 1024"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ksf_config *cfg = new_config();
        cmdline c, c2;
        cmdline_init(&c, cases[i].args);
        cmdline_init(&c2, cases[i].args);
        ksf_errinfo ei = {0};
        ck_assert_int_eq(ksf_config_set_from_args(cfg, &c.argc, c.argv, &ei),
                         cases[i].code);
        ck_assert_int_eq(ei.code, cases[i].code);
        ck_assert_str_eq(ei.text, cases[i].text);
        assert_argv(&c, cases[i].args); /* unchanged */
        /* the same code without an errinfo */
        ck_assert_int_eq(ksf_config_set_from_args(cfg, &c2.argc, c2.argv, NULL),
                         cases[i].code);
        assert_argv(&c2, cases[i].args);
        ksft_assert_config_get(cfg, "brokers",
                               "localhost:9092"); /* the bad flags set nothing */
        ksf_config_destroy(cfg);
    }
    /* flags before the bad one are applied */
    static const char *const partial[] = {"prog",  "--set", "client.id=first",
                                          "--set", "nope",  NULL};
    ksf_config *cfg = new_config();
    cmdline c;
    cmdline_init(&c, partial);
    ck_assert_int_eq(ksf_config_set_from_args(cfg, &c.argc, c.argv, NULL), KSF_EINVAL);
    ksft_assert_config_get(cfg, "client.id", "first");
    assert_argv(&c, partial);
    /* NULL arguments */
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_set_from_args(NULL, &c.argc, c.argv, &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text,
                     "ksf_config_set_from_args: cfg, argc and argv are required");
    ck_assert_int_eq(ksf_config_set_from_args(cfg, NULL, c.argv, NULL), KSF_EINVAL);
    ck_assert_int_eq(ksf_config_set_from_args(cfg, &c.argc, NULL, NULL), KSF_EINVAL);
    ksf_config_destroy(cfg);
}
END_TEST

/* Each allocation failing in turn: KSF_ENOMEM with a sentence, argv unchanged. */
KSFT_TEST(test_config_args_alloc_failures, 30)
{
    static const char *const args[] = {"prog", "--set", "client.id=a", "x", NULL};
    static const char *const left[] = {"prog", "x", NULL};
    unsigned long nth;
    for (nth = 1; nth < 100; nth++) {
        ksf_config *cfg = new_config();
        cmdline c;
        cmdline_init(&c, args);
        ksf_errinfo ei = {0};
        ksfi_alloc_fail_after(nth, 0);
        ksf_err e = ksf_config_set_from_args(cfg, &c.argc, c.argv, &ei);
        unsigned long used = ksfi_alloc_count();
        ksfi_alloc_fail_after(0, 0);
        if (used < nth) {
            ck_assert_int_eq(e, KSF_OK);
            assert_argv(&c, left);
            ksf_config_destroy(cfg);
            break;
        }
        ck_assert_int_eq(e, KSF_ENOMEM);
        ck_assert_int_eq(ei.code, KSF_ENOMEM);
        ck_assert_ptr_nonnull(strstr(ei.text, "out of memory"));
        assert_argv(&c, args);
        ksf_config_destroy(cfg);
    }
    ck_assert_uint_eq(nth - 1, 2); /* the key's copy, then the value's in the config */
}
END_TEST

KSFT_TEST(test_config_args_help, 30)
{
    const char *h = ksf_config_args_help();
    ck_assert_ptr_nonnull(h);
    ck_assert_ptr_eq(h, ksf_config_args_help());
    /* one entry per flag, descriptions from column 22, every line indented, within 80
     * columns and ended by a newline */
    ck_assert_ptr_eq(strstr(h, "  --brokers B        Kafka bootstrap servers"), h);
    ck_assert_ptr_nonnull(strstr(h, "\n  --set KEY=VALUE    any ksf configuration key"));
    ck_assert_ptr_nonnull(strstr(h, "KSF_BROKERS"));
    size_t len = strlen(h);
    ck_assert_uint_gt(len, 0);
    ck_assert_int_eq(h[len - 1], '\n');
    int lines = 0;
    for (const char *p = h; *p; lines++) {
        const char *nl = strchr(p, '\n');
        ck_assert_ptr_nonnull(nl);
        ck_assert_int_le(nl - p, 80);
        ck_assert_int_eq(strncmp(p, "  ", 2), 0);
        if (p[2] != '-') {
            ck_assert_int_eq(strspn(p, " "), 21); /* a continuation line */
        }
        p = nl + 1;
    }
    ck_assert_int_eq(lines, 5);
}
END_TEST

KSFT_MAIN("config_args")
