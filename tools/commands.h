/* The subcommands of the `ksf` tool, one file each (cmd_<name>.c). */
#ifndef KSF_TOOLS_COMMANDS_H
#define KSF_TOOLS_COMMANDS_H

/* Each returns the process exit status; argv[0] is the subcommand name. */
int ksf_cmd_broker(int argc, char **argv);
int ksf_cmd_call(int argc, char **argv);
int ksf_cmd_emit(int argc, char **argv);
int ksf_cmd_bench(int argc, char **argv);

#endif
