/*
 * The main() every pipeline example shares: configuration from the environment
 * (KSF_BROKERS, KSF_LOG), a server with every KSF_*_PATTERN handler of the program,
 * the example's own middlewares (its setup function), "<name>: ready" on stdout once
 * it serves, and a clean stop on SIGINT/SIGTERM.
 */
#ifndef KSF_EXAMPLE_PIPELINE_H
#define KSF_EXAMPLE_PIPELINE_H

#include <ksf/ksf.h>
#include <stdio.h>
#include <stdlib.h>

static ksf_errinfo example_ei;

static void
fatal(const char *name, const char *what, ksf_err err)
{
    fprintf(stderr, "%s: %s: %s%s%s\n", name, what, ksf_strerror(err),
            example_ei.text[0] ? ": " : "", example_ei.text);
    exit(1);
}

static void
example_ready(ksf_server *srv, void *user)
{
    (void)srv;
    printf("%s: ready\n", (const char *)user);
    fflush(stdout);
}

/* Run the example server @p name with every macro handler (unless @p setup mounts
 * them itself: @p mount_all false); @p setup adds its middlewares (may be NULL).
 * Returns main()'s exit status. */
static int
example_run(const char *name, bool mount_all,
            ksf_err (*setup)(ksf_server *srv, ksf_errinfo *ei))
{
    ksf_config *cfg = NULL;
    ksf_server *srv = NULL;
    ksf_err e = ksf_config_new(&cfg);
    if (e) {
        fatal(name, "config", e);
    }
    ksf_config_set_log(cfg, ksf_log_stderr, NULL, KSF_LOG_WARNING);
    if ((e = ksf_config_set_from_env(cfg, &example_ei)) ||
        (e = ksf_server_new(&srv, cfg, &example_ei))) {
        fatal(name, "creating the server", e);
    }
    ksf_config_destroy(cfg);
    if ((mount_all && (e = ksf_server_mount(srv, NULL, &example_ei))) ||
        (setup && (e = setup(srv, &example_ei))) ||
        (e = ksf_server_stop_on_signals(srv, &example_ei))) {
        fatal(name, "setting up", e);
    }
    ksf_server_set_ready_cb(srv, example_ready, (void *)name);
    e = ksf_server_run(srv, &example_ei);
    ksf_server_destroy(srv);
    if (e) {
        fatal(name, "serving", e);
    }
    return 0;
}

#endif
