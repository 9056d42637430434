#include "server/reply_policy.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "base/topic.h"
#include "codec/codec.h"
#include "codec/wire.h"

#include <stdint.h>
#include <string.h>

static ksf_err
add_entry(const char *s, size_t n, void *user)
{
    ksfi_reply_policy *p = user;
    bool prefix = n > 0 && s[n - 1] == '*';
    char *name = ksfi_strndup(s, prefix ? n - 1 : n);
    if (!name) {
        return KSF_ENOMEM;
    }
    p->allow[p->nallow++] = (ksfi_reply_allow){name, prefix};
    return KSF_OK;
}

ksf_err
ksfi_reply_policy_init(ksfi_reply_policy *p, const char *list, int max,
                       const char *const *own, size_t nown)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    p->max = max;
    size_t entries = 1;
    for (const char *c = list ? list : ""; *c; c++) {
        entries += *c == ',';
    }
    p->slots = (size_t)max * 2;
    if (!(p->allow = ksfi_calloc(entries, sizeof *p->allow)) ||
        !(p->forbidden = ksfi_calloc(nown ? nown : 1, sizeof *p->forbidden)) ||
        !(p->forbidden_len = ksfi_calloc(nown ? nown : 1, sizeof *p->forbidden_len)) ||
        !(p->seen = ksfi_calloc(p->slots, sizeof *p->seen))) {
        return KSF_ENOMEM;
    }
    if (list && *list && ksfi_topic_list_each(list, add_entry, p)) {
        return KSF_ENOMEM;
    }
    for (size_t i = 0; i < nown; i++) {
        if (!(p->forbidden[p->nforbidden] = ksfi_strdup(own[i]))) {
            return KSF_ENOMEM;
        }
        p->forbidden_len[p->nforbidden] = strlen(own[i]);
        p->nforbidden++;
    }
    return KSF_OK;
}

void
ksfi_reply_policy_free(ksfi_reply_policy *p)
{
    for (size_t i = 0; i < p->nallow; i++) {
        ksfi_free(p->allow[i].name);
    }
    for (size_t i = 0; i < p->nforbidden; i++) {
        ksfi_free(p->forbidden[i]);
    }
    for (size_t i = 0; p->seen && i < p->slots; i++) {
        ksfi_free(p->seen[i]);
    }
    ksfi_free(p->allow);
    ksfi_free(p->forbidden);
    ksfi_free(p->forbidden_len);
    ksfi_free(p->seen);
    if (p->slots) {
        pthread_mutex_destroy(&p->lock);
    }
    memset(p, 0, sizeof *p);
}

/* Admit @p reply into the set of prefix-admitted names: false when it is new and the
 * set is full. */
static bool
admit(ksfi_reply_policy *p, const char *reply)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)reply; *c; c++) {
        h = (h ^ *c) * 1099511628211ULL;
    }
    bool ok = true;
    pthread_mutex_lock(&p->lock);
    size_t i = (size_t)(h % p->slots);
    while (p->seen[i] && strcmp(p->seen[i], reply)) {
        i = (i + 1) % p->slots;
    }
    if (!p->seen[i]) {
        char *copy = p->nseen < (size_t)p->max ? ksfi_strdup(reply) : NULL;
        if (copy) {
            p->seen[i] = copy;
            p->nseen++;
        } else {
            ok = false;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return ok;
}

const char *
ksfi_reply_policy_check(ksfi_reply_policy *p, const char *request_topic,
                        const char *reply)
{
    if (!strncmp(reply, "__", 2)) {
        return "a Kafka-internal topic (__...)";
    }
    size_t rl = strlen(reply);
    for (size_t i = 0; i < p->nforbidden; i++) {
        if (p->forbidden_len[i] == rl && !memcmp(reply, p->forbidden[i], rl)) {
            return "one of the server's own request, event or dead-letter topics";
        }
    }
    size_t n = strlen(request_topic), sl = sizeof KSFI_REPLY_SUFFIX - 1;
    if (rl == n + sl && !memcmp(reply, request_topic, n) &&
        !memcmp(reply + n, KSFI_REPLY_SUFFIX, sl)) {
        return NULL; /* <pattern>.reply: what NestJS and ksf clients send */
    }
    for (size_t i = 0; i < p->nallow; i++) {
        const ksfi_reply_allow *a = &p->allow[i];
        if (!a->prefix && !strcmp(reply, a->name)) {
            return NULL;
        }
        if (a->prefix && !strncmp(reply, a->name, strlen(a->name))) {
            return admit(p, reply) ? NULL
                                   : "past server.reply.topics.max distinct reply "
                                     "topics admitted by a prefix";
        }
    }
    return "not <pattern>.reply nor in server.reply.topics";
}
