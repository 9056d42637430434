/*
 * ksf_config_set_from_args: the --brokers and --set flags every ksf program takes,
 * parsed once here instead of by hand in each tool, example and benchmark (they
 * differed in the forms they accepted and in what they said about a bad one).
 */
#include "base/alloc.h"
#include "base/errinfo.h"

#include <ksf/ksf.h>
#include <string.h>

static const char args_help[] =
    "  --brokers B        Kafka bootstrap servers, host:port[,host:port...] (default:\n"
    "                     KSF_BROKERS, else localhost:9092)\n"
    "  --set KEY=VALUE    any ksf configuration key (docs/configuration.md), e.g.\n"
    "                     --set client.id=billing, --set kafka.security.protocol=ssl\n"
    "                     (repeatable; a later one wins)\n";

const char *
ksf_config_args_help(void)
{
    return args_help;
}

/*
 * If argv[i] is flag @p name ("--name V" or "--name=V"), point *value at V (NULL when
 * "--name" is the last argument) and return how many arguments it spans; else 0.
 */
static int
match_flag(int argc, char **argv, int i, const char *name, const char **value)
{
    size_t n = strlen(name);
    if (strncmp(argv[i], name, n) != 0) {
        return 0;
    }
    if (argv[i][n] == '=') {
        *value = argv[i] + n + 1;
        return 1;
    }
    if (argv[i][n] != '\0') {
        return 0; /* --brokersX is somebody else's flag */
    }
    *value = i + 1 < argc ? argv[i + 1] : NULL;
    return 2;
}

/* ksf_config_set from one flag; a failure's sentence names the flag first, as
 * ksf_config_set_from_env names the variable. */
static ksf_err
apply(ksf_config *cfg, const char *flag, const char *key, const char *value,
      ksf_errinfo *ei)
{
    ksf_errinfo inner = {0};
    ksf_err e = ksf_config_set(cfg, key, value, &inner);
    if (e) {
        return ksfi_fail(ei, e, "flag %s: %s", flag, inner.text);
    }
    return KSF_OK;
}

/* --set KEY=VALUE: the key is copied out, as the value must stay in argv. */
static ksf_err
apply_set(ksf_config *cfg, const char *pair, ksf_errinfo *ei)
{
    const char *eq = strchr(pair, '=');
    if (!eq || eq == pair) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "flag --set \"%s\": expected KEY=VALUE with a configuration "
                         "key before the '=', e.g. --set client.id=billing",
                         pair);
    }
    char *key = ksfi_strndup(pair, (size_t)(eq - pair));
    if (!key) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory reading flag --set \"%s\"", pair);
    }
    ksf_err e = apply(cfg, "--set", key, eq + 1, ei);
    ksfi_free(key);
    return e;
}

/* Apply the flag at argv[i] if it is one of ours; *span gets the arguments it uses
 * (0: not ours). */
static ksf_err
apply_one(ksf_config *cfg, int argc, char **argv, int i, int *span, ksf_errinfo *ei)
{
    const char *v = NULL;
    if ((*span = match_flag(argc, argv, i, "--brokers", &v))) {
        if (!v) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "flag --brokers needs a value: --brokers "
                             "HOST:PORT[,HOST:PORT...], e.g. --brokers 127.0.0.1:9092");
        }
        return apply(cfg, "--brokers", "brokers", v, ei);
    }
    if ((*span = match_flag(argc, argv, i, "--set", &v))) {
        if (!v) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "flag --set needs a value: --set KEY=VALUE, e.g. --set "
                             "client.id=billing");
        }
        return apply_set(cfg, v, ei);
    }
    return KSF_OK;
}

ksf_err
ksf_config_set_from_args(ksf_config *cfg, int *argc, char **argv, ksf_errinfo *ei)
{
    if (!cfg || !argc || (*argc > 0 && !argv)) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "ksf_config_set_from_args: cfg, argc and argv are required");
    }
    /* Apply everything first and compact only once all flags were good, so a failure
     * leaves the command line as it was (the caller can still print it). */
    int end = *argc;
    for (int i = 1; i < *argc; i++) {
        int span;
        if (!strcmp(argv[i], "--")) {
            end = i;
            break;
        }
        ksf_err e = apply_one(cfg, *argc, argv, i, &span, ei);
        if (e) {
            return e;
        }
        i += span > 0 ? span - 1 : 0;
    }
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        int span = 0;
        const char *v;
        if (i < end && !(span = match_flag(*argc, argv, i, "--brokers", &v))) {
            span = match_flag(*argc, argv, i, "--set", &v);
        }
        if (span) {
            i += span - 1;
        } else {
            argv[out++] = argv[i];
        }
    }
    if (out < *argc) {
        argv[out] = NULL; /* as main's argv ends */
        *argc = out;
    }
    return KSF_OK;
}
