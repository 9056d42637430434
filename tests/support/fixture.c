#include "fixture.h"

#include "settings.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_TIMEOUT_MS 20000

static int world_timeout_ms; /* the open world's, for ksft_world_serve */

void
ksft_world_topics(ksft_world *w, const char *const *topics)
{
    for (size_t i = 0; topics && topics[i]; i++) {
        char name[256];
        int partitions = 1;
        const char *colon = strchr(topics[i], ':');
        size_t len = colon ? (size_t)(colon - topics[i]) : strlen(topics[i]);
        ck_assert_msg(len < sizeof name, "topic \"%s\": name too long", topics[i]);
        memcpy(name, topics[i], len);
        name[len] = '\0';
        if (colon) {
            partitions = atoi(colon + 1);
            ck_assert_msg(partitions > 0, "topic \"%s\": expected name:partitions (>= 1)",
                          topics[i]);
        }
        ksft_broker_create_topic(w->broker, name, partitions);
    }
}

ksf_server *
ksft_world_server(const ksft_world *w, const ksft_handler *handlers)
{
    ksf_server *srv = ksft_server(w->cfg);
    for (const ksft_handler *h = handlers; h && h->pattern; h++) {
        ksf_handler_fn fn = h->fn ? h->fn : ksft_echo;
        ksf_errinfo ei = {0};
        ksf_err e = h->event ? ksf_server_on_event(srv, h->pattern, fn, h->user, &ei)
                             : ksf_server_on_message(srv, h->pattern, fn, h->user, &ei);
        ck_assert_msg(e == KSF_OK, "registering a handler on \"%s\": %s", h->pattern,
                      ei.text);
    }
    return srv;
}

void
ksft_world_serve(ksft_world *w, ksf_server *srv)
{
    ck_assert_msg(!w->service.running, "ksft_world_serve: the world's server still runs");
    ksf_server_destroy(w->srv); /* a stopped one: this is a restart */
    w->srv = srv;
    ksft_service_start(&w->service, srv,
                       world_timeout_ms ? world_timeout_ms : DEFAULT_TIMEOUT_MS);
}

void
ksft_world_open(ksft_world *w, const ksft_world_spec *spec)
{
    static const ksft_world_spec none = {0};
    spec = spec ? spec : &none;
    memset(w, 0, sizeof *w);
    world_timeout_ms = spec->timeout_ms > 0 ? spec->timeout_ms : DEFAULT_TIMEOUT_MS;
    w->broker = ksft_broker_start();
    ksft_world_topics(w, spec->topics);
    w->cfg = ksft_config(w->broker);
    if (spec->settings) {
        ksft_config_set_all(w->cfg, spec->settings, spec->nsettings);
    }
    if (spec->handlers) {
        ksft_world_serve(w, ksft_world_server(w, spec->handlers));
    }
    if (!spec->no_client) {
        w->cli = ksft_client(w->cfg);
    }
    for (size_t i = 0; w->cli && spec->subscribe && spec->subscribe[i]; i++) {
        ksf_errinfo ei = {0};
        ck_assert_msg(ksf_client_subscribe_to_response_of(w->cli, spec->subscribe[i],
                                                          &ei) == KSF_OK,
                      "the world's client: replies of \"%s\": %s", spec->subscribe[i],
                      ei.text);
    }
    if (w->cli && !spec->lazy_client) {
        ksf_errinfo ei = {0};
        ck_assert_msg(ksf_client_connect(w->cli, ksft_scaled_ms(world_timeout_ms), &ei) ==
                          KSF_OK,
                      "the world's client did not connect: %s", ei.text);
    }
}

void
ksft_world_open_one(ksft_world *w, const char *pattern, ksf_handler_fn fn)
{
    const ksft_handler handlers[] = {{pattern, fn}, {NULL}};
    const char *const subscribe[] = {pattern, NULL};
    ksft_world_open(w, &(ksft_world_spec){.handlers = handlers, .subscribe = subscribe});
}

void
ksft_world_stop_server(ksft_world *w)
{
    ksft_service *s = &w->service;
    if (s->running) {
        ksf_server_stop(s->srv);
        pthread_join(s->thread, NULL);
        s->running = false;
        ck_assert_msg(s->run_err == KSF_OK, "the world's server: run returned %s: %s",
                      ksf_strerror(s->run_err), s->ei.text);
    }
}

void
ksft_world_close(ksft_world *w)
{
    ksf_client_destroy(w->cli);
    w->cli = NULL;
    ksft_world_stop_server(w);
    ksf_server_destroy(w->srv);
    w->srv = NULL;
    w->service.srv = NULL;
    ksf_client_destroy(w->extra);
    w->extra = NULL;
    ksf_config_destroy(w->cfg);
    w->cfg = NULL;
    ksft_broker_stop(w->broker);
    w->broker = NULL;
}
