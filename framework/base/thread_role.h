/*
 * What the calling thread is to libksf, for checks that cross modules without one
 * module calling the other: a server in inline mode (server.workers=0) marks its
 * consumer thread while it runs handlers, and a blocking client call made there can
 * say why it timed out.
 */
#ifndef KSF_THREAD_ROLE_H
#define KSF_THREAD_ROLE_H

#include <stdbool.h>

/*
 * For libksf's small per-thread words that the per-message path reads (the thread's
 * role, the scope of the message it runs, the pool it owns): the initial-exec model
 * makes each access one load off the thread pointer, where the default model for a
 * shared library calls __tls_get_addr (about 10 instructions, several times per
 * message). glibc keeps spare static TLS for libraries loaded with dlopen, far more
 * than these few pointers. Write it after the declarator:
 * `static _Thread_local T *name KSFI_TLS_FAST;`. Not for large per-thread buffers.
 */
#define KSFI_TLS_FAST __attribute__((tls_model("initial-exec")))

/* Set (on this thread only) while an inline server runs handlers on it. */
void ksfi_thread_set_inline_handlers(bool on);

/* Is this thread an inline server's handler thread, inside a handler pass? */
bool ksfi_thread_runs_inline_handlers(void);

#endif
