#include "flags.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

bool
ksf_tool_is_flag(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(arg, name, n) && (arg[n] == '\0' || arg[n] == '=');
}

const char *
ksf_tool_flag_value(int argc, char **argv, int *i, const char *name)
{
    if (!ksf_tool_is_flag(argv[*i], name)) {
        return NULL;
    }
    size_t n = strlen(name);
    if (argv[*i][n] == '=') {
        return argv[*i] + n + 1;
    }
    return *i + 1 < argc ? argv[++*i] : NULL;
}

int
ksf_tool_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ksf %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(ksf %s --help for usage)\n", cmd);
    va_end(ap);
    return KSF_TOOL_EXIT_USAGE;
}

int
ksf_tool_check_pattern(const char *cmd, const char *pattern)
{
    size_t len = strlen(pattern);
    if (len == 0 || len > 243 ||
        strspn(pattern, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "0123456789._-") != len) {
        return ksf_tool_usage_error(cmd,
                                    "PATTERN \"%s\" is not a Kafka topic name: use "
                                    "1..243 characters of [A-Za-z0-9._-]",
                                    pattern);
    }
    return 0;
}

int
ksf_tool_configure(const char *cmd, ksf_config *cfg, int *argc, char **argv)
{
    ksf_errinfo ei = {0};
    if (ksf_config_set_from_env(cfg, &ei) != KSF_OK) {
        return ksf_tool_usage_error(cmd, "%s", ei.text);
    }
    /* A tool run beside a service (kubectl exec) must not take the service's place in
     * its reply group: KSF_INSTANCE_ID is the service's identity, not the tool's (it
     * would fence the service's client). --set group.instance.id=... still wins. */
    ksf_config_set(cfg, "group.instance.id", "", NULL);
    if (ksf_config_set_from_args(cfg, argc, argv, &ei) != KSF_OK) {
        return ksf_tool_usage_error(cmd, "%s", ei.text);
    }
    return -1;
}
