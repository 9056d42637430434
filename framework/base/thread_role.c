/* The calling thread's role (thread_role.h). */
#include "base/thread_role.h"

static _Thread_local bool inline_handlers KSFI_TLS_FAST;

void
ksfi_thread_set_inline_handlers(bool on)
{
    inline_handlers = on;
}

bool
ksfi_thread_runs_inline_handlers(void)
{
    return inline_handlers;
}
