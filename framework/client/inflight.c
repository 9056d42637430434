#include "client/inflight.h"

#include "base/alloc.h"

#include <string.h>

#define INITIAL_BUCKETS 64

/* A remembered finished id; slots form a ring, chained per hash bucket. */
typedef struct recent_slot {
    char id[KSFI_ID_SIZE];
    unsigned char why; /* ksfi_recent; NONE marks an empty slot */
    int32_t next;      /* next slot in the same bucket, -1 at the end */
    size_t hash;       /* of id: an evicted slot is unlinked without hashing again */
} recent_slot;

struct ksfi_inflight {
    ksfi_pending **buckets; /* chained hash of live entries by id */
    size_t nbuckets;        /* a power of two */
    size_t count;
    ksfi_pending **heap; /* min-heap by deadline_ms */
    size_t heap_cap;
    recent_slot *ring; /* the last `memory` finished ids, oldest overwritten */
    int32_t *rbuckets; /* heads of the ring's chains, -1 when empty */
    size_t memory, nrbuckets, rpos;
};

/* FNV-1a over 8-byte words, then a final mix so the low bits (the bucket) depend on
 * every byte: ids are usually random UUIDs, but any id must spread. A request's id was
 * hashed up to four times, byte by byte (about 600 instructions per request in the
 * client); now once, a word at a time. */
static size_t
hash_id(const char *id, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, id + i, 8);
        h = (h ^ w) * 1099511628211ull;
    }
    for (; i < len; i++) {
        h = (h ^ (unsigned char)id[i]) * 1099511628211ull;
    }
    h ^= h >> 32;
    h *= 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    return (size_t)h;
}

static bool
id_eq(const char *stored, const char *id, size_t len)
{
    return len < KSFI_ID_SIZE && memcmp(stored, id, len) == 0 && stored[len] == '\0';
}

ksf_err
ksfi_inflight_new(size_t memory, ksfi_inflight **out)
{
    ksfi_inflight *t = ksfi_calloc(1, sizeof *t);
    if (!t) {
        return KSF_ENOMEM;
    }
    t->nbuckets = INITIAL_BUCKETS;
    t->buckets = ksfi_calloc(t->nbuckets, sizeof *t->buckets);
    if (!t->buckets) {
        goto fail;
    }
    t->memory = memory;
    if (memory) {
        t->nrbuckets = 1;
        while (t->nrbuckets < memory * 2) {
            t->nrbuckets <<= 1;
        }
        t->ring = ksfi_calloc(memory, sizeof *t->ring);
        t->rbuckets = ksfi_malloc(t->nrbuckets * sizeof *t->rbuckets);
        if (!t->ring || !t->rbuckets) {
            goto fail;
        }
        memset(t->rbuckets, 0xff, t->nrbuckets * sizeof *t->rbuckets); /* all -1 */
    }
    *out = t;
    return KSF_OK;
fail:
    ksfi_inflight_destroy(t);
    return KSF_ENOMEM;
}

void
ksfi_inflight_destroy(ksfi_inflight *t)
{
    if (!t) {
        return;
    }
    ksfi_free(t->buckets);
    ksfi_free(t->heap);
    ksfi_free(t->ring);
    ksfi_free(t->rbuckets);
    ksfi_free(t);
}

/* ---- deadline heap ------------------------------------------------------------- */

static void
heap_set(ksfi_inflight *t, size_t i, ksfi_pending *p)
{
    t->heap[i] = p;
    p->heap_idx = i;
}

static void
heap_up(ksfi_inflight *t, size_t i)
{
    ksfi_pending *p = t->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (t->heap[parent]->deadline_ms <= p->deadline_ms) {
            break;
        }
        heap_set(t, i, t->heap[parent]);
        i = parent;
    }
    heap_set(t, i, p);
}

static void
heap_down(ksfi_inflight *t, size_t i)
{
    size_t n = t->count;
    ksfi_pending *p = t->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && t->heap[c + 1]->deadline_ms < t->heap[c]->deadline_ms) {
            c++;
        }
        if (p->deadline_ms <= t->heap[c]->deadline_ms) {
            break;
        }
        heap_set(t, i, t->heap[c]);
        i = c;
    }
    heap_set(t, i, p);
}

/* ---- hash ------------------------------------------------------------------------ */

/* Double the bucket array; on ENOMEM keep the old one (longer chains, still correct). */
static void
grow_buckets(ksfi_inflight *t)
{
    size_t n = t->nbuckets * 2;
    ksfi_pending **b = ksfi_calloc(n, sizeof *b);
    if (!b) {
        return;
    }
    for (size_t i = 0; i < t->nbuckets; i++) {
        ksfi_pending *p = t->buckets[i];
        while (p) {
            ksfi_pending *next = p->hnext;
            size_t h = p->hash & (n - 1);
            p->hnext = b[h];
            b[h] = p;
            p = next;
        }
    }
    ksfi_free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

/* The live entry for @p id of @p len bytes whose hash is @p h, or NULL. */
static ksfi_pending *
find_hashed(const ksfi_inflight *t, const char *id, size_t len, size_t h)
{
    ksfi_pending *p = t->buckets[h & (t->nbuckets - 1)];
    while (p && !id_eq(p->id, id, len)) {
        p = p->hnext;
    }
    return p;
}

ksf_err
ksfi_inflight_add(ksfi_inflight *t, ksfi_pending *p)
{
    size_t len = strnlen(p->id, KSFI_ID_SIZE);
    if (len == KSFI_ID_SIZE) {
        return KSF_EEXIST;
    }
    p->hash = hash_id(p->id, len);
    if (find_hashed(t, p->id, len, p->hash)) {
        return KSF_EEXIST;
    }
    if (t->count == t->heap_cap) {
        size_t cap = t->heap_cap ? t->heap_cap * 2 : 64;
        ksfi_pending **h = ksfi_realloc(t->heap, cap * sizeof *h);
        if (!h) {
            return KSF_ENOMEM;
        }
        t->heap = h;
        t->heap_cap = cap;
    }
    if (t->count >= t->nbuckets) {
        grow_buckets(t);
    }
    size_t b = p->hash & (t->nbuckets - 1);
    p->hnext = t->buckets[b];
    t->buckets[b] = p;
    t->heap[t->count] = p;
    p->heap_idx = t->count;
    t->count++;
    heap_up(t, p->heap_idx);
    return KSF_OK;
}

ksfi_pending *
ksfi_inflight_find(const ksfi_inflight *t, const char *id, size_t len)
{
    return find_hashed(t, id, len, hash_id(id, len));
}

/* ---- recent ids -------------------------------------------------------------------- */

static void
recent_unlink(ksfi_inflight *t, int32_t slot)
{
    recent_slot *s = &t->ring[slot];
    int32_t *link = &t->rbuckets[s->hash & (t->nrbuckets - 1)];
    while (*link != -1 && *link != slot) {
        link = &t->ring[*link].next;
    }
    if (*link == slot) {
        *link = s->next;
    }
}

static void
remember(ksfi_inflight *t, const char *id, size_t hash, ksfi_recent why)
{
    if (!t->memory || why == KSFI_RECENT_NONE) {
        return;
    }
    int32_t slot = (int32_t)t->rpos;
    t->rpos = (t->rpos + 1) % t->memory;
    recent_slot *s = &t->ring[slot];
    if (s->why != KSFI_RECENT_NONE) {
        recent_unlink(t, slot);
    }
    memcpy(s->id, id, KSFI_ID_SIZE);
    s->why = (unsigned char)why;
    s->hash = hash;
    int32_t *head = &t->rbuckets[hash & (t->nrbuckets - 1)];
    s->next = *head;
    *head = slot;
}

ksfi_recent
ksfi_inflight_recent(const ksfi_inflight *t, const char *id, size_t len)
{
    if (!t->memory) {
        return KSFI_RECENT_NONE;
    }
    int32_t i = t->rbuckets[hash_id(id, len) & (t->nrbuckets - 1)];
    while (i != -1) {
        if (id_eq(t->ring[i].id, id, len)) {
            return (ksfi_recent)t->ring[i].why;
        }
        i = t->ring[i].next;
    }
    return KSFI_RECENT_NONE;
}

/* ---- removal ----------------------------------------------------------------------- */

void
ksfi_inflight_remove(ksfi_inflight *t, ksfi_pending *p, ksfi_recent why)
{
    ksfi_pending **link = &t->buckets[p->hash & (t->nbuckets - 1)];
    while (*link && *link != p) {
        link = &(*link)->hnext;
    }
    if (!*link) {
        return; /* not in the table */
    }
    *link = p->hnext;
    p->hnext = NULL;
    size_t i = p->heap_idx;
    t->count--;
    if (i != t->count) {
        heap_set(t, i, t->heap[t->count]);
        heap_down(t, i);
        heap_up(t, t->heap[i]->heap_idx);
    }
    remember(t, p->id, p->hash, why);
}

ksfi_pending *
ksfi_inflight_expire(ksfi_inflight *t, int64_t now_ms)
{
    if (!t->count || t->heap[0]->deadline_ms > now_ms) {
        return NULL;
    }
    ksfi_pending *p = t->heap[0];
    ksfi_inflight_remove(t, p, KSFI_RECENT_TIMED_OUT);
    return p;
}

int64_t
ksfi_inflight_next_deadline(const ksfi_inflight *t)
{
    return t->count ? t->heap[0]->deadline_ms : INT64_MAX;
}

ksfi_pending *
ksfi_inflight_any(const ksfi_inflight *t)
{
    return t->count ? t->heap[0] : NULL;
}

size_t
ksfi_inflight_count(const ksfi_inflight *t)
{
    return t->count;
}
