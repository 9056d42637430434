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

/* ---- pools: a request's record and ticket are reused, not allocated per request ---- */

/* Pop a pooled record / ticket, or NULL when that pool is empty; pool_lock held. */
static ksfi_pending *
pending_pop(ksf_client *cli)
{
    ksfi_pending *p = cli->free_pending;
    if (p) {
        cli->free_pending = p->hnext;
        cli->n_free_pending--;
    }
    return p;
}

static dr_ticket *
ticket_pop(ksf_client *cli)
{
    dr_ticket *t = cli->free_tickets;
    if (t) {
        cli->free_tickets = t->next;
        cli->n_free_tickets--;
    }
    return t;
}

/* A popped record zeroed, or a new one (NULL when out of memory). */
static ksfi_pending *
pending_ready(ksfi_pending *p)
{
    if (!p) {
        return ksfi_calloc(1, sizeof *p);
    }
    *p = (ksfi_pending){0};
    return p;
}

static dr_ticket *
ticket_ready(dr_ticket *t)
{
    if (!t) {
        return ksfi_calloc(1, sizeof *t);
    }
    *t = (dr_ticket){0};
    return t;
}

bool
ksfi_client_request_new(ksf_client *cli, dr_ticket **t, ksfi_pending **p)
{
    pthread_mutex_lock(&cli->pool_lock);
    dr_ticket *pt = ticket_pop(cli);
    ksfi_pending *pp = pending_pop(cli);
    pthread_mutex_unlock(&cli->pool_lock);
    *t = ticket_ready(pt);
    *p = pending_ready(pp);
    return *t && *p;
}

void
ksfi_client_pending_free(ksf_client *cli, ksfi_pending *p)
{
    if (!p) {
        return;
    }
    ksfi_free(p->last_raw);
    p->last_raw = NULL;
    pthread_mutex_lock(&cli->pool_lock);
    if (cli->n_free_pending < POOL_MAX) {
        p->hnext = cli->free_pending;
        cli->free_pending = p;
        cli->n_free_pending++;
        p = NULL;
    }
    pthread_mutex_unlock(&cli->pool_lock);
    ksfi_free(p); /* the pool was full */
}

dr_ticket *
ksfi_client_ticket_new(ksf_client *cli)
{
    pthread_mutex_lock(&cli->pool_lock);
    dr_ticket *t = ticket_pop(cli);
    pthread_mutex_unlock(&cli->pool_lock);
    return ticket_ready(t);
}

void
ksfi_client_ticket_free(ksf_client *cli, dr_ticket *t)
{
    if (!t || t == &cli->plain_event) {
        return;
    }
    pthread_mutex_lock(&cli->pool_lock);
    if (cli->n_free_tickets < POOL_MAX) {
        t->next = cli->free_tickets;
        cli->free_tickets = t;
        cli->n_free_tickets++;
        t = NULL;
    }
    pthread_mutex_unlock(&cli->pool_lock);
    ksfi_free(t); /* the pool was full */
}

void
ksfi_client_pools_free(ksf_client *cli)
{
    while (cli->free_pending) {
        ksfi_pending *p = cli->free_pending;
        cli->free_pending = p->hnext;
        ksfi_free(p);
    }
    while (cli->free_tickets) {
        dr_ticket *t = cli->free_tickets;
        cli->free_tickets = t->next;
        ksfi_free(t);
    }
    cli->n_free_pending = cli->n_free_tickets = 0;
}

void
ksfi_client_deliver_local(ksf_client *cli, ksfi_pending *p, ksf_err err, const char *text)
{
    ksf_reply r = {.err = err, .done = true, .correlation_id = p->id, .text = text};
    p->cb(&r, p->user);
    ksfi_client_pending_free(cli, p);
}

void
ksfi_client_fail_request(ksf_client *cli, const char *id, ksf_err err, const char *text)
{
    pthread_mutex_lock(&cli->lock);
    ksfi_pending *p = ksfi_inflight_find(cli->inflight, id, strlen(id));
    if (p) {
        ksfi_client_finish_locked(cli, p, KSFI_RECENT_ANSWERED);
        cli->stats.send_failures++;
    }
    pthread_mutex_unlock(&cli->lock);
    if (p) {
        ksfi_client_deliver_local(cli, p, err, text);
    }
}
