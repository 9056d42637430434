#include "server_thread.h"

#include "mock_broker.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

struct ksft_running {
    ksf_server *srv;
    pthread_t thread;
    ksf_err run_err;
    ksf_errinfo ei;
    atomic_int ready;
};

static void
on_ready(ksf_server *srv, void *user)
{
    (void)srv;
    atomic_store(&((ksft_running *)user)->ready, 1);
}

static void *
run_main(void *arg)
{
    ksft_running *r = arg;
    r->run_err = ksf_server_run(r->srv, &r->ei);
    return NULL;
}

ksft_running *
ksft_server_start(ksf_server *srv)
{
    ksft_running *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    r->srv = srv;
    ksf_server_set_ready_cb(srv, on_ready, r);
    ck_assert_int_eq(pthread_create(&r->thread, NULL, run_main, r), 0);
    int64_t until = ksft_now_ms() + 20000;
    struct timespec tick = {0, 10 * 1000 * 1000};
    while (!atomic_load(&r->ready) && ksft_now_ms() < until) {
        nanosleep(&tick, NULL); /* polling the ready flag against a deadline */
    }
    ck_assert_msg(atomic_load(&r->ready), "server not ready within 20 s");
    return r;
}

void
ksft_server_stop(ksft_running *r)
{
    if (!r) {
        return;
    }
    ksf_server_stop(r->srv);
    pthread_join(r->thread, NULL);
    ck_assert_msg(r->run_err == KSF_OK, "ksf_server_run: %s", r->ei.text);
    free(r);
}

ksf_server *
ksft_server_new(const ksf_config *cfg)
{
    ksf_server *srv = NULL;
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_server_new(&srv, cfg, &ei) == KSF_OK, "ksf_server_new: %s",
                  ei.text);
    return srv;
}

ksf_client *
ksft_client_new(const ksf_config *cfg)
{
    ksf_client *cli = NULL;
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_client_new(&cli, cfg, &ei) == KSF_OK, "ksf_client_new: %s",
                  ei.text);
    return cli;
}
