/*
 * Finishing a client's in-flight requests (client_requests.h). Every request ends here
 * or in client_reply_thread.c (a reply): the in-flight table hands each one out once,
 * so its callback runs exactly once.
 */
#include "client/client_requests.h"

#include "client/client_slots.h"

void
ksfi_client_finish_locked(ksf_client *cli, ksfi_pending *p, ksfi_recent why)
{
    ksfi_inflight_remove(cli->inflight, p, why);
    ksfi_client_slot_put_locked(cli, p->slot);
    p->slot = NULL;
    if (ksfi_inflight_count(cli->inflight) == 0) {
        cli->idle_since = ksfi_client_now_ms();
    }
}

void
ksfi_client_pending_free(ksfi_pending *p)
{
    if (p) {
        ksfi_free(p->last_raw);
        ksfi_free(p);
    }
}

void
ksfi_client_deliver_local(ksfi_pending *p, ksf_err err, const char *text)
{
    ksf_reply r = {.err = err, .done = true, .correlation_id = p->id, .text = text};
    p->cb(&r, p->user);
    ksfi_client_pending_free(p);
}

void
ksfi_client_fail_request(ksf_client *cli, const char *id, ksf_err err, const char *text)
{
    pthread_mutex_lock(&cli->lock);
    ksfi_pending *p = ksfi_inflight_find(cli->inflight, id, strlen(id));
    if (p) {
        ksfi_client_finish_locked(cli, p, KSFI_RECENT_ANSWERED);
    }
    pthread_mutex_unlock(&cli->lock);
    if (p) {
        ksfi_client_deliver_local(p, err, text);
    }
}
