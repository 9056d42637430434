/* The configuration object's innards, read by the server, the client and the tools. */
#ifndef KSF_CONFIG_H
#define KSF_CONFIG_H

#include "base/log.h"
#include "base/policy.h"

#include <ksf/ksf.h>

/* The default server.deadline.skew.ms (docs/deadlines.md says why). */
#define KSFI_DEADLINE_SKEW_DEFAULT_MS 1000

/* client.reply.provider: where a client's reply partitions come from. */
typedef enum ksfi_reply_provider_kind {
    KSFI_REPLY_GROUP = 0, /* a reply-group membership (the default) */
    KSFI_REPLY_STATIC,    /* client.reply.partition of every reply topic */
} ksfi_reply_provider_kind;

/* client.wire.dialect: how a client writes its request headers (codec.h). */
typedef enum ksfi_wire_dialect {
    KSFI_WIRE_NESTJS = 0, /* decimal-text partition, UUID text id (the default) */
    KSFI_WIRE_SPRING,     /* 4-byte big-endian partition, 16 raw id bytes */
} ksfi_wire_dialect;

/* One librdkafka pass-through property and the handles it applies to. */
typedef struct ksfi_kprop {
    ksf_kafka_role role;
    char *key;
    char *value;
} ksfi_kprop;

struct ksf_config {
    char *brokers;
    char *client_id;
    char *group_id;
    bool group_id_set; /* group.id was set: servers then use it, else their program */
    char *postfix_id;  /* NULL: the role's default suffix */
    char *group_instance_id; /* KIP-345 static membership; NULL: dynamic */
    int server_workers;
    int client_timeout_ms;
    int client_max_in_flight;
    int32_t client_reply_partition;
    ksfi_reply_provider_kind client_reply_provider;
    ksfi_wire_dialect client_wire_dialect;
    bool trace_headers;          /* trace.headers: traceparent/tracestate added */
    bool client_deadline_header; /* client.deadline.header: ksf_deadline on requests */
    size_t message_max_bytes;
    int server_deadline_skew_ms;
    int server_deferred_max;           /* deferred handlers awaiting their finish */
    int server_partition_window;       /* a partition's unfinished messages: pause at */
    int server_partition_window_bytes; /* ... and their bytes (keys and values) */
    int broker_unreachable_ms;   /* report unreachable brokers after this; 0: never */
    char *server_reply_topics;   /* allow-list beyond <pattern>.reply; NULL: none */
    int server_reply_topics_max; /* distinct reply topics a prefix entry admits */
    ksfi_policy_config policy;   /* server.pattern.*, server.handler.*, server.event.* */
    ksfi_kprop *props; /* in the order set; a later set of the same key replaces */
    size_t nprops;
    ksf_log_fn log_fn;
    void *log_user;
    ksf_log_level log_max_level;
    ksf_log_structured_fn slog_fn; /* ksf_config_set_log_structured (log.c) */
    void *slog_user;
    ksf_log_level slog_max_level;
};

/*
 * "<client.id><postfix>" for the role whose default suffix is @p default_postfix
 * (KSFI_SERVER_POSTFIX / KSFI_CLIENT_POSTFIX). Returns a new string or NULL on ENOMEM.
 */
char *ksfi_config_client_id(const ksf_config *cfg, const char *default_postfix);
/* "<group.id><postfix>", likewise; a server (KSFI_SERVER_POSTFIX) whose group.id was
 * not set uses its program's name instead of "nestjs-group" (docs/design.md). */
char *ksfi_config_group_id(const ksf_config *cfg, const char *default_postfix);

/** What a property check says of a pass-through librdkafka property. */
typedef enum ksfi_prop_verdict {
    KSFI_PROP_OK,      /* known, and the value is accepted */
    KSFI_PROP_UNKNOWN, /* no such property */
    KSFI_PROP_INVALID, /* known, but the value is refused: the check's @p why says why */
} ksfi_prop_verdict;

/** Checks @p key = @p value; writes why not into @p why (@p why_size bytes). */
typedef ksfi_prop_verdict (*ksfi_prop_check_fn)(const char *key, const char *value,
                                                char *why, size_t why_size);

/**
 * Install the check ksf_config_set runs on "kafka."/"consumer."/"producer." properties,
 * so that a typo fails there rather than when a handle is created. The kafka/ layer
 * installs librdkafka's when the library is loaded (kafka/property.c): base/ asks
 * through this hook instead of including the layer above it. Without a check the
 * property is stored as given and librdkafka refuses a bad one at handle creation.
 * Threads: any (an atomic store).
 */
void ksfi_config_set_prop_check(ksfi_prop_check_fn fn);

/* A logger taking its sinks from @p cfg (config.c: the logger reads no config). */
ksfi_logger ksfi_logger_from_config(const ksf_config *cfg);

#endif
