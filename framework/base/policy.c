#include "base/policy.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "base/topic.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KSFI_POLICY_PREFIX "server.pattern."
#define KSFI_POLICY_DLQ_DEFAULT "{pattern}.dlq"
#define KSFI_POLICY_PLACEHOLDER "{pattern}"

enum { F_CONCURRENCY, F_TIMEOUT, F_RETRIES, F_BACKOFF, F_BACKOFF_MAX, F_DLQ, F_COUNT };

/* Each policy value: its per-pattern name, its server-wide key, range and default. */
static const struct {
    const char *name;
    const char *key;
    long long min, max, def;
} fields[F_COUNT] = {
    {"concurrency", "server.pattern.concurrency", 0, 1024, 0},
    {"handler.timeout.ms", "server.handler.timeout.ms", 0, 86400000, 0},
    {"event.retries", "server.event.retries", 0, 100, 3},
    {"event.retry.backoff.ms", "server.event.retry.backoff.ms", 1, 3600000, 200},
    {"event.retry.backoff.max.ms", "server.event.retry.backoff.max.ms", 1, 3600000, 5000},
    {"event.dlq.topic", "server.event.dlq.topic", 0, 0, 0},
};

ksf_err
ksfi_policy_init(ksfi_policy_config *pc)
{
    memset(pc, 0, sizeof *pc);
    for (int i = 0; i < F_DLQ; i++) {
        pc->ints[i] = (int)fields[i].def;
    }
    pc->dlq = NULL; /* the default template; no allocation for a default config */
    return KSF_OK;
}

void
ksfi_policy_free(ksfi_policy_config *pc)
{
    for (size_t i = 0; i < pc->noverrides; i++) {
        ksfi_free(pc->overrides[i].pattern);
        ksfi_free(pc->overrides[i].dlq);
    }
    ksfi_free(pc->overrides);
    ksfi_free(pc->dlq);
    memset(pc, 0, sizeof *pc);
}

ksf_err
ksfi_policy_copy(ksfi_policy_config *dst, const ksfi_policy_config *src)
{
    *dst = *src;
    dst->dlq = NULL;
    dst->overrides = NULL;
    dst->noverrides = 0;
    if (src->dlq && !(dst->dlq = ksfi_strdup(src->dlq))) {
        goto fail;
    }
    if (src->noverrides &&
        !(dst->overrides = ksfi_calloc(src->noverrides, sizeof *dst->overrides))) {
        goto fail;
    }
    for (size_t i = 0; i < src->noverrides; i++) {
        ksfi_policy_override *o = &dst->overrides[i];
        *o = src->overrides[i];
        o->pattern = ksfi_strdup(src->overrides[i].pattern);
        o->dlq = src->overrides[i].dlq ? ksfi_strdup(src->overrides[i].dlq) : NULL;
        dst->noverrides = i + 1;
        if (!o->pattern || (src->overrides[i].dlq && !o->dlq)) {
            goto fail;
        }
    }
    return KSF_OK;
fail:
    ksfi_policy_free(dst);
    return KSF_ENOMEM;
}

/* A dead-letter template: "" or "none" disable; otherwise it must make a valid topic
 * name for a pattern. */
static ksf_err
check_dlq(const char *key, const char *value, ksf_errinfo *ei)
{
    if (!*value || !strcmp(value, "none")) {
        return KSF_OK;
    }
    char *sample = ksfi_policy_dlq_topic(value, "p");
    if (!sample) {
        return KSF_ENOMEM;
    }
    ksf_errinfo inner = {0};
    ksf_err e = ksfi_topic_check(sample, 0, "", &inner);
    ksfi_free(sample);
    if (e) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "%s \"%.60s\": not a usable topic name (%s); expected a topic "
                         "name, {pattern} for the pattern, or \"none\" to disable",
                         key, value, inner.text);
    }
    return KSF_OK;
}

static ksf_err
parse_field(int f, const char *key, const char *value, int *out, ksf_errinfo *ei)
{
    char *end = NULL;
    errno = 0;
    long long v = (*value >= '0' && *value <= '9') ? strtoll(value, &end, 10) : -1;
    if (errno || !end || *end || v < fields[f].min || v > fields[f].max) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "%s \"%.60s\": expected an integer from %lld to %lld", key,
                         value, fields[f].min, fields[f].max);
    }
    *out = (int)v;
    return KSF_OK;
}

/* Store the dead-letter template @p value into *slot ("" when disabled). */
static ksf_err
store_dlq(char **slot, const char *value)
{
    char *copy = ksfi_strdup(strcmp(value, "none") ? value : "");
    if (!copy) {
        return KSF_ENOMEM;
    }
    ksfi_free(*slot);
    *slot = copy;
    return KSF_OK;
}

/* The override entry of @p pattern (len bytes), created when missing. */
static ksfi_policy_override *
override_for(ksfi_policy_config *pc, const char *pattern, size_t len)
{
    for (size_t i = 0; i < pc->noverrides; i++) {
        if (strlen(pc->overrides[i].pattern) == len &&
            !memcmp(pc->overrides[i].pattern, pattern, len)) {
            return &pc->overrides[i];
        }
    }
    ksfi_policy_override *grown =
        ksfi_realloc(pc->overrides, (pc->noverrides + 1) * sizeof *grown);
    if (!grown) {
        return NULL;
    }
    pc->overrides = grown;
    ksfi_policy_override *o = &pc->overrides[pc->noverrides];
    memset(o, 0, sizeof *o);
    if (!(o->pattern = ksfi_strndup(pattern, len))) {
        return NULL;
    }
    pc->noverrides++;
    return o;
}

/* Split "server.pattern.<pattern>.<name>": the field, the pattern and its length. */
static int
split_key(const char *key, const char **pattern, size_t *len)
{
    size_t plen = strlen(KSFI_POLICY_PREFIX), klen = strlen(key);
    if (strncmp(key, KSFI_POLICY_PREFIX, plen)) {
        return -1;
    }
    for (int f = 0; f < F_COUNT; f++) {
        size_t nlen = strlen(fields[f].name);
        if (klen > plen + nlen + 1 && !strcmp(key + klen - nlen, fields[f].name) &&
            key[klen - nlen - 1] == '.') {
            *pattern = key + plen;
            *len = klen - plen - nlen - 1;
            return f;
        }
    }
    return -1;
}

ksf_err
ksfi_policy_set(ksfi_policy_config *pc, const char *key, const char *value,
                ksf_errinfo *ei)
{
    for (int f = 0; f < F_COUNT; f++) {
        if (strcmp(key, fields[f].key)) {
            continue;
        }
        if (f == F_DLQ) {
            ksf_err e = check_dlq(key, value, ei);
            return e ? e : store_dlq(&pc->dlq, value);
        }
        return parse_field(f, key, value, &pc->ints[f], ei);
    }
    const char *pattern;
    size_t len;
    int f = split_key(key, &pattern, &len);
    if (f < 0) {
        return KSF_ENOENT;
    }
    int v = 0;
    ksf_err e =
        f == F_DLQ ? check_dlq(key, value, ei) : parse_field(f, key, value, &v, ei);
    if (e) {
        return e;
    }
    ksfi_policy_override *o = override_for(pc, pattern, len);
    if (!o) {
        return KSF_ENOMEM;
    }
    if (f == F_DLQ) {
        if ((e = store_dlq(&o->dlq, value))) {
            return e;
        }
    } else {
        o->ints[f] = v;
    }
    o->set |= 1u << f;
    return KSF_OK;
}

static ksf_err
copy_text(char *buf, size_t size, const char *text)
{
    int n = snprintf(buf, size, "%s", text);
    return n < 0 || (size_t)n >= size ? KSF_EINVAL : KSF_OK;
}

ksf_err
ksfi_policy_get(const ksfi_policy_config *pc, const char *key, char *buf, size_t size)
{
    char num[32];
    for (int f = 0; f < F_COUNT; f++) {
        if (!strcmp(key, fields[f].key)) {
            if (f == F_DLQ) {
                return copy_text(buf, size,
                                 !pc->dlq ? KSFI_POLICY_DLQ_DEFAULT
                                          : (*pc->dlq ? pc->dlq : "none"));
            }
            snprintf(num, sizeof num, "%d", pc->ints[f]);
            return copy_text(buf, size, num);
        }
    }
    const char *pattern;
    size_t len;
    int f = split_key(key, &pattern, &len);
    for (size_t i = 0; f >= 0 && i < pc->noverrides; i++) {
        const ksfi_policy_override *o = &pc->overrides[i];
        if (strlen(o->pattern) != len || memcmp(o->pattern, pattern, len) ||
            !(o->set & (1u << f))) {
            continue;
        }
        if (f == F_DLQ) {
            return copy_text(buf, size, *o->dlq ? o->dlq : "none");
        }
        snprintf(num, sizeof num, "%d", o->ints[f]);
        return copy_text(buf, size, num);
    }
    return KSF_ENOENT;
}

ksfi_policy
ksfi_policy_for(const ksfi_policy_config *pc, const char *pattern)
{
    int v[F_DLQ];
    memcpy(v, pc->ints, sizeof v);
    const char *dlq = pc->dlq ? pc->dlq : KSFI_POLICY_DLQ_DEFAULT;
    for (size_t i = 0; i < pc->noverrides; i++) {
        const ksfi_policy_override *o = &pc->overrides[i];
        if (strcmp(o->pattern, pattern)) {
            continue;
        }
        for (int f = 0; f < F_DLQ; f++) {
            if (o->set & (1u << f)) {
                v[f] = o->ints[f];
            }
        }
        if (o->set & (1u << F_DLQ)) {
            dlq = o->dlq;
        }
    }
    return (ksfi_policy){
        .concurrency = v[F_CONCURRENCY],
        .timeout_ms = v[F_TIMEOUT],
        .retries = v[F_RETRIES],
        .backoff_ms = v[F_BACKOFF],
        .backoff_max_ms =
            v[F_BACKOFF_MAX] < v[F_BACKOFF] ? v[F_BACKOFF] : v[F_BACKOFF_MAX],
        .dlq = dlq && *dlq ? dlq : NULL,
    };
}

int
ksfi_policy_concurrency(int configured, int workers, size_t npatterns)
{
    if (configured > 0) {
        return configured;
    }
    /* One pattern alone has nobody to starve; with several, one worker always stays
     * free for the others, whatever one pattern does. Inline (no workers): one
     * handler at a time runs anyway. */
    if (workers < 1) {
        return 1;
    }
    return workers >= 2 && npatterns >= 2 ? workers - 1 : workers;
}

char *
ksfi_policy_dlq_topic(const char *tmpl, const char *pattern)
{
    size_t hlen = strlen(KSFI_POLICY_PLACEHOLDER), plen = strlen(pattern);
    size_t n = 0;
    for (const char *s = tmpl; (s = strstr(s, KSFI_POLICY_PLACEHOLDER)); s += hlen) {
        n++;
    }
    char *out = ksfi_malloc(strlen(tmpl) + n * plen + 1);
    if (!out) {
        return NULL;
    }
    char *o = out;
    for (const char *s = tmpl; *s;) {
        if (!strncmp(s, KSFI_POLICY_PLACEHOLDER, hlen)) {
            memcpy(o, pattern, plen);
            o += plen;
            s += hlen;
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}
