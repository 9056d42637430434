/*
 * Finishing a client's in-flight requests (client_requests.h). Every request ends here
 * or in client_reply_thread.c (a reply): the in-flight table hands each one out once,
 * so its callback runs exactly once.
 */
#include "client/client_requests.h"

#include "base/thread_role.h"
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

/* Which client's reply thread this thread is, if any (ksfi_client_mark_reply_thread):
 * that thread takes and returns records and tickets on its own lists, without a round
 * of pool_lock each. */
static _Thread_local const ksf_client *reply_thread_of KSFI_TLS_FAST;

void
ksfi_client_mark_reply_thread(const ksf_client *cli)
{
    reply_thread_of = cli;
}

/* Pop a pooled record / ticket from a list, or NULL when it is empty; push one unless
 * the list holds @p max already (false: the caller frees it). The shared lists need
 * pool_lock and keep POOL_MAX - POOL_RT_MAX, the reply thread's own need nothing and
 * keep POOL_RT_MAX: together no more than before the reply thread had its own. */
static ksfi_pending *
pending_pop(ksfi_pending **list, size_t *n)
{
    ksfi_pending *p = *list;
    if (p) {
        *list = p->hnext;
        (*n)--;
    }
    return p;
}

static bool
pending_push(ksfi_pending **list, size_t *n, size_t max, ksfi_pending *p)
{
    if (*n >= max) {
        return false;
    }
    p->hnext = *list;
    *list = p;
    (*n)++;
    return true;
}

static dr_ticket *
ticket_pop(dr_ticket **list, size_t *n)
{
    dr_ticket *t = *list;
    if (t) {
        *list = t->next;
        (*n)--;
    }
    return t;
}

static bool
ticket_push(dr_ticket **list, size_t *n, size_t max, dr_ticket *t)
{
    if (*n >= max) {
        return false;
    }
    t->next = *list;
    *list = t;
    (*n)++;
    return true;
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
    dr_ticket *pt = NULL;
    ksfi_pending *pp = NULL;
    if (reply_thread_of == cli) {
        pt = ticket_pop(&cli->rt_free_tickets, &cli->rt_n_free_tickets);
        pp = pending_pop(&cli->rt_free_pending, &cli->rt_n_free_pending);
    }
    if (!pt || !pp) {
        pthread_mutex_lock(&cli->pool_lock);
        pt = pt ? pt : ticket_pop(&cli->free_tickets, &cli->n_free_tickets);
        pp = pp ? pp : pending_pop(&cli->free_pending, &cli->n_free_pending);
        pthread_mutex_unlock(&cli->pool_lock);
    }
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
    if (reply_thread_of == cli &&
        pending_push(&cli->rt_free_pending, &cli->rt_n_free_pending, POOL_RT_MAX, p)) {
        return;
    }
    pthread_mutex_lock(&cli->pool_lock);
    bool kept =
        pending_push(&cli->free_pending, &cli->n_free_pending, POOL_MAX - POOL_RT_MAX, p);
    pthread_mutex_unlock(&cli->pool_lock);
    if (!kept) {
        ksfi_free(p); /* the pool was full */
    }
}

dr_ticket *
ksfi_client_ticket_new(ksf_client *cli)
{
    dr_ticket *t = NULL;
    if (reply_thread_of == cli) {
        t = ticket_pop(&cli->rt_free_tickets, &cli->rt_n_free_tickets);
    }
    if (!t) {
        pthread_mutex_lock(&cli->pool_lock);
        t = ticket_pop(&cli->free_tickets, &cli->n_free_tickets);
        pthread_mutex_unlock(&cli->pool_lock);
    }
    return ticket_ready(t);
}

void
ksfi_client_ticket_free(ksf_client *cli, dr_ticket *t)
{
    if (!t || t == &cli->plain_event) {
        return;
    }
    if (reply_thread_of == cli &&
        ticket_push(&cli->rt_free_tickets, &cli->rt_n_free_tickets, POOL_RT_MAX, t)) {
        return;
    }
    pthread_mutex_lock(&cli->pool_lock);
    bool kept =
        ticket_push(&cli->free_tickets, &cli->n_free_tickets, POOL_MAX - POOL_RT_MAX, t);
    pthread_mutex_unlock(&cli->pool_lock);
    if (!kept) {
        ksfi_free(t); /* the pool was full */
    }
}

void
ksfi_client_pools_free(ksf_client *cli)
{
    ksfi_pending *plists[] = {cli->free_pending, cli->rt_free_pending};
    dr_ticket *tlists[] = {cli->free_tickets, cli->rt_free_tickets};
    for (size_t i = 0; i < 2; i++) {
        while (plists[i]) {
            ksfi_pending *p = plists[i];
            plists[i] = p->hnext;
            ksfi_free(p);
        }
        while (tlists[i]) {
            dr_ticket *t = tlists[i];
            tlists[i] = t->next;
            ksfi_free(t);
        }
    }
    cli->free_pending = cli->rt_free_pending = NULL;
    cli->free_tickets = cli->rt_free_tickets = NULL;
    cli->n_free_pending = cli->n_free_tickets = 0;
    cli->rt_n_free_pending = cli->rt_n_free_tickets = 0;
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
