/*
 * The client's correlation table: requests awaiting their final reply, found by
 * correlation id in O(1) and ordered by deadline (a binary heap), plus a bounded memory
 * of recently finished ids so a reply that comes too late, or twice, is told apart from
 * one this client never sent. A pure data structure: no locks, no I/O; the client
 * guards it with its own mutex.
 */
#ifndef KSF_INFLIGHT_H
#define KSF_INFLIGHT_H

#include <ksf/ksf.h>

/* Room for a correlation id this client generates (36 characters + NUL). */
#define KSFI_ID_SIZE 37

/* How a finished id is remembered. */
typedef enum ksfi_recent {
    KSFI_RECENT_NONE = 0,  /* not remembered (never sent, forgotten, or evicted) */
    KSFI_RECENT_ANSWERED,  /* answered (a later reply is a duplicate) */
    KSFI_RECENT_TIMED_OUT, /* timed out (a later reply is late) */
} ksfi_recent;

/*
 * One request. The caller allocates it (zeroed), fills the public part, and gets it
 * back from remove/expire to free. The table never frees or reads the client's fields.
 */
typedef struct ksfi_pending {
    char id[KSFI_ID_SIZE];
    int64_t deadline_ms;
    ksf_reply_fn cb;
    void *user;
    bool stream;                   /* deliver every value (KSF_SEND_STREAM) */
    bool raw;                      /* OK values undecoded (KSF_SEND_RAW_REPLY) */
    int32_t reply_partition;       /* the partition advertised in kafka_replyPartition */
    void *slot;                    /* the client's record of that reply partition */
    struct ksfi_pmetrics *metrics; /* the pattern's metrics (client-owned), or NULL */
    uint64_t sent_us;              /* when the send began: its round-trip metric  */
    bool queued;                   /* waiting for its reply partition: not produced yet */
    bool topic_missing; /* its topic did not exist before the client first sent to it */
    /* Non-stream requests keep the last streamed value for the final delivery. */
    bool has_last;
    void *last_raw; /* NULL: a null value */
    size_t last_len;
    /* Owned by the table. */
    struct ksfi_pending *hnext;
    size_t heap_idx;
    size_t hash; /* of id, computed once on add: removal and memory reuse it */
} ksfi_pending;

typedef struct ksfi_inflight ksfi_inflight;

/* A table remembering the last @p memory finished ids (0: none). Errors: KSF_ENOMEM. */
ksf_err ksfi_inflight_new(size_t memory, ksfi_inflight **out);

/* Free the table. Entries still in it are not freed (remove them first). */
void ksfi_inflight_destroy(ksfi_inflight *t);

/* Insert @p p (borrowed until removed). Errors: KSF_EEXIST for a known id, KSF_ENOMEM. */
ksf_err ksfi_inflight_add(ksfi_inflight *t, ksfi_pending *p);

/* The entry for the id of @p len bytes, or NULL. */
ksfi_pending *ksfi_inflight_find(const ksfi_inflight *t, const char *id, size_t len);

/* Unlink @p p and remember its id as @p why (KSFI_RECENT_NONE: forget it). */
void ksfi_inflight_remove(ksfi_inflight *t, ksfi_pending *p, ksfi_recent why);

/* Unlink and return the earliest entry whose deadline is <= @p now_ms (remembered as
 * timed out), or NULL when none is due. */
ksfi_pending *ksfi_inflight_expire(ksfi_inflight *t, int64_t now_ms);

/* The earliest deadline, or INT64_MAX when the table is empty. */
int64_t ksfi_inflight_next_deadline(const ksfi_inflight *t);

/* Some entry (the earliest deadline), or NULL when empty: for draining at destroy. */
ksfi_pending *ksfi_inflight_any(const ksfi_inflight *t);

/* Entries in the table. */
size_t ksfi_inflight_count(const ksfi_inflight *t);

/* What the memory says about a finished id. */
ksfi_recent ksfi_inflight_recent(const ksfi_inflight *t, const char *id, size_t len);

#endif
