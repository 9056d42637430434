/*
 * What the calling thread is to libksf, for checks that cross modules without one
 * module calling the other: a server in inline mode (server.workers=0) marks its
 * consumer thread while it runs handlers, and a blocking client call made there can
 * say why it timed out.
 */
#ifndef KSF_THREAD_ROLE_H
#define KSF_THREAD_ROLE_H

#include <stdbool.h>

/* Set (on this thread only) while an inline server runs handlers on it. */
void ksfi_thread_set_inline_handlers(bool on);

/* Is this thread an inline server's handler thread, inside a handler pass? */
bool ksfi_thread_runs_inline_handlers(void);

#endif
