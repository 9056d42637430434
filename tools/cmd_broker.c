/* ksf broker: placeholder until the embedded broker lands. */
#include "commands.h"

#include <stdio.h>

int
ksf_cmd_broker(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ksf broker: not built yet\n");
    return 1;
}
