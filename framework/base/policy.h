/*
 * Per-pattern server policy: how many handlers of one pattern may run at once, the
 * request handler's time budget, and what happens to a failing event (retries with
 * backoff, then a dead-letter topic). Each has a server-wide key and a per-pattern
 * override "server.pattern.<pattern>.<name>"; see docs/isolation.md and
 * docs/retries.md.
 */
#ifndef KSF_POLICY_H
#define KSF_POLICY_H

#include <ksf/ksf.h>

/* The resolved policy of one pattern. Strings are borrowed from the configuration. */
typedef struct ksfi_policy {
    int concurrency;    /* 0: automatic (see ksfi_policy_concurrency) */
    int timeout_ms;     /* request handler time budget; 0: none */
    int retries;        /* event re-runs after the first failure */
    int backoff_ms;     /* delay before the first re-run */
    int backoff_max_ms; /* the delay doubles up to this */
    const char *dlq;    /* dead-letter topic template ({pattern}); NULL: none */
} ksfi_policy;

/* One "server.pattern.<pattern>.<name>" override; `set` has bit i for field i. */
typedef struct ksfi_policy_override {
    char *pattern;
    unsigned set;
    int ints[5];
    char *dlq; /* "" when set to disable */
} ksfi_policy_override;

/* The policy part of a configuration (struct ksf_config.policy). */
typedef struct ksfi_policy_config {
    int ints[5]; /* concurrency, timeout, retries, backoff, backoff max */
    char *dlq;   /* NULL: "{pattern}.dlq"; "": disabled */
    ksfi_policy_override *overrides;
    size_t noverrides;
} ksfi_policy_config;

/* Defaults into @p pc. Errors: KSF_ENOMEM. */
ksf_err ksfi_policy_init(ksfi_policy_config *pc);
/* Free what @p pc owns. */
void ksfi_policy_free(ksfi_policy_config *pc);
/* Deep copy. Errors: KSF_ENOMEM (dst then holds nothing to free). */
ksf_err ksfi_policy_copy(ksfi_policy_config *dst, const ksfi_policy_config *src);

/* Set a policy key. Returns KSF_ENOENT (errinfo untouched) when @p key is not one. */
ksf_err ksfi_policy_set(ksfi_policy_config *pc, const char *key, const char *value,
                        ksf_errinfo *ei);
/* Read a policy key into @p buf; KSF_ENOENT when @p key is not one (or not set). */
ksf_err ksfi_policy_get(const ksfi_policy_config *pc, const char *key, char *buf,
                        size_t size);

/* The policy of @p pattern: the server-wide values with its overrides applied. */
ksfi_policy ksfi_policy_for(const ksfi_policy_config *pc, const char *pattern);

/* The concurrency limit of a pattern with policy value @p configured on a server with
 * @p workers threads serving @p npatterns patterns (0 = automatic). */
int ksfi_policy_concurrency(int configured, int workers, size_t npatterns);

/* The dead-letter topic for @p pattern from template @p tmpl ({pattern} replaced);
 * a new string, or NULL on ENOMEM. */
char *ksfi_policy_dlq_topic(const char *tmpl, const char *pattern);

#endif
