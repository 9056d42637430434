/* ksf call / ksf emit: placeholder until the client lands. */
#include "commands.h"

#include <stdio.h>

int
ksf_cmd_call(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ksf call: not built yet\n");
    return 1;
}

int
ksf_cmd_emit(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ksf emit: not built yet\n");
    return 1;
}
