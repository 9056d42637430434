/*
 * Command-line helpers shared by the `ksf` subcommands. The configuration flags
 * (--brokers, --set) are libksf's own: ksf_config_set_from_args(); these are the rest.
 */
#ifndef KSF_TOOLS_FLAGS_H
#define KSF_TOOLS_FLAGS_H

#include <ksf/ksf.h>
#include <stdbool.h>

/* The exit status of a usage error, the same for every subcommand. */
#define KSF_TOOL_EXIT_USAGE 2

/* True when @p arg is flag @p name, as "--name" or "--name=VALUE". */
bool ksf_tool_is_flag(const char *arg, const char *name);

/*
 * The value of flag @p name at argv[*i] ("--name V" or "--name=V"), advancing *i past
 * a separate value; NULL when argv[*i] is not that flag or its value is missing.
 */
const char *ksf_tool_flag_value(int argc, char **argv, int *i, const char *name);

/*
 * Print "ksf CMD: <sentence>" and "(ksf CMD --help for usage)" to stderr; returns
 * KSF_TOOL_EXIT_USAGE.
 */
int ksf_tool_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* 0 when @p pattern is a Kafka topic name, else a usage error (its exit status). */
int ksf_tool_check_pattern(const char *cmd, const char *pattern);

/*
 * Configure a client tool: the environment (ksf_config_set_from_env), then no
 * group.instance.id, then the --brokers/--set flags, which are taken out of argv.
 * Returns -1 to go on, else the exit status after printing why.
 */
int ksf_tool_configure(const char *cmd, ksf_config *cfg, int *argc, char **argv);

#endif
