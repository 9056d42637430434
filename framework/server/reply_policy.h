/*
 * The server's reply-topic policy (docs/security.md, "What a caller can make a server
 * do"): which topics a request may name as its kafka_replyTopic. A reply is produced
 * under the server's credentials, so an unchecked name let any caller write into other
 * services' topics, dead-letter topics, the server's own request topics and Kafka's
 * internal ones, and made the server keep state for every name it was given.
 */
#ifndef KSF_REPLY_POLICY_H
#define KSF_REPLY_POLICY_H

#include <ksf/ksf.h>

#include <pthread.h>
#include <stdbool.h>

/* One server.reply.topics entry: an exact name, or a prefix (written "prefix*"). */
typedef struct ksfi_reply_allow {
    char *name;
    bool prefix;
} ksfi_reply_allow;

typedef struct ksfi_reply_policy {
    ksfi_reply_allow *allow; /* server.reply.topics, parsed */
    size_t nallow;
    char **forbidden;      /* the server's own topics: subscribed and dead-letter */
    size_t *forbidden_len; /* their lengths: most compares end at a length */
    size_t nforbidden;
    /* Distinct reply topics admitted through a prefix entry, at most `max`: each name
     * costs the producer a topic object librdkafka keeps for the handle's life. */
    pthread_mutex_t lock;
    char **seen; /* open addressing, 2 * max slots */
    size_t nseen, slots;
    int max;
} ksfi_reply_policy;

/*
 * Set up @p p from the allow-list @p list (NULL: none), the cap @p max and the
 * server's own topics @p own (copied). Errors: KSF_ENOMEM.
 */
ksf_err ksfi_reply_policy_init(ksfi_reply_policy *p, const char *list, int max,
                               const char *const *own, size_t nown);

void ksfi_reply_policy_free(ksfi_reply_policy *p);

/*
 * NULL when a request on @p request_topic may be answered on @p reply; otherwise why
 * not (a static sentence). Threads: any.
 */
const char *ksfi_reply_policy_check(ksfi_reply_policy *p, const char *request_topic,
                                    const char *reply);

#endif
