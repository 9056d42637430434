#include "base/config.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "base/nest_defaults.h"
#include "base/topic.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* librdkafka properties ksf sets itself; the ksf key to use instead. */
static const struct {
    const char *property;
    const char *instead;
} managed_props[] = {
    {"bootstrap.servers", "\"brokers\""},
    {"metadata.broker.list", "\"brokers\""},
    {"client.id", "\"client.id\" and \"postfix.id\""},
    {"group.id", "\"group.id\" and \"postfix.id\""},
    {"group.instance.id", "\"group.instance.id\" (it also makes the client's reply-group "
                          "membership static)"},
    {"enable.auto.commit", "nothing: ksf commits after each reply is acknowledged"},
    {"enable.auto.offset.store", "nothing: ksf stores offsets after each reply"},
};

static const struct {
    const char *prefix;
    ksf_kafka_role role;
} role_prefixes[] = {
    {"kafka.", KSF_KAFKA_ALL},
    {"consumer.", KSF_KAFKA_CONSUMER},
    {"producer.", KSF_KAFKA_PRODUCER},
};

/*
 * A value as error sentences show it: quoted, cut after 60 bytes with "...", and with
 * '"', '\\' and non-printable bytes escaped, so a sentence never carries raw control
 * characters or broken UTF-8 into a log line.
 */
static const char *
quote(const char *value, char out[260])
{
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; value[i]; i++) {
        unsigned char c = (unsigned char)value[i];
        if (i == 60) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, 5, "\\x%02x", c);
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

ksf_err
ksf_config_new(ksf_config **out)
{
    if (!out) {
        return KSF_EINVAL;
    }
    *out = NULL;
    ksf_config *cfg = ksfi_calloc(1, sizeof *cfg);
    if (!cfg) {
        return KSF_ENOMEM;
    }
    cfg->brokers = ksfi_strdup(KSFI_DEFAULT_BROKERS);
    cfg->client_id = ksfi_strdup(KSFI_DEFAULT_CLIENT_ID);
    cfg->group_id = ksfi_strdup(KSFI_DEFAULT_GROUP_ID);
    if (!cfg->brokers || !cfg->client_id || !cfg->group_id) {
        ksf_config_destroy(cfg);
        return KSF_ENOMEM;
    }
    cfg->server_workers = 4;
    cfg->client_timeout_ms = 30000;
    cfg->client_max_in_flight = 10000;
    cfg->client_reply_partition = 0;
    cfg->message_max_bytes = 1000000;
    cfg->server_deadline_skew_ms = KSFI_DEADLINE_SKEW_DEFAULT_MS;
    cfg->server_deferred_max = 10000;
    cfg->server_partition_window = 4096;
    cfg->server_partition_window_bytes = 64 * 1024 * 1024;
    cfg->broker_unreachable_ms = 5000;
    cfg->server_reply_topics_max = 1000;
    cfg->trace_headers = true;
    cfg->client_deadline_header = true;
    cfg->log_max_level = KSF_LOG_INFO;
    if (ksfi_policy_init(&cfg->policy)) {
        ksf_config_destroy(cfg);
        return KSF_ENOMEM;
    }
    *out = cfg;
    return KSF_OK;
}

void
ksf_config_destroy(ksf_config *cfg)
{
    if (!cfg) {
        return;
    }
    ksfi_free(cfg->brokers);
    ksfi_free(cfg->client_id);
    ksfi_free(cfg->group_id);
    ksfi_free(cfg->postfix_id);
    ksfi_free(cfg->group_instance_id);
    ksfi_free(cfg->server_reply_topics);
    for (size_t i = 0; i < cfg->nprops; i++) {
        ksfi_free(cfg->props[i].key);
        ksfi_free(cfg->props[i].value);
    }
    ksfi_free(cfg->props);
    ksfi_policy_free(&cfg->policy);
    ksfi_free(cfg);
}

/* Replace *slot by a copy of @p value (NULL allowed). */
static ksf_err
set_string(char **slot, const char *value)
{
    char *copy = NULL;
    if (value && !(copy = ksfi_strdup(value))) {
        return KSF_ENOMEM;
    }
    ksfi_free(*slot);
    *slot = copy;
    return KSF_OK;
}

ksf_err
ksf_config_dup(const ksf_config *cfg, ksf_config **out)
{
    if (out) {
        *out = NULL;
    }
    if (!cfg || !out) {
        return KSF_EINVAL;
    }
    ksf_config *c = ksfi_calloc(1, sizeof *c);
    if (!c) {
        return KSF_ENOMEM;
    }
    *c = *cfg;
    c->brokers = c->client_id = c->group_id = c->postfix_id = NULL;
    c->group_instance_id = c->server_reply_topics = NULL;
    c->props = NULL;
    c->nprops = 0;
    memset(&c->policy, 0, sizeof c->policy);
    if (ksfi_policy_copy(&c->policy, &cfg->policy) ||
        set_string(&c->brokers, cfg->brokers) ||
        set_string(&c->client_id, cfg->client_id) ||
        set_string(&c->group_id, cfg->group_id) ||
        set_string(&c->postfix_id, cfg->postfix_id) ||
        set_string(&c->group_instance_id, cfg->group_instance_id) ||
        set_string(&c->server_reply_topics, cfg->server_reply_topics)) {
        goto fail;
    }
    if (cfg->nprops) {
        c->props = ksfi_calloc(cfg->nprops, sizeof *c->props);
        if (!c->props) {
            goto fail;
        }
        for (size_t i = 0; i < cfg->nprops; i++) {
            c->props[i].role = cfg->props[i].role;
            c->props[i].key = ksfi_strdup(cfg->props[i].key);
            c->props[i].value = ksfi_strdup(cfg->props[i].value);
            c->nprops = i + 1;
            if (!c->props[i].key || !c->props[i].value) {
                goto fail;
            }
        }
    }
    *out = c;
    return KSF_OK;
fail:
    ksf_config_destroy(c);
    return KSF_ENOMEM;
}

/* Parse a base-10 integer filling the whole string, within [min, max]; unlike bare
 * strtoll, no leading blanks or '+'. */
static bool
parse_int(const char *s, long long min, long long max, long long *out)
{
    if (!s || !(*s == '-' || (*s >= '0' && *s <= '9'))) {
        return false;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

/* Check one host:port entry of a broker list ("[v6]:port" allowed). */
static bool
valid_broker(const char *entry, size_t len, const char **why)
{
    const char *colon = NULL;
    for (size_t i = len; i > 0; i--) {
        if (entry[i - 1] == ':') {
            colon = entry + i - 1;
            break;
        }
    }
    if (!colon) {
        *why = "missing :port";
        return false;
    }
    if (colon == entry) {
        *why = "empty host";
        return false;
    }
    size_t plen = len - (size_t)(colon + 1 - entry);
    if (plen == 0 || plen > 5) {
        *why = "invalid port";
        return false;
    }
    int port = 0;
    for (size_t i = 0; i < plen; i++) {
        char c = colon[1 + i];
        if (c < '0' || c > '9') {
            *why = "invalid port";
            return false;
        }
        port = port * 10 + (c - '0');
    }
    if (port < 1 || port > 65535) {
        *why = "port out of range 1-65535";
        return false;
    }
    for (const char *p = entry; p < colon; p++) {
        if (*p <= ' ' || *p > '~') { /* negative (non-ASCII) bytes too */
            *why = "space or non-printable character in host";
            return false;
        }
    }
    return true;
}

static ksf_err
set_brokers(ksf_config *cfg, const char *value, ksf_errinfo *ei)
{
    const char *why = "empty list";
    const char *p = value;
    if (!*p) {
        goto bad;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0) {
            why = "empty entry";
            goto bad;
        }
        if (!valid_broker(p, len, &why)) {
            goto bad;
        }
        if (!comma) {
            break;
        }
        p = comma + 1;
    }
    return set_string(&cfg->brokers, value);
bad:;
    char q[260];
    return ksfi_fail(ei, KSF_EINVAL,
                     "brokers %s: %s; expected host:port[,host:port...] "
                     "(e.g. 127.0.0.1:9092)",
                     quote(value, q), why);
}

/* Kafka ids: non-empty, printable ASCII, no spaces (librdkafka and brokers agree). */
static ksf_err
set_id(char **slot, const char *key, const char *value, bool allow_empty, ksf_errinfo *ei)
{
    const char *why = NULL;
    char q[260];
    if (!*value && !allow_empty) {
        why = "empty";
    } else if (strlen(value) > 200) {
        why = "longer than 200 characters";
    }
    for (const char *p = value; *p && !why; p++) {
        if (*p <= ' ' || *p > '~') {
            why = "contains a space or non-printable character";
        }
    }
    if (why) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "%s %s: %s; expected %s to 200 printable ASCII characters "
                         "without spaces",
                         key, quote(value, q), why, allow_empty ? "0" : "1");
    }
    return set_string(slot, value);
}

/*
 * group.instance.id (KIP-345): Kafka's Java client accepts 1..249 characters of
 * [A-Za-z0-9._-] other than "." and ".." (the topic-name rule,
 * JoinGroupRequest.validateGroupInstanceId); the broker itself checks nothing, so ksf
 * applies Java's rule and ids stay usable from every client. "" unsets it.
 */
static ksf_err
set_instance_id(ksf_config *cfg, const char *value, ksf_errinfo *ei)
{
    const char *why = NULL;
    char q[260];
    if (!*value) {
        return set_string(&cfg->group_instance_id, NULL);
    }
    if (strlen(value) > 249) {
        why = "longer than 249 characters";
    } else if (!strcmp(value, ".") || !strcmp(value, "..")) {
        why = "\".\" and \"..\" are not allowed";
    }
    for (const char *p = value; *p && !why; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-')) {
            why = "contains a character other than A-Z a-z 0-9 . _ -";
        }
    }
    if (why) {
        return ksfi_fail(
            ei, KSF_EINVAL,
            "group.instance.id %s: %s; expected 1 to 249 of A-Z a-z 0-9 . _ - "
            "(Kafka's rule), unique per instance, or \"\" for none",
            quote(value, q), why);
    }
    return set_string(&cfg->group_instance_id, value);
}

static ksf_err
set_range(int *slot, const char *key, const char *value, long long min, long long max,
          ksf_errinfo *ei)
{
    long long v;
    char q[260];
    if (!parse_int(value, min, max, &v)) {
        return ksfi_fail(ei, KSF_EINVAL, "%s %s: expected an integer from %lld to %lld",
                         key, quote(value, q), min, max);
    }
    *slot = (int)v;
    return KSF_OK;
}

/* The pass-through property check the kafka/ layer installed (config.h). */
static _Atomic(ksfi_prop_check_fn) prop_check;

void
ksfi_config_set_prop_check(ksfi_prop_check_fn fn)
{
    atomic_store(&prop_check, fn);
}

/* Validate a librdkafka property against librdkafka itself, then store it. */
static ksf_err
set_kafka_prop(ksf_config *cfg, ksf_kafka_role role, const char *key, const char *value,
               ksf_errinfo *ei)
{
    static const char *const role_names[] = {"kafka", "consumer", "producer"};
    if ((int)role < 0 || role > KSF_KAFKA_PRODUCER) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "kafka role %d: expected KSF_KAFKA_ALL, "
                         "KSF_KAFKA_CONSUMER or KSF_KAFKA_PRODUCER",
                         (int)role);
    }
    for (size_t i = 0; i < sizeof managed_props / sizeof managed_props[0]; i++) {
        if (!strcmp(key, managed_props[i].property)) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "%s.%s: ksf manages this librdkafka property; use %s",
                             role_names[role], key, managed_props[i].instead);
        }
    }
    char err[256];
    ksfi_prop_check_fn check = atomic_load(&prop_check);
    ksfi_prop_verdict res = check ? check(key, value, err, sizeof err) : KSFI_PROP_OK;
    if (res == KSFI_PROP_UNKNOWN) {
        return ksfi_fail(ei, KSF_ENOENT,
                         "%s.%s: librdkafka has no such property (see librdkafka's "
                         "CONFIGURATION.md)",
                         role_names[role], key);
    }
    if (res != KSFI_PROP_OK) {
        char q[260];
        return ksfi_fail(ei, KSF_EINVAL, "%s.%s %s: %s", role_names[role], key,
                         quote(value, q), err);
    }
    for (size_t i = 0; i < cfg->nprops; i++) {
        if (cfg->props[i].role == role && !strcmp(cfg->props[i].key, key)) {
            return set_string(&cfg->props[i].value, value);
        }
    }
    ksfi_kprop *grown = ksfi_realloc(cfg->props, (cfg->nprops + 1) * sizeof *grown);
    if (!grown) {
        return KSF_ENOMEM;
    }
    cfg->props = grown;
    ksfi_kprop *p = &cfg->props[cfg->nprops];
    p->role = role;
    p->key = ksfi_strdup(key);
    p->value = ksfi_strdup(value);
    if (!p->key || !p->value) {
        ksfi_free(p->key);
        ksfi_free(p->value);
        return KSF_ENOMEM;
    }
    cfg->nprops++;
    return KSF_OK;
}

/* Allocation failures deep down return a bare KSF_ENOMEM; give them their sentence. */
static ksf_err
oom_sentence(ksf_err e, const char *key, ksf_errinfo *ei)
{
    if (e == KSF_ENOMEM) {
        char q[260];
        return ksfi_fail(ei, e, "out of memory setting %s", quote(key, q));
    }
    return e;
}

ksf_err
ksf_config_set_kafka(ksf_config *cfg, ksf_kafka_role role, const char *key,
                     const char *value, ksf_errinfo *ei)
{
    if (!cfg || !key || !value || !*key) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "ksf_config_set_kafka: cfg, key and value are "
                         "required");
    }
    return oom_sentence(set_kafka_prop(cfg, role, key, value, ei), key, ei);
}

static ksf_err config_set(ksf_config *cfg, const char *key, const char *value,
                          ksf_errinfo *ei);

/* Every key ksf_config_set() knows, for the "did you mean" of an unknown one. */
static const char *const known_keys[] = {
    "brokers",
    "broker.unreachable.timeout.ms",
    "client.id",
    "group.id",
    "group.instance.id",
    "postfix.id",
    "server.workers",
    "server.deferred.max",
    "server.partition.window",
    "server.partition.window.bytes",
    "server.deadline.skew.ms",
    "client.timeout.ms",
    "client.max.in.flight",
    "client.reply.provider",
    "client.reply.partition",
    "client.wire.dialect",
    "client.deadline.header",
    "trace.headers",
    "message.max.bytes",
    "server.pattern.concurrency",
    "server.handler.timeout.ms",
    "server.event.retries",
    "server.event.retry.backoff.ms",
    "server.event.retry.backoff.max.ms",
    "server.event.dlq.topic",
    "server.reply.topics",
    "server.reply.topics.max",
};

/* Edit distance between @p a and @p b, capped: anything above 3 is 4. */
static int
edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64 || (la > lb ? la - lb : lb - la) > 3) {
        return 4;
    }
    int row[65];
    for (size_t j = 0; j <= lb; j++) {
        row[j] = (int)j;
    }
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            best = up + 1 < best ? up + 1 : best;
            best = row[j - 1] + 1 < best ? row[j - 1] + 1 : best;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb] > 3 ? 4 : row[lb];
}

/* KSF_ENOENT for @p key, suggesting the nearest known key (at most 2 edits away). */
static ksf_err
unknown_key(const char *key, ksf_errinfo *ei)
{
    const char *near = NULL;
    int best = 3;
    for (size_t i = 0; i < sizeof known_keys / sizeof known_keys[0]; i++) {
        int d = edit_distance(key, known_keys[i]);
        if (d < best) {
            best = d;
            near = known_keys[i];
        }
    }
    char q[260];
    return ksfi_fail(ei, KSF_ENOENT,
                     "unknown configuration key %s%s%s%s; the keys are listed in "
                     "docs/configuration.md, and librdkafka properties go under "
                     "kafka., consumer. or producer.",
                     quote(key, q), near ? " (did you mean \"" : "", near ? near : "",
                     near ? "\"?)" : "");
}

ksf_err
ksf_config_set(ksf_config *cfg, const char *key, const char *value, ksf_errinfo *ei)
{
    if (!cfg || !key || !value) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "ksf_config_set: cfg, key and value are required");
    }
    return oom_sentence(config_set(cfg, key, value, ei), key, ei);
}

/* The index in @p names (NULL-terminated) of @p value; -1 after the sentence
 * "<key> "<value>": expected <expected>" in @p ei. For settings that take one of a few
 * words. */
static int
pick_word(const char *key, const char *value, const char *const *names,
          const char *expected, ksf_errinfo *ei)
{
    for (int i = 0; names[i]; i++) {
        if (!strcmp(value, names[i])) {
            return i;
        }
    }
    char q[260];
    ksfi_fail(ei, KSF_EINVAL, "%s %s: expected %s", key, quote(value, q), expected);
    return -1;
}

static ksf_err
set_reply_provider(ksf_config *cfg, const char *value, ksf_errinfo *ei)
{
    static const char *const names[] = {"group", "static", NULL};
    int i = pick_word("client.reply.provider", value, names,
                      "\"group\" (a reply-group membership) or \"static\" "
                      "(client.reply.partition)",
                      ei);
    if (i < 0) {
        return KSF_EINVAL;
    }
    cfg->client_reply_provider = i == 0 ? KSFI_REPLY_GROUP : KSFI_REPLY_STATIC;
    return KSF_OK;
}

static ksf_err
set_wire_dialect(ksf_config *cfg, const char *value, ksf_errinfo *ei)
{
    static const char *const names[] = {"nestjs", "spring", NULL};
    int i = pick_word("client.wire.dialect", value, names,
                      "\"nestjs\" (NestJS ClientKafka's headers) or \"spring\" (Spring "
                      "Kafka's ReplyingKafkaTemplate's headers)",
                      ei);
    if (i < 0) {
        return KSF_EINVAL;
    }
    cfg->client_wire_dialect = i == 0 ? KSFI_WIRE_NESTJS : KSFI_WIRE_SPRING;
    return KSF_OK;
}

/* A switch: "true" or "false", as librdkafka spells its booleans (ksf has no other
 * boolean setting, so no 1/0 or yes/no convention to follow). */
static ksf_err
set_bool(bool *slot, const char *key, const char *value, ksf_errinfo *ei)
{
    static const char *const names[] = {"true", "false", NULL};
    int i = pick_word(key, value, names, "\"true\" or \"false\"", ei);
    if (i < 0) {
        return KSF_EINVAL;
    }
    *slot = i == 0;
    return KSF_OK;
}

static ksf_err
config_set(ksf_config *cfg, const char *key, const char *value, ksf_errinfo *ei)
{
    if (!strcmp(key, "brokers")) {
        return set_brokers(cfg, value, ei);
    }
    if (!strcmp(key, "client.id")) {
        return set_id(&cfg->client_id, key, value, false, ei);
    }
    if (!strcmp(key, "group.id")) {
        ksf_err e = set_id(&cfg->group_id, key, value, false, ei);
        cfg->group_id_set = cfg->group_id_set || !e;
        return e;
    }
    if (!strcmp(key, "postfix.id")) {
        return set_id(&cfg->postfix_id, key, value, true, ei);
    }
    if (!strcmp(key, "group.instance.id")) {
        return set_instance_id(cfg, value, ei);
    }
    if (!strcmp(key, "server.workers")) {
        return set_range(&cfg->server_workers, key, value, 0, 1024, ei);
    }
    if (!strcmp(key, "client.timeout.ms")) {
        return set_range(&cfg->client_timeout_ms, key, value, 1, 86400000, ei);
    }
    if (!strcmp(key, "server.deadline.skew.ms")) {
        return set_range(&cfg->server_deadline_skew_ms, key, value, 0, 3600000, ei);
    }
    if (!strcmp(key, "broker.unreachable.timeout.ms")) {
        return set_range(&cfg->broker_unreachable_ms, key, value, 0, 86400000, ei);
    }
    if (!strcmp(key, "server.deferred.max")) {
        return set_range(&cfg->server_deferred_max, key, value, 1, 1000000, ei);
    }
    if (!strcmp(key, "server.partition.window")) {
        return set_range(&cfg->server_partition_window, key, value, 4, 1000000, ei);
    }
    if (!strcmp(key, "server.partition.window.bytes")) {
        return set_range(&cfg->server_partition_window_bytes, key, value, 1024,
                         1073741824, ei);
    }
    if (!strcmp(key, "server.reply.topics")) {
        ksf_err e = ksfi_reply_topics_check(value, ei);
        return e ? e : set_string(&cfg->server_reply_topics, value);
    }
    if (!strcmp(key, "server.reply.topics.max")) {
        return set_range(&cfg->server_reply_topics_max, key, value, 1, 1000000, ei);
    }
    if (!strcmp(key, "client.max.in.flight")) {
        return set_range(&cfg->client_max_in_flight, key, value, 1, 1000000, ei);
    }
    if (!strcmp(key, "client.reply.partition")) {
        int v;
        ksf_err e = set_range(&v, key, value, 0, INT32_MAX, ei);
        if (!e) {
            cfg->client_reply_partition = v;
        }
        return e;
    }
    if (!strcmp(key, "client.reply.provider")) {
        return set_reply_provider(cfg, value, ei);
    }
    if (!strcmp(key, "client.wire.dialect")) {
        return set_wire_dialect(cfg, value, ei);
    }
    if (!strcmp(key, "trace.headers")) {
        return set_bool(&cfg->trace_headers, key, value, ei);
    }
    if (!strcmp(key, "client.deadline.header")) {
        return set_bool(&cfg->client_deadline_header, key, value, ei);
    }
    if (!strcmp(key, "message.max.bytes")) {
        int v;
        ksf_err e = set_range(&v, key, value, 1, 1000000000, ei);
        if (!e) {
            cfg->message_max_bytes = (size_t)v;
        }
        return e;
    }
    ksf_err pe = ksfi_policy_set(&cfg->policy, key, value, ei);
    if (pe != KSF_ENOENT) {
        return pe;
    }
    for (size_t i = 0; i < sizeof role_prefixes / sizeof role_prefixes[0]; i++) {
        size_t plen = strlen(role_prefixes[i].prefix);
        if (!strncmp(key, role_prefixes[i].prefix, plen) && key[plen]) {
            return set_kafka_prop(cfg, role_prefixes[i].role, key + plen, value, ei);
        }
    }
    return unknown_key(key, ei);
}

static ksf_err
copy_out(char *buf, size_t size, const char *value)
{
    if (size == 0) {
        return KSF_EINVAL;
    }
    size_t n = strlen(value);
    if (n >= size) {
        memcpy(buf, value, size - 1);
        buf[size - 1] = '\0';
        return KSF_EINVAL;
    }
    memcpy(buf, value, n + 1);
    return KSF_OK;
}

ksf_err
ksf_config_get(const ksf_config *cfg, const char *key, char *buf, size_t size)
{
    char num[32];
    if (buf && size > 0) {
        buf[0] = '\0'; /* what a failure leaves, but for a value too long for buf */
    }
    if (!cfg || !key || !buf) {
        return KSF_EINVAL;
    }
    ksf_err pe = ksfi_policy_get(&cfg->policy, key, buf, size);
    if (pe != KSF_ENOENT) {
        return pe;
    }
    if (!strcmp(key, "brokers")) {
        return copy_out(buf, size, cfg->brokers);
    }
    if (!strcmp(key, "client.id")) {
        return copy_out(buf, size, cfg->client_id);
    }
    if (!strcmp(key, "group.id")) {
        return copy_out(buf, size, cfg->group_id);
    }
    if (!strcmp(key, "postfix.id")) {
        if (!cfg->postfix_id) {
            return KSF_ENOENT; /* unset: the role decides */
        }
        return copy_out(buf, size, cfg->postfix_id);
    }
    if (!strcmp(key, "group.instance.id")) {
        if (!cfg->group_instance_id) {
            return KSF_ENOENT; /* unset: dynamic membership */
        }
        return copy_out(buf, size, cfg->group_instance_id);
    }
    if (!strcmp(key, "client.reply.provider")) {
        return copy_out(buf, size,
                        cfg->client_reply_provider == KSFI_REPLY_STATIC ? "static"
                                                                        : "group");
    }
    if (!strcmp(key, "server.reply.topics")) {
        return copy_out(buf, size,
                        cfg->server_reply_topics ? cfg->server_reply_topics : "");
    }
    if (!strcmp(key, "client.wire.dialect")) {
        return copy_out(buf, size,
                        cfg->client_wire_dialect == KSFI_WIRE_SPRING ? "spring"
                                                                     : "nestjs");
    }
    if (!strcmp(key, "trace.headers")) {
        return copy_out(buf, size, cfg->trace_headers ? "true" : "false");
    }
    if (!strcmp(key, "client.deadline.header")) {
        return copy_out(buf, size, cfg->client_deadline_header ? "true" : "false");
    }
    long long v;
    if (!strcmp(key, "server.workers")) {
        v = cfg->server_workers;
    } else if (!strcmp(key, "client.timeout.ms")) {
        v = cfg->client_timeout_ms;
    } else if (!strcmp(key, "server.deadline.skew.ms")) {
        v = cfg->server_deadline_skew_ms;
    } else if (!strcmp(key, "client.max.in.flight")) {
        v = cfg->client_max_in_flight;
    } else if (!strcmp(key, "broker.unreachable.timeout.ms")) {
        v = cfg->broker_unreachable_ms;
    } else if (!strcmp(key, "server.deferred.max")) {
        v = cfg->server_deferred_max;
    } else if (!strcmp(key, "server.partition.window")) {
        v = cfg->server_partition_window;
    } else if (!strcmp(key, "server.partition.window.bytes")) {
        v = cfg->server_partition_window_bytes;
    } else if (!strcmp(key, "server.reply.topics.max")) {
        v = cfg->server_reply_topics_max;
    } else if (!strcmp(key, "client.reply.partition")) {
        v = cfg->client_reply_partition;
    } else if (!strcmp(key, "message.max.bytes")) {
        v = (long long)cfg->message_max_bytes;
    } else {
        for (size_t r = 0; r < sizeof role_prefixes / sizeof role_prefixes[0]; r++) {
            size_t plen = strlen(role_prefixes[r].prefix);
            if (strncmp(key, role_prefixes[r].prefix, plen)) {
                continue;
            }
            for (size_t i = 0; i < cfg->nprops; i++) {
                if (cfg->props[i].role == role_prefixes[r].role &&
                    !strcmp(cfg->props[i].key, key + plen)) {
                    return copy_out(buf, size, cfg->props[i].value);
                }
            }
        }
        return KSF_ENOENT;
    }
    snprintf(num, sizeof num, "%lld", v);
    return copy_out(buf, size, num);
}

/* KSF_LOG=level[,format]: stderr at that level, as text (ksf_log_stderr), logfmt or
 * json lines. Replaces both sinks, so a program's own default does not double it. */
static ksf_err
set_log_from_env(ksf_config *cfg, const char *spec, ksf_errinfo *ei)
{
    static const char *const levels[] = {"error", "warning", "notice", "info", "debug"};
    char level[16] = "";
    const char *comma = strchr(spec, ',');
    size_t n = comma ? (size_t)(comma - spec) : strlen(spec);
    const char *format = comma ? comma + 1 : "text";
    int lv = -1;
    if (n < sizeof level) {
        memcpy(level, spec, n);
        level[n] = '\0';
        for (int i = 0; i < 5; i++) {
            lv = !strcmp(level, levels[i]) ? KSF_LOG_ERROR + i : lv;
        }
    }
    bool text = !strcmp(format, "text"), logfmt = !strcmp(format, "logfmt"),
         json = !strcmp(format, "json");
    if (lv < 0 || !(text || logfmt || json)) {
        char q[260];
        return ksfi_fail(ei, KSF_EINVAL,
                         "environment variable KSF_LOG %s: expected LEVEL[,FORMAT] with "
                         "LEVEL error, warning, notice, info or debug and FORMAT text "
                         "(the default), logfmt or json, e.g. KSF_LOG=debug,logfmt",
                         quote(spec, q));
    }
    ksf_config_set_log(cfg, text ? ksf_log_stderr : NULL, NULL, (ksf_log_level)lv);
    ksf_config_set_log_structured(cfg,
                                  logfmt ? ksf_log_logfmt
                                  : json ? ksf_log_jsonl
                                         : NULL,
                                  NULL, (ksf_log_level)lv);
    return KSF_OK;
}

ksf_err
ksf_config_set_from_env(ksf_config *cfg, ksf_errinfo *ei)
{
    if (!cfg) {
        return ksfi_fail(ei, KSF_EINVAL, "ksf_config_set_from_env: cfg is NULL");
    }
    const char *log = getenv("KSF_LOG");
    if (log && *log) {
        ksf_err e = set_log_from_env(cfg, log, ei);
        if (e) {
            return e;
        }
    }
    /* A restarted pod typically learns its identity from the environment (e.g. the
     * StatefulSet pod name), hence KSF_INSTANCE_ID beside KSF_BROKERS. */
    static const struct {
        const char *var, *key;
    } vars[] = {{"KSF_BROKERS", "brokers"}, {"KSF_INSTANCE_ID", "group.instance.id"}};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *value = getenv(vars[i].var);
        if (!value || !*value) {
            continue;
        }
        ksf_err e = ksf_config_set(cfg, vars[i].key, value, ei);
        if (e) {
            if (ei) {
                char inner[sizeof ei->text];
                memcpy(inner, ei->text, sizeof inner);
                ksfi_fail(ei, e, "environment variable %s: %s", vars[i].var, inner);
            }
            return e;
        }
    }
    return KSF_OK;
}

void
ksf_config_set_log(ksf_config *cfg, ksf_log_fn fn, void *user, ksf_log_level max_level)
{
    if (!cfg) {
        return;
    }
    cfg->log_fn = fn;
    cfg->log_user = user;
    cfg->log_max_level = max_level;
}

char *
ksfi_config_client_id(const ksf_config *cfg, const char *default_postfix)
{
    return ksfi_strcat2(cfg->client_id,
                        cfg->postfix_id ? cfg->postfix_id : default_postfix);
}

/* glibc and musl set it from argv[0] before main (valgrind passes the program's). */
extern char *program_invocation_short_name;

char *
ksfi_config_group_id(const ksf_config *cfg, const char *default_postfix)
{
    /* Servers of unrelated services must not share a consumer group: every member
     * that joins or leaves stops them all for a rebalance (44 s on the embedded
     * broker). Replicas of one service run one program; a NestJS peer that must
     * share the group is named by setting group.id, as NestJS's groupId. */
    const char *base = cfg->group_id;
    if (!cfg->group_id_set && !strcmp(default_postfix, KSFI_SERVER_POSTFIX) &&
        program_invocation_short_name && *program_invocation_short_name) {
        base = program_invocation_short_name;
    }
    return ksfi_strcat2(base, cfg->postfix_id ? cfg->postfix_id : default_postfix);
}

/* ---- the logging settings (log.c reads none of config's fields) ---------------- */

void
ksf_config_set_log_structured(ksf_config *cfg, ksf_log_structured_fn fn, void *user,
                              ksf_log_level max_level)
{
    if (!cfg) {
        return;
    }
    cfg->slog_fn = fn;
    cfg->slog_user = user;
    cfg->slog_max_level = max_level;
}

ksfi_logger
ksfi_logger_from_config(const ksf_config *cfg)
{
    ksfi_logger lg = {cfg->log_fn,  cfg->log_user,  cfg->log_max_level,
                      cfg->slog_fn, cfg->slog_user, cfg->slog_max_level};
    return lg;
}
