/*
 * Running a ksf_server on a thread of its own inside a test: start it, wait for its
 * ready callback, stop it and check run returned KSF_OK. Every failure fails the test.
 */
#ifndef KSF_TEST_SERVER_THREAD_H
#define KSF_TEST_SERVER_THREAD_H

#include <ksf/ksf.h>

typedef struct ksft_running ksft_running;

/* Run @p srv (handlers registered) on a new thread; returns once it is ready (20 s max).
 */
ksft_running *ksft_server_start(ksf_server *srv);

/* Stop the server, join its thread, assert run returned KSF_OK, free @p r (not the
 * server). NULL is a no-op. */
void ksft_server_stop(ksft_running *r);

/* A new server on @p cfg (fails the test on error). */
ksf_server *ksft_server_new(const ksf_config *cfg);

/* A new client on @p cfg (fails the test on error). */
ksf_client *ksft_client_new(const ksf_config *cfg);

#endif
