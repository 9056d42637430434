/*
 * The world most integration cases start from: a broker (the mock, or the real Kafka of
 * KSF_TEST_KAFKA: broker.h), its topics, a configuration pointing at it, a ksf server
 * with the case's handlers running on its own thread, and a connected ksf client.
 * ksft_world_open builds it and fails the test, saying which step failed, when it cannot;
 * ksft_world_close takes down whatever part of it exists, in reverse order. Create it
 * inside the test (Check forks per case).
 */
#ifndef KSF_TEST_FIXTURE_H
#define KSF_TEST_FIXTURE_H

#include "broker.h"
#include "service.h"
#include "settings.h"

#include <ksf/ksf.h>
#include <stdbool.h>
#include <stddef.h>

/* A handler for the world's server: a request handler (ksf_server_on_message) or, with
 * @c event, an event handler (ksf_server_on_event). A NULL @c fn is ksft_echo. */
typedef struct ksft_handler {
    const char *pattern;
    ksf_handler_fn fn;
    void *user;
    bool event;
} ksft_handler;

/* What a world is made of. Every list may be NULL. */
typedef struct ksft_world_spec {
    /* Topics to create first, NULL-terminated, each "name" (1 partition) or
     * "name:partitions"; patterns not listed auto-create with 4 partitions. */
    const char *const *topics;
    /* {key, value} settings for ksf_config_set on top of ksft_config (settings.h). */
    const char *const (*settings)[2];
    size_t nsettings;
    /* The server's handlers, ended by a row with a NULL pattern; NULL: no server. */
    const ksft_handler *handlers;
    /* No client (the case sends with a raw producer, or makes its own). */
    bool no_client;
    /* A client that is not connected first (the case measures its first send). */
    bool lazy_client;
    /* Patterns whose reply partitions the client takes before it connects
     * (ksf_client_subscribe_to_response_of), NULL-terminated: the case's first call
     * then has no group join in its time. */
    const char *const *subscribe;
    /* Up to how long (ms, scaled) the server may take to be ready and the client to
     * connect; 0: 20 s. */
    int timeout_ms;
} ksft_world_spec;

/* A spec's settings from an array of {key, value} rows. */
#define KSFT_SETTINGS(rows) .settings = (rows), .nsettings = KSFT_NKV(rows)

typedef struct ksft_world {
    ksft_broker *broker;
    ksf_config *cfg; /* the world's configuration; the case may dup and change it */
    ksf_server *srv; /* running on service's thread; NULL without handlers */
    ksft_service service;
    ksf_client *cli;   /* connected; NULL with no_client */
    ksf_client *extra; /* a client the case made (e.g. for handlers); closed last */
} ksft_world;

/* Build @p w from @p spec (NULL: a broker and configuration only). */
void ksft_world_open(ksft_world *w, const ksft_world_spec *spec);

/* The world of a timed call to one handler: @p fn serves @p pattern, and the client took
 * the pattern's reply partitions before it connected, so the call's time has no group
 * join in it. */
void ksft_world_open_one(ksft_world *w, const char *pattern, ksf_handler_fn fn);

/* Create the topics of @p topics (the spec's format) on @p w's broker. */
void ksft_world_topics(ksft_world *w, const char *const *topics);

/* A server on @p w's configuration with @p handlers (the spec's format), not started. */
ksf_server *ksft_world_server(const ksft_world *w, const ksft_handler *handlers);

/* Run @p srv (handlers registered) as @p w's server on its thread; fails the test unless
 * it is ready within the spec's timeout. */
void ksft_world_serve(ksft_world *w, ksf_server *srv);

/* Stop @p w's server and wait for its run to return (it must return KSF_OK); a no-op
 * when none runs. w->srv stays valid (its stats, what it committed) until the next
 * ksft_world_serve (a restart) or ksft_world_close destroys it. */
void ksft_world_stop_server(ksft_world *w);

/* Close the client, stop and destroy the server, then the extra client (the server's
 * handlers may have used it), the configuration and the broker. Safe on a zeroed world
 * and on one that is partly built. */
void ksft_world_close(ksft_world *w);

#endif
