/* ksf: the command-line companion of libksf (embedded broker, call, emit, bench). */
#include "commands.h"

#include <ksf/ksf.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"broker", ksf_cmd_broker, "run the embedded development broker (librdkafka mock)"},
    {"call", ksf_cmd_call, "send a request to a pattern and print the reply"},
    {"emit", ksf_cmd_emit, "emit an event to a pattern"},
    {"bench", ksf_cmd_bench, "load-test a pattern: latency percentiles and rate"},
};

static void
usage(FILE *out)
{
    fprintf(out, "Usage: ksf COMMAND [OPTIONS]   (ksf COMMAND --help for its options)\n\n"
                 "Commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out,
            "\nBrokers come from --brokers, else KSF_BROKERS, else localhost:9092.\n");
}

int
main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("ksf %s\n", ksf_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(argv[1], commands[i].name)) {
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "ksf: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
