#include "server/dispatch.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "base/thread_role.h"
#include "kafka/consumer.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

/* The watch thread wakes at least this often (a budget armed meanwhile signals it). */
#define KSFI_WATCH_IDLE_MS 1000
/* Delivery reports that waited this long while every worker was inside a handler
 * are served by the watch thread instead (a slow handler on every worker must not
 * hold back other replies' acknowledgements, their offsets and the pause window). */
#define KSFI_REPORTS_STALE_MS 20
/* Budgets fired per scan; the rest wait for the next, immediate, scan. */
#define KSFI_WATCH_BATCH 16

/* Set on a worker thread to its pool: offsets completed there are stored together
 * after the reports or run that completed them (store_offsets), not one by one. */
static _Thread_local const struct ksfi_dispatch *batching KSFI_TLS_FAST;

/* One pattern (topic): its concurrency limit and time budget. */
typedef struct ksfi_pattern {
    char *topic;
    int limit;
    int active; /* started, incomplete messages (slots taken) */
    int timeout_ms;
} ksfi_pattern;

/*
 * One partition's state. Records form a list in offset order from the oldest
 * incomplete one (head) to the newest (tail); next_run is the first not yet started.
 * Partitions live until the pool is destroyed, so records may point at them safely;
 * `epoch` changes on every assign/revoke so that late completions of a revoked
 * generation store nothing.
 */
typedef struct ksfi_part {
    char *topic;
    ksfi_pattern *pat;
    int32_t partition;
    uint64_t epoch;
    bool assigned;
    bool busy; /* a worker runs one of its handlers now */
    bool in_ready;
    bool paused;         /* as last applied to the consumer */
    bool want_paused;    /* as decided from the queue length */
    int64_t next_offset; /* next offset expected from the consumer (dedup on refetch) */
    int64_t store_at;    /* the offset to store next (store_dirty) */
    bool store_dirty;    /* store_at advanced since the last store */
    ksfi_record *head, *tail, *next_run;
    size_t queued;  /* not yet started */
    size_t pending; /* started and not complete */
    size_t bytes;   /* keys and values of the queued and pending ones */
    size_t held;    /* failed events awaiting their retry: nothing new starts */
    ksfi_record *due_head, *due_tail; /* retries ready to run, before anything new */
    struct ksfi_part *next_ready;
} ksfi_part;

struct ksfi_dispatch {
    const ksfi_logger *log;
    const ksfi_dispatch_ops *ops;
    pthread_mutex_t lock; /* guards everything below and every rec's dispatch fields */
    pthread_cond_t work;  /* a partition became ready, or stopping */
    pthread_cond_t idle;  /* a record completed or a handler returned */
    int idle_waiters;     /* threads in wait_idle: idle_wake skips the broadcast at 0 */
    ksfi_part **parts;
    size_t nparts;
    ksfi_part *last_part; /* the one part_get found last (parts live until destroy) */
    ksfi_part *ready_head, *ready_tail;
    /* Started records of revoked partitions, not complete yet (linked by next): a
     * deferred one may never be finished, and destroy must still free it. */
    ksfi_record *orphans;
    size_t queued_high;          /* the most messages one partition ever had queued */
    ksfi_kafka_handle *consumer; /* NULL when not running: nothing is stored */
    pthread_t *threads;
    int nthreads;
    bool stopping; /* no handler starts any more (drain, stop) */
    bool exiting;  /* the workers leave (stop) */
    /* Delivery reports, served by the workers (set_serve). */
    void (*serve)(void *user);
    void *serve_user;
    bool reports_ready; /* the hook said reports wait; a worker serves them */
    int64_t reports_at; /* when reports_ready was set (monotonic ms) */
    int running;        /* workers in a run (between taking a partition and its end) */
    bool store_dirty;   /* some partition's store_dirty is set */
    /* Some partition's want_paused changed: sync_pause has work. Written under the
     * lock, read first without it (sync_pause runs after every poll). */
    atomic_bool pause_dirty;
    ksfi_pattern **pats;
    size_t npats;
    const ksfi_policy_config *policy; /* NULL: unlimited, no budgets */
    int workers;
    size_t npatterns;
    uint64_t throttled;
    uint64_t pauses; /* pauses applied: a partition's window was full */
    /* Deferred records whose handler returned and whose finish has not come: they
     * hold no worker and no pattern slot, only memory, so they have their own bound
     * (server.deferred.max); at it, no new handler starts until one finishes. */
    int parked, parked_max;
    /* A partition's window (KSFI_DISPATCH_WINDOW_DEFAULT): paused at window messages
     * or window_bytes, resumed at a quarter of both. */
    size_t window, window_bytes;
    pthread_cond_t watch; /* CLOCK_MONOTONIC: a budget was armed or a retry scheduled */
    pthread_t watcher;
    int64_t watch_next; /* when the sleeping watch thread wakes; 0 while it scans */
    bool watching, watch_exit;
    /* No workers (server.workers=0): the consumer thread runs the handlers itself
     * (ksfi_dispatch_run_inline). Its poll is woken through @c wake for work made
     * ready on another thread (inline mode) and for a partition to resume (both). */
    bool inline_mode;
    pthread_t consumer_thread; /* the thread that called start: the consumer's */
    void (*wake)(void *user);
    void *wake_user;
    /* ksfi_dispatch_submit_many: partitions made ready while the lock is held are
     * counted here and their workers signalled once it is released, so that a woken
     * worker does not at once wait for the lock the submitting thread still holds. */
    bool defer_wakes;
    int wakes_owed;
};

/* A record completed, a handler returned or reports wait: wake whoever waits in
 * wait_idle (a drain or revoke). Most calls find nobody: the broadcast is skipped then,
 * two per request on the hot path. Lock held. */
static void
idle_wake(ksfi_dispatch *d)
{
    if (d->idle_waiters) {
        pthread_cond_broadcast(&d->idle);
    }
}

ksf_err
ksfi_dispatch_new(ksfi_dispatch **out, const ksfi_logger *lg,
                  const ksfi_dispatch_ops *ops)
{
    ksfi_dispatch *d = ksfi_calloc(1, sizeof *d);
    if (!d) {
        return KSF_ENOMEM;
    }
    d->log = lg;
    d->ops = ops;
    d->parked_max = INT_MAX;
    d->window = KSFI_DISPATCH_WINDOW_DEFAULT;
    d->window_bytes = KSFI_DISPATCH_WINDOW_BYTES_DEFAULT;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->work, NULL);
    pthread_cond_init(&d->idle, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->watch, &ca);
    pthread_condattr_destroy(&ca);
    *out = d;
    return KSF_OK;
}

/* Free the records of list @p c (pool teardown or dropped queue). */
static void
free_list(ksfi_dispatch *d, ksfi_record *c)
{
    while (c) {
        ksfi_record *next = c->next;
        d->ops->free(c);
        c = next;
    }
}

void
ksfi_dispatch_destroy(ksfi_dispatch *d)
{
    if (!d) {
        return;
    }
    for (size_t i = 0; i < d->nparts; i++) {
        free_list(d, d->parts[i]->head);
        ksfi_free(d->parts[i]->topic);
        ksfi_free(d->parts[i]);
    }
    free_list(d, d->orphans);
    for (size_t i = 0; i < d->npats; i++) {
        ksfi_free(d->pats[i]->topic);
        ksfi_free(d->pats[i]);
    }
    ksfi_free(d->pats);
    ksfi_free(d->parts);
    ksfi_free(d->threads);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->work);
    pthread_cond_destroy(&d->idle);
    pthread_cond_destroy(&d->watch);
    ksfi_free(d);
}

void
ksfi_dispatch_set_policy(ksfi_dispatch *d, const ksfi_policy_config *pc, int workers,
                         size_t npatterns)
{
    pthread_mutex_lock(&d->lock);
    d->policy = pc;
    d->workers = workers;
    d->npatterns = npatterns;
    pthread_mutex_unlock(&d->lock);
}

/* Find or create the pattern of @p topic; NULL on ENOMEM. Lock held. */
static ksfi_pattern *
pattern_get(ksfi_dispatch *d, const char *topic)
{
    for (size_t i = 0; i < d->npats; i++) {
        if (!strcmp(d->pats[i]->topic, topic)) {
            return d->pats[i];
        }
    }
    ksfi_pattern **grown = ksfi_realloc(d->pats, (d->npats + 1) * sizeof *grown);
    if (!grown) {
        return NULL;
    }
    d->pats = grown;
    ksfi_pattern *pat = ksfi_calloc(1, sizeof *pat);
    if (!pat || !(pat->topic = ksfi_strdup(topic))) {
        ksfi_free(pat);
        return NULL;
    }
    pat->limit = INT_MAX;
    if (d->policy) {
        ksfi_policy pol = ksfi_policy_for(d->policy, topic);
        pat->limit = ksfi_policy_concurrency(pol.concurrency, d->workers, d->npatterns);
        pat->timeout_ms = pol.timeout_ms;
    }
    d->pats[d->npats++] = pat;
    return pat;
}

/* Find or create the partition; NULL on ENOMEM. Lock held. */
static ksfi_part *
part_get(ksfi_dispatch *d, const char *topic, int32_t partition)
{
    /* A fetched batch is mostly one partition's run: the last one found first. */
    ksfi_part *last = d->last_part;
    if (last && last->partition == partition && !strcmp(last->topic, topic)) {
        return last;
    }
    for (size_t i = 0; i < d->nparts; i++) {
        if (d->parts[i]->partition == partition && !strcmp(d->parts[i]->topic, topic)) {
            return d->last_part = d->parts[i];
        }
    }
    ksfi_part **grown = ksfi_realloc(d->parts, (d->nparts + 1) * sizeof *grown);
    if (!grown) {
        return NULL;
    }
    d->parts = grown;
    ksfi_part *p = ksfi_calloc(1, sizeof *p);
    if (!p || !(p->pat = pattern_get(d, topic)) || !(p->topic = ksfi_strdup(topic))) {
        ksfi_free(p);
        return NULL;
    }
    p->partition = partition;
    p->next_offset = -1;
    d->parts[d->nparts++] = p;
    return d->last_part = p;
}

/* The consumer thread has work that came from another thread: its poll returns at
 * once rather than at its timeout (the thread itself polls again soon anyway). Lock
 * held. */
static void
wake_consumer(ksfi_dispatch *d)
{
    if (d->wake && !pthread_equal(pthread_self(), d->consumer_thread)) {
        d->wake(d->wake_user);
    }
}

/* May @p p start its next message: one is queued, no retry holds the partition, the
 * pattern has a free slot and the server is below server.deferred.max? */
static bool
can_start(const ksfi_dispatch *d, const ksfi_part *p)
{
    return p->next_run && !p->held && p->pat->active < p->pat->limit &&
           d->parked < d->parked_max;
}

static void
make_ready(ksfi_dispatch *d, ksfi_part *p)
{
    if (p->in_ready || p->busy || !p->assigned || d->stopping) {
        return;
    }
    if (!p->due_head && !can_start(d, p)) {
        if (p->next_run && !p->held && !p->next_run->throttled) {
            p->next_run->throttled = true; /* waits for its pattern's limit */
            d->throttled++;
        }
        return;
    }
    p->in_ready = true;
    p->next_ready = NULL;
    if (d->ready_tail) {
        d->ready_tail->next_ready = p;
    } else {
        d->ready_head = p;
    }
    d->ready_tail = p;
    if (d->defer_wakes) {
        d->wakes_owed++;
    } else {
        pthread_cond_signal(&d->work);
    }
    if (d->inline_mode) { /* a deferred finish, a due retry: the consumer runs it */
        wake_consumer(d);
    }
}

static void
update_pause(ksfi_dispatch *d, ksfi_part *p)
{
    bool was = p->want_paused;
    size_t n = p->queued + p->pending;
    if (n >= d->window || p->bytes >= d->window_bytes) {
        p->want_paused = true;
    } else if (n <= d->window / 4 && p->bytes <= d->window_bytes / 4) {
        p->want_paused = false;
    }
    if (p->want_paused != was) {
        atomic_store_explicit(&d->pause_dirty, true, memory_order_relaxed);
        if (!p->want_paused) {
            /* A paused partition fetches nothing that would end the consumer's poll:
             * without this its resume waited for the poll's timeout (100 ms). */
            wake_consumer(d);
        }
    }
}

/* Queue @p rec behind its partition's earlier ones; false when it is not taken (its
 * partition is not assigned, or it was queued before: a refetch after a pause), and
 * the caller frees it. Lock held. */
static bool
enqueue(ksfi_dispatch *d, ksfi_record *rec)
{
    ksfi_part *p = part_get(d, rec->topic, rec->partition);
    /* Not ours (any more), or already seen (a refetch after pause/resume): drop it
     * unstored; the owner of the partition will get it from the committed offset. */
    if (!p || !p->assigned || (p->next_offset >= 0 && rec->offset < p->next_offset)) {
        ksfi_log(d->log, KSF_LOG_DEBUG, "server", "dropping %s[%d]@%lld: %s", rec->topic,
                 (int)rec->partition, (long long)rec->offset,
                 p ? "not assigned or already queued" : "out of memory");
        return false;
    }
    p->next_offset = rec->offset + 1;
    rec->topic = p->topic; /* the same name, kept to the end: the message may go first */
    rec->dispatch = d;
    rec->part = p;
    rec->epoch = p->epoch;
    rec->next = NULL;
    if (p->tail) {
        p->tail->next = rec;
    } else {
        p->head = rec;
    }
    p->tail = rec;
    if (!p->next_run) {
        p->next_run = rec;
    }
    p->queued++;
    p->bytes += rec->bytes;
    if (p->queued > d->queued_high) {
        d->queued_high = p->queued;
    }
    update_pause(d, p);
    make_ready(d, p);
    return true;
}

void
ksfi_dispatch_submit_many(ksfi_dispatch *d, ksfi_record **recs, size_t n)
{
    ksfi_record *dropped = NULL;
    pthread_mutex_lock(&d->lock);
    d->defer_wakes = true;
    for (size_t i = 0; i < n; i++) {
        if (!enqueue(d, recs[i])) {
            recs[i]->next = dropped;
            dropped = recs[i];
        }
    }
    d->defer_wakes = false;
    int wakes = d->wakes_owed < d->nthreads ? d->wakes_owed : d->nthreads;
    d->wakes_owed = 0;
    pthread_mutex_unlock(&d->lock);
    /* Signalled after the unlock: each signal meets a worker that can take the lock.
     * The ready list changed under the lock, so no waiting worker misses it. */
    for (int i = 0; i < wakes; i++) {
        pthread_cond_signal(&d->work);
    }
    while (dropped) {
        ksfi_record *next = dropped->next;
        d->ops->free(dropped);
        dropped = next;
    }
}

void
ksfi_dispatch_submit(ksfi_dispatch *d, ksfi_record *rec)
{
    ksfi_dispatch_submit_many(d, &rec, 1);
}

size_t
ksfi_dispatch_queued_high(ksfi_dispatch *d)
{
    pthread_mutex_lock(&d->lock);
    size_t n = d->queued_high;
    pthread_mutex_unlock(&d->lock);
    return n;
}

size_t
ksfi_dispatch_queued_now(ksfi_dispatch *d)
{
    pthread_mutex_lock(&d->lock);
    size_t n = 0;
    for (size_t i = 0; i < d->nparts; i++) {
        n += d->parts[i]->queued;
    }
    pthread_mutex_unlock(&d->lock);
    return n;
}

/* Partitions whose offsets one store call takes from the stack; more allocate. */
#define KSFI_STORE_STACK 16

/*
 * Store every partition's advanced offset (store_dirty) in one call with one partition
 * list: per message this was a one-entry list built, stored and destroyed, on the
 * delivery-report thread (1.4k instructions per request). Lock held, so that a revoke
 * or a drain that found the partition complete stores before it forgets it.
 */
static void
store_offsets(ksfi_dispatch *d)
{
    if (!d->store_dirty) {
        return;
    }
    d->store_dirty = false;
    ksfi_kafka_tpo stack[KSFI_STORE_STACK], *v = stack;
    size_t n = 0;
    for (size_t i = 0; i < d->nparts; i++) {
        n += d->parts[i]->store_dirty;
    }
    if (n > KSFI_STORE_STACK && !(v = ksfi_calloc(n, sizeof *v))) {
        v = stack; /* out of memory: store in slices of the stack's size */
    }
    size_t k = 0, cap = v == stack ? KSFI_STORE_STACK : n;
    for (size_t i = 0; i < d->nparts; i++) {
        ksfi_part *p = d->parts[i];
        if (!p->store_dirty) {
            continue;
        }
        p->store_dirty = false;
        v[k++] = (ksfi_kafka_tpo){p->topic, p->partition, p->store_at};
        bool last = --n == 0;
        if ((k == cap || last) && d->consumer) {
            ksf_errinfo ei = {0};
            if (ksfi_kafka_store_offsets(d->consumer, v, k, &ei)) {
                ksfi_log(d->log, KSF_LOG_WARNING, "server", "%s", ei.text);
            }
        }
        if (k == cap || last) {
            k = 0;
        }
    }
    if (v != stack) {
        ksfi_free(v);
    }
}

/* Free the contiguous completed prefix and note the offset after it for the next
 * store: at once, unless a worker is completing records (it stores after them). */
static void
advance(ksfi_dispatch *d, ksfi_part *p)
{
    int64_t last = -1;
    while (p->head && p->head->done) {
        ksfi_record *c = p->head;
        last = c->offset;
        p->head = c->next;
        if (p->tail == c) {
            p->tail = NULL;
        }
        d->ops->free(c);
    }
    if (last < 0 || !d->consumer) {
        return;
    }
    p->store_at = last + 1;
    p->store_dirty = true;
    d->store_dirty = true;
    if (batching != d) {
        store_offsets(d);
    }
}

/* A slot of @p pat was freed: its partitions waiting for one may go. Lock held. */
static void
wake_pattern(ksfi_dispatch *d, const ksfi_pattern *pat)
{
    for (size_t i = 0; i < d->nparts && pat->active < pat->limit; i++) {
        if (d->parts[i]->pat == pat) {
            make_ready(d, d->parts[i]);
        }
    }
}

/* Give back @p rec's slot of its pattern, if it still has one. Lock held. */
static void
release_slot(ksfi_dispatch *d, ksfi_record *rec)
{
    ksfi_part *p = rec->part;
    if (!rec->slot) {
        return;
    }
    /* Only a full pattern can have partitions waiting for a slot. */
    bool was_full = p->pat->active >= p->pat->limit;
    rec->slot = false;
    p->pat->active--;
    if (was_full) {
        wake_pattern(d, p->pat);
    }
}

void
ksfi_dispatch_set_window(ksfi_dispatch *d, size_t count, size_t bytes)
{
    pthread_mutex_lock(&d->lock);
    d->window = count ? count : d->window;
    d->window_bytes = bytes ? bytes : d->window_bytes;
    pthread_mutex_unlock(&d->lock);
}

void
ksfi_dispatch_set_deferred_max(ksfi_dispatch *d, int max)
{
    pthread_mutex_lock(&d->lock);
    d->parked_max = max > 0 ? max : INT_MAX;
    pthread_mutex_unlock(&d->lock);
}

void
ksfi_dispatch_parked(ksfi_record *rec)
{
    if (!rec->part) {
        return;
    }
    ksfi_dispatch *d = rec->dispatch;
    pthread_mutex_lock(&d->lock);
    if (!rec->handler_done && !rec->parked) { /* else the finish came first */
        release_slot(d, rec);
        rec->parked = true;
        d->parked++;
    }
    pthread_mutex_unlock(&d->lock);
}

void
ksfi_dispatch_handler_done(ksfi_record *rec)
{
    if (!rec->part) {
        return;
    }
    ksfi_dispatch *d = rec->dispatch;
    pthread_mutex_lock(&d->lock);
    release_slot(d, rec);
    rec->handler_done = true;
    if (rec->parked) {
        rec->parked = false;
        if (d->parked-- == d->parked_max) {
            for (size_t i = 0; i < d->nparts; i++) { /* every pattern waited */
                make_ready(d, d->parts[i]);
            }
        }
    }
    pthread_mutex_unlock(&d->lock);
}

void
ksfi_dispatch_done(ksfi_record *rec)
{
    ksfi_part *p = rec->part;
    /* The pool outlives every record: destroy frees those still held. */
    ksfi_dispatch *d = rec->dispatch;
    pthread_mutex_lock(&d->lock);
    release_slot(d, rec); /* a retried event's, or a handler that never finished */
    if (rec->epoch != p->epoch) {
        /* Revoked while it ran: unlinked from the window, kept among the orphans. */
        ksfi_record **link = &d->orphans;
        while (*link && *link != rec) {
            link = &(*link)->next;
        }
        if (*link) {
            *link = rec->next;
        }
        d->ops->free(rec);
    } else {
        if (rec->holding) {
            rec->holding = false;
            p->held--;
        }
        rec->done = true;
        p->pending--;
        p->bytes -= rec->bytes;
        update_pause(d, p);
        advance(d, p);
        make_ready(d, p);
    }
    idle_wake(d);
    pthread_mutex_unlock(&d->lock);
}

/* The next record @p p may run (a due retry first), marked started; NULL when none
 * (its pattern filled up since it became ready). Lock held. */
static ksfi_record *
take_next(ksfi_dispatch *d, ksfi_part *p, bool *retry)
{
    ksfi_record *c = p->due_head;
    if (c) {
        p->due_head = c->retry_next;
        if (!p->due_head) {
            p->due_tail = NULL;
        }
        c->retry_state = KSFI_RETRY_NONE;
        *retry = true;
        return c;
    }
    if (!can_start(d, p)) {
        return NULL;
    }
    c = p->next_run;
    p->next_run = c->next;
    c->started = true;
    c->slot = true;
    p->pat->active++;
    p->queued--;
    p->pending++;
    update_pause(d, p);
    *retry = false;
    return c;
}

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Serve the delivery reports waiting, then store the offsets they completed. Lock
 * held (released while serving). */
static void
serve_reports(ksfi_dispatch *d)
{
    d->reports_ready = false;
    if (d->serve) {
        pthread_mutex_unlock(&d->lock);
        d->serve(d->serve_user);
        pthread_mutex_lock(&d->lock);
    }
    store_offsets(d);
}

/* Does @p p's run go on after @p ran messages since @p begun_ms? While no other
 * partition waits, as long as it has work; else within its bounds. Lock held. */
static bool
run_goes_on(const ksfi_dispatch *d, int ran, int64_t begun_ms)
{
    if (d->stopping) {
        return false;
    }
    if (!d->ready_head) {
        return true;
    }
    return ran < KSFI_DISPATCH_RUN_MAX &&
           mono_ms() - begun_ms < KSFI_DISPATCH_RUN_SLICE_MS;
}

/* Run the partition at the head of the ready list: its next messages on this thread
 * (its run), their replies produced back to back (one produce batch), without handing
 * each message through the ready list and another worker's wake-up. Bounded while
 * other partitions wait (run_goes_on), so a slow handler hands the rest back. Lock
 * held (released while handlers run). */
static void
run_ready(ksfi_dispatch *d)
{
    ksfi_part *p = d->ready_head;
    d->ready_head = p->next_ready;
    if (!d->ready_head) {
        d->ready_tail = NULL;
    }
    p->in_ready = false;
    bool retry = false;
    ksfi_record *c = take_next(d, p, &retry);
    if (!c) {
        /* Its pattern filled up since it became ready: make_ready counts it as
         * throttled, and it is made ready again when a slot frees. */
        make_ready(d, p);
        return;
    }
    p->busy = true;
    d->running++;
    int64_t begun = d->ready_head ? mono_ms() : 0;
    int ran = 0;
    while (c) {
        pthread_mutex_unlock(&d->lock);
        if (retry) {
            d->ops->run_due(c);
        } else {
            d->ops->run(c); /* c may be freed when this returns */
        }
        pthread_mutex_lock(&d->lock);
        idle_wake(d);
        if (d->reports_ready) {
            serve_reports(d);
        } else if (ran % KSFI_DISPATCH_RUN_MAX == KSFI_DISPATCH_RUN_MAX - 1) {
            store_offsets(d); /* a long run of events: no report stores them */
        }
        if (d->ready_head && !begun) {
            begun = mono_ms(); /* the slice counts from when others wait */
        }
        c = run_goes_on(d, ++ran, begun) ? take_next(d, p, &retry) : NULL;
    }
    p->busy = false;
    d->running--;
    make_ready(d, p);
}

static void *
worker_main(void *arg)
{
    ksfi_dispatch *d = arg;
    batching = d;
    pthread_mutex_lock(&d->lock);
    for (;;) {
        store_offsets(d); /* what the last run completed without a report (events) */
        while (!d->ready_head && !d->reports_ready && !d->exiting) {
            pthread_cond_wait(&d->work, &d->lock);
        }
        if (d->reports_ready) {
            serve_reports(d);
            continue;
        }
        if (!d->ready_head) {
            break; /* exiting (stop): drain is over */
        }
        run_ready(d);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

bool
ksfi_dispatch_run_inline(ksfi_dispatch *d)
{
    batching = d;
    ksfi_thread_set_inline_handlers(true);
    pthread_mutex_lock(&d->lock);
    int64_t begun = mono_ms();
    while ((d->reports_ready || (d->ready_head && !d->stopping)) &&
           mono_ms() - begun < KSFI_DISPATCH_INLINE_PASS_MS) {
        if (d->reports_ready) {
            serve_reports(d);
        } else {
            run_ready(d);
        }
    }
    store_offsets(d);
    bool more = d->reports_ready || (d->ready_head && !d->stopping);
    pthread_mutex_unlock(&d->lock);
    ksfi_thread_set_inline_handlers(false);
    batching = NULL;
    return more;
}

void
ksfi_dispatch_set_wake(ksfi_dispatch *d, void (*fn)(void *user), void *user)
{
    pthread_mutex_lock(&d->lock);
    d->wake = fn;
    d->wake_user = user;
    pthread_mutex_unlock(&d->lock);
}

/* Take a reference on @p c unless it is already completing. */
static bool
take_ref(ksfi_record *c)
{
    int v = atomic_load(&c->pending);
    while (v > 0 && !atomic_compare_exchange_weak(&c->pending, &v, v + 1)) {
    }
    return v > 0;
}

static void
push_due(ksfi_part *p, ksfi_record *c)
{
    c->retry_state = KSFI_RETRY_DUE;
    c->retry_next = NULL;
    if (p->due_tail) {
        p->due_tail->retry_next = c;
    } else {
        p->due_head = c;
    }
    p->due_tail = c;
}

/*
 * One pass over the started, incomplete records: expired budgets are collected into
 * @p fired (with a reference each), due retries are queued. Returns the count fired;
 * *next gets the earliest deadline still ahead. Lock held.
 */
static size_t
watch_scan(ksfi_dispatch *d, int64_t now, int64_t *next,
           ksfi_record *fired[KSFI_WATCH_BATCH])
{
    size_t n = 0;
    for (size_t i = 0; i < d->nparts; i++) {
        ksfi_part *p = d->parts[i];
        for (ksfi_record *c = p->head; c && c != p->next_run; c = c->next) {
            if (c->done || c->abandoned) {
                continue;
            }
            if (c->budget_at_ms && !c->budget_sent) {
                if (c->budget_at_ms > now) {
                    *next = c->budget_at_ms < *next ? c->budget_at_ms : *next;
                } else if (n < KSFI_WATCH_BATCH) {
                    c->budget_sent = true;
                    if (take_ref(c)) {
                        fired[n++] = c;
                    }
                } else {
                    *next = now;
                }
            }
            if (c->retry_state == KSFI_RETRY_WAITING) {
                if (c->retry_at_ms > now) {
                    *next = c->retry_at_ms < *next ? c->retry_at_ms : *next;
                } else {
                    push_due(p, c);
                    make_ready(d, p);
                }
            }
        }
    }
    return n;
}

/* The watch thread: request time budgets and retry backoffs. */
static void *
watch_main(void *arg)
{
    ksfi_dispatch *d = arg;
    ksfi_record *fired[KSFI_WATCH_BATCH];
    pthread_mutex_lock(&d->lock);
    while (!d->watch_exit) {
        int64_t now = mono_ms(), next = now + KSFI_WATCH_IDLE_MS;
        size_t n = watch_scan(d, now, &next, fired);
        if (n) {
            pthread_mutex_unlock(&d->lock);
            for (size_t i = 0; i < n; i++) {
                d->ops->budget_expired(fired[i]);
                d->ops->release(fired[i]);
            }
            pthread_mutex_lock(&d->lock);
            continue;
        }
        if (d->reports_ready) {
            if (now - d->reports_at >= KSFI_REPORTS_STALE_MS) {
                serve_reports(d); /* no worker got to them: all in handlers */
                continue;
            }
            int64_t due = d->reports_at + KSFI_REPORTS_STALE_MS;
            next = due < next ? due : next;
        } else if (d->nthreads && d->running >= d->nthreads) {
            /* Every worker in a run: look again within the stale bound rather than be
             * signalled for every batch of reports while they stay busy. */
            next =
                now + KSFI_REPORTS_STALE_MS < next ? now + KSFI_REPORTS_STALE_MS : next;
        }
        struct timespec ts = {(time_t)(next / 1000), (long)(next % 1000) * 1000000L};
        d->watch_next = next;
        pthread_cond_timedwait(&d->watch, &d->lock, &ts);
        d->watch_next = 0; /* scanning: anything armed now is seen by this scan */
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

void
ksfi_dispatch_arm_budget(ksfi_record *rec)
{
    ksfi_dispatch *d = rec->dispatch;
    if (!d) {
        return;
    }
    ksfi_part *p = rec->part;
    /* A pattern's budget never changes once created (under the lock, before this
     * record was queued): most servers have none and skip the lock here. */
    if (p->pat->timeout_ms <= 0) {
        return;
    }
    pthread_mutex_lock(&d->lock);
    if (rec->epoch == p->epoch && !rec->budget_at_ms) {
        rec->budget_ms = p->pat->timeout_ms;
        rec->budget_at_ms = mono_ms() + p->pat->timeout_ms;
        if (rec->budget_at_ms < d->watch_next) { /* else the watch wakes in time */
            pthread_cond_signal(&d->watch);
        }
    }
    pthread_mutex_unlock(&d->lock);
}

bool
ksfi_dispatch_retry_later(ksfi_record *rec, int kind, int delay_ms)
{
    ksfi_dispatch *d = rec->dispatch;
    pthread_mutex_lock(&d->lock);
    ksfi_part *p = rec->part;
    bool ours = rec->epoch == p->epoch;
    if (ours) {
        if (!rec->holding) {
            rec->holding = true;
            p->held++;
        }
        rec->retry_kind = kind;
        rec->retry_at_ms = mono_ms() + delay_ms;
        rec->retry_state = KSFI_RETRY_WAITING;
        pthread_cond_signal(&d->watch);
        /* A drain or revoke waiting for this partition gives the retry up. */
        idle_wake(d);
    }
    pthread_mutex_unlock(&d->lock);
    return ours;
}

void
ksfi_dispatch_set_serve(ksfi_dispatch *d, void (*fn)(void *user), void *user)
{
    pthread_mutex_lock(&d->lock);
    d->serve = fn;
    d->serve_user = user;
    pthread_mutex_unlock(&d->lock);
}

/* An assigned partition is paused, or to be. Lock held. */
static bool
any_paused_locked(const ksfi_dispatch *d)
{
    for (size_t i = 0; i < d->nparts; i++) {
        const ksfi_part *p = d->parts[i];
        if (p->assigned && (p->paused || p->want_paused)) {
            return true;
        }
    }
    return false;
}

void
ksfi_dispatch_reports_ready(ksfi_dispatch *d)
{
    pthread_mutex_lock(&d->lock);
    if (!d->reports_ready) {
        d->reports_ready = true;
        d->reports_at = mono_ms();
        /* One idle worker serves them; a busy one sees the flag after its message.
         * Inline: the consumer thread, also while it waits in revoke or drain. */
        pthread_cond_signal(&d->work);
        if (d->inline_mode) {
            idle_wake(d);
            /* The consumer thread serves them after its poll, which the next request
             * ends anyway and which is bounded while reports are owed (server.c,
             * consume): a wake-up per batch of reports was half that thread's wake-ups
             * one request at a time. At once only where serving them lets fetching go
             * on: a partition paused on its window resumes once its records are
             * acknowledged. */
            if (any_paused_locked(d)) {
                wake_consumer(d);
            }
        }
        /* Every worker inside a handler: the watch thread serves them if none is done
         * within KSFI_REPORTS_STALE_MS (it is told only when it sleeps longer). */
        if (d->nthreads && d->running >= d->nthreads &&
            d->watch_next > d->reports_at + KSFI_REPORTS_STALE_MS) {
            pthread_cond_signal(&d->watch);
        }
    }
    pthread_mutex_unlock(&d->lock);
}

uint64_t
ksfi_dispatch_throttled(ksfi_dispatch *d)
{
    pthread_mutex_lock(&d->lock);
    uint64_t n = d->throttled;
    pthread_mutex_unlock(&d->lock);
    return n;
}

uint64_t
ksfi_dispatch_pauses(ksfi_dispatch *d)
{
    pthread_mutex_lock(&d->lock);
    uint64_t n = d->pauses;
    pthread_mutex_unlock(&d->lock);
    return n;
}

ksf_err
ksfi_dispatch_start(ksfi_dispatch *d, int workers, ksfi_kafka_handle *consumer,
                    ksf_errinfo *ei)
{
    d->inline_mode = workers == 0;
    d->consumer_thread = pthread_self();
    d->threads = ksfi_calloc(workers ? (size_t)workers : 1, sizeof *d->threads);
    if (!d->threads) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory starting %d workers", workers);
    }
    d->consumer = consumer;
    d->stopping = false;
    d->exiting = false;
    d->watch_exit = false;
    int wrc = pthread_create(&d->watcher, NULL, watch_main, d);
    if (wrc) {
        ksfi_free(d->threads);
        d->threads = NULL;
        return ksfi_fail(ei, KSF_EINVAL, "cannot start the dispatcher's watch thread: %s",
                         strerror(wrc));
    }
    d->watching = true;
    for (int i = 0; i < workers; i++) {
        int rc = pthread_create(&d->threads[i], NULL, worker_main, d);
        if (rc) {
            ksfi_dispatch_stop(d);
            return ksfi_fail(ei, KSF_EINVAL, "cannot start worker thread %d of %d: %s",
                             i + 1, workers, strerror(rc));
        }
        d->nthreads = i + 1;
    }
    return KSF_OK;
}

void
ksfi_dispatch_assign(ksfi_dispatch *d, const ksfi_kafka_tp *parts, size_t n)
{
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < n; i++) {
        ksfi_part *p = part_get(d, parts[i].topic, parts[i].partition);
        if (!p) {
            ksfi_log(d->log, KSF_LOG_ERROR, "server",
                     "out of memory tracking %s[%d]; its messages will not be served",
                     parts[i].topic, (int)parts[i].partition);
            continue;
        }
        p->assigned = true;
        p->epoch++;
        p->next_offset = -1;
        p->paused = p->want_paused = false;
        p->store_dirty = false;
    }
    pthread_mutex_unlock(&d->lock);
}

/* Wait until a record completes or @p until; ETIMEDOUT at the deadline. Inline mode:
 * no worker serves the delivery reports that complete the records, so serve them
 * here first (reports_ready broadcasts idle). Lock held. */
static int
wait_idle(ksfi_dispatch *d, const struct timespec *until)
{
    if (d->inline_mode && d->reports_ready) {
        serve_reports(d);
        return 0;
    }
    d->idle_waiters++;
    int rc = pthread_cond_timedwait(&d->idle, &d->lock, until);
    d->idle_waiters--;
    return rc;
}

/* Absolute deadline @p ms from now on CLOCK_REALTIME (pthread_cond_timedwait's). */
static struct timespec
deadline_in(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Forget @p p's window: queued records are freed, started ones become orphans, freed
 * by ksfi_dispatch_done when they complete (their epoch no longer matches) or by
 * ksfi_dispatch_destroy. */
static void
detach(ksfi_dispatch *d, ksfi_part *p)
{
    if (p->in_ready) { /* unlink from the ready list */
        ksfi_part **pp = &d->ready_head, *prev = NULL;
        while (*pp != p) {
            prev = *pp;
            pp = &(*pp)->next_ready;
        }
        *pp = p->next_ready;
        if (d->ready_tail == p) {
            d->ready_tail = prev;
        }
        p->in_ready = false;
    }
    ksfi_record *c = p->head;
    while (c) {
        ksfi_record *next = c->next;
        if (!c->started || c->done || c->abandoned) {
            d->ops->free(c);
        } else {
            c->next = d->orphans;
            d->orphans = c;
        }
        c = next;
    }
    p->head = p->tail = p->next_run = NULL;
    p->due_head = p->due_tail = NULL;
    p->queued = p->pending = p->held = p->bytes = 0;
    p->assigned = false;
    p->epoch++;
}

/* Cut the not-yet-started tail off @p p's window and free it: the next owner of the
 * partition gets those messages again from the committed offset. */
static void
drop_queued(ksfi_dispatch *d, ksfi_part *p)
{
    if (!p->next_run) {
        return;
    }
    ksfi_record *prev = NULL;
    for (ksfi_record *c = p->head; c != p->next_run; c = c->next) {
        prev = c;
    }
    if (prev) {
        prev->next = NULL;
    } else {
        p->head = NULL;
    }
    p->tail = prev;
    for (ksfi_record *c = p->next_run; c; c = c->next) {
        p->bytes -= c->bytes;
    }
    free_list(d, p->next_run);
    p->next_run = NULL;
    p->queued = 0;
}

/*
 * Give up @p p's retries that wait (backoff or due) and hold nothing but the
 * handler's reference: they stay in the window unstored, so the offset never passes
 * them, and the message is delivered again after the rebalance or restart. Lock held.
 */
static void
abandon_retries(ksfi_dispatch *d, ksfi_part *p)
{
    bool was_full = p->pat->active >= p->pat->limit;
    for (ksfi_record *c = p->head; c && c != p->next_run; c = c->next) {
        if (c->retry_state == KSFI_RETRY_NONE || c->abandoned ||
            atomic_load(&c->pending) != 1) {
            continue; /* running, or its worker has not let go yet */
        }
        c->abandoned = true;
        atomic_store(&c->pending, 0);
        if (c->slot) {
            c->slot = false;
            p->pat->active--;
        }
        if (c->holding) {
            c->holding = false;
            p->held--;
        }
        p->pending--;
        p->bytes -= c->bytes;
        ksfi_log(d->log, KSF_LOG_NOTICE, "server",
                 "%s[%d]@%lld: retry abandoned (partition revoked or server stopping); "
                 "it will be delivered again",
                 p->topic, (int)p->partition, (long long)c->offset);
    }
    ksfi_record **link = &p->due_head;
    p->due_tail = NULL;
    while (*link) {
        if ((*link)->abandoned) {
            (*link)->retry_state = KSFI_RETRY_NONE;
            *link = (*link)->retry_next;
        } else {
            p->due_tail = *link;
            link = &(*link)->retry_next;
        }
    }
    for (ksfi_record *c = p->head; c && c != p->next_run; c = c->next) {
        if (c->abandoned) {
            c->retry_state = KSFI_RETRY_NONE;
        }
    }
    if (was_full && p->pat->active < p->pat->limit) {
        wake_pattern(d, p->pat); /* the pattern's other partitions may go on */
    }
}

size_t
ksfi_dispatch_revoke(ksfi_dispatch *d, const ksfi_kafka_tp *parts, size_t n,
                     int timeout_ms)
{
    struct timespec until = deadline_in(timeout_ms);
    size_t left = 0;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < n; i++) {
        ksfi_part *p = part_get(d, parts[i].topic, parts[i].partition);
        if (!p || !p->assigned) {
            continue;
        }
        drop_queued(d, p);
        int rc = 0;
        abandon_retries(d, p);
        while (p->pending > 0 && rc != ETIMEDOUT) {
            rc = wait_idle(d, &until);
            abandon_retries(d, p);
        }
        if (p->pending > 0) {
            ksfi_log(d->log, KSF_LOG_WARNING, "server",
                     "%s[%d] revoked with %zu message(s) still unfinished; the next "
                     "owner will handle them again",
                     p->topic, (int)p->partition, p->pending);
            left += p->pending;
        }
        store_offsets(d); /* what completed, before the commit that follows */
        detach(d, p);
    }
    pthread_mutex_unlock(&d->lock);
    return left;
}

/*
 * librdkafka 2.0.2's resume only clears a flag: the broker thread that fetches sleeps
 * up to 1 s before it looks again, so a paused backlog drained in bursts (a soak after
 * a server restart ran at a quarter of its speed). A seek to where the partition
 * stands wakes that thread at once; nothing is skipped or re-run (messages below
 * next_offset are dropped as refetched, see ksfi_dispatch_submit). Lock held.
 */
static void
wake_fetcher(ksfi_dispatch *d, const ksfi_part *p)
{
    if (p->next_offset < 0) {
        return; /* nothing consumed yet: the first fetch is not delayed */
    }
    ksf_errinfo ei = {0};
    if (ksfi_kafka_seek(d->consumer, p->topic, p->partition, p->next_offset, &ei)) {
        /* the resume still works, only up to 1 s later */
        ksfi_log(d->log, KSF_LOG_DEBUG, "server", "after resuming: %s", ei.text);
    }
}

void
ksfi_dispatch_sync_pause(ksfi_dispatch *d)
{
    /* Called after every poll: most of the time no decision changed. One set just
     * after this read is applied after the next poll, as one made just after the
     * loop below always was. */
    if (!atomic_load_explicit(&d->pause_dirty, memory_order_relaxed)) {
        return;
    }
    pthread_mutex_lock(&d->lock);
    atomic_store_explicit(&d->pause_dirty, false, memory_order_relaxed);
    for (size_t i = 0; i < d->nparts; i++) {
        ksfi_part *p = d->parts[i];
        if (!p->assigned || p->paused == p->want_paused || !d->consumer) {
            continue;
        }
        ksf_errinfo ei = {0};
        if (ksfi_kafka_pause(d->consumer, p->topic, p->partition, p->want_paused, &ei)) {
            ksfi_log(d->log, KSF_LOG_WARNING, "server", "%s", ei.text);
            /* tried again after the next poll */
            atomic_store_explicit(&d->pause_dirty, true, memory_order_relaxed);
            continue;
        }
        p->paused = p->want_paused;
        if (p->paused) {
            d->pauses++;
        } else {
            wake_fetcher(d, p);
        }
        ksfi_log(d->log, KSF_LOG_DEBUG, "server", "%s %s[%d] (%zu queued)",
                 p->paused ? "paused" : "resumed", p->topic, (int)p->partition,
                 p->queued);
    }
    pthread_mutex_unlock(&d->lock);
}

/* Messages queued or started and not complete, over all partitions. Lock held. */
static size_t
unfinished(const ksfi_dispatch *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->nparts; i++) {
        n += d->parts[i]->queued + d->parts[i]->pending;
    }
    return n;
}

/* Stop starting handlers: drop every queued message (lock held). */
static void
quiesce(ksfi_dispatch *d)
{
    d->stopping = true;
    for (size_t i = 0; i < d->nparts; i++) {
        drop_queued(d, d->parts[i]);
        d->parts[i]->in_ready = false;
    }
    d->ready_head = d->ready_tail = NULL;
    pthread_cond_broadcast(&d->work);
}

size_t
ksfi_dispatch_drain(ksfi_dispatch *d, int timeout_ms)
{
    struct timespec until = deadline_in(timeout_ms);
    pthread_mutex_lock(&d->lock);
    quiesce(d);
    int rc = 0;
    size_t left;
    for (size_t i = 0; i < d->nparts; i++) {
        abandon_retries(d, d->parts[i]);
    }
    while ((left = unfinished(d)) > 0 && rc != ETIMEDOUT) {
        rc = wait_idle(d, &until);
        for (size_t i = 0; i < d->nparts; i++) {
            abandon_retries(d, d->parts[i]);
        }
    }
    store_offsets(d); /* before the commit at stop */
    pthread_mutex_unlock(&d->lock);
    return left;
}

void
ksfi_dispatch_stop(ksfi_dispatch *d)
{
    pthread_mutex_lock(&d->lock);
    quiesce(d);
    store_offsets(d);
    d->exiting = true;
    d->wake = NULL; /* the consumer is about to close */
    pthread_cond_broadcast(&d->work);
    pthread_mutex_unlock(&d->lock);
    for (int i = 0; i < d->nthreads; i++) {
        pthread_join(d->threads[i], NULL);
    }
    ksfi_free(d->threads);
    d->threads = NULL;
    d->nthreads = 0;
    pthread_mutex_lock(&d->lock);
    d->watch_exit = true;
    pthread_cond_signal(&d->watch);
    pthread_mutex_unlock(&d->lock);
    if (d->watching) {
        pthread_join(d->watcher, NULL);
        d->watching = false;
    }
    pthread_mutex_lock(&d->lock);
    store_offsets(d); /* what the workers completed on their way out */
    d->consumer = NULL;
    for (size_t i = 0; i < d->nparts; i++) {
        d->parts[i]->assigned = false;
    }
    pthread_mutex_unlock(&d->lock);
}
