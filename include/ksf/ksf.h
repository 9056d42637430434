/*
 * ksf: request/reply and events over Kafka, wire-compatible with NestJS microservices.
 *
 * This is the whole public API. A service registers handlers for message patterns
 * (the analogue of NestJS's @MessagePattern / @EventPattern) and runs a ksf_server;
 * a caller uses a ksf_client to send() requests and emit() events. On the wire ksf
 * speaks exactly what NestJS's ClientKafka / ServerKafka speak, so C and NestJS
 * services can call each other through the same broker.
 *
 * Conventions used throughout this header:
 * - Objects are opaque, created by *_new and freed by *_destroy. Every destroy
 *   accepts NULL.
 * - Fallible functions return ksf_err (KSF_OK == 0). Where a failure needs a sentence,
 *   the last argument is an optional ksf_errinfo *; pass NULL when you do not want it.
 * - JSON follows jansson's vocabulary: `const json_t *` inputs are borrowed; `json_t **`
 *   outputs are new references the caller must json_decref().
 * - Ownership of an argument moves only when the call returns KSF_OK.
 * - On failure every out-parameter (the object of a *_new or *_dup, a json_t ** result)
 *   is set to NULL, or to the empty value its function documents, so cleanup code can
 *   destroy it unconditionally. The result code never depends on whether a
 *   ksf_errinfo was passed: the errinfo only adds the sentence.
 * - The library never prints and never exits; diagnostics go to the log callback set
 *   with ksf_config_set_log().
 */
#ifndef KSF_KSF_H
#define KSF_KSF_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define KSF_API __attribute__((visibility("default")))
#else
#define KSF_API
#endif

/* ------------------------------------------------------------------------------------ */
/* Version                                                                              */
/* ------------------------------------------------------------------------------------ */

#define KSF_VERSION_MAJOR 0
#define KSF_VERSION_MINOR 1
#define KSF_VERSION_PATCH 0
#define KSF_VERSION_STRING "0.1.0"

/** The library's version as "MAJOR.MINOR.PATCH" (the one linked, not the header's). */
KSF_API const char *ksf_version(void);

/* ------------------------------------------------------------------------------------ */
/* Errors                                                                               */
/* ------------------------------------------------------------------------------------ */

/** Result codes. KSF_OK is zero; every other value has a ksf_strerror() string. */
typedef enum ksf_err {
    KSF_OK = 0,
    KSF_ENOMEM = 1,    /**< An allocation failed. */
    KSF_EINVAL = 2,    /**< An argument or configuration value is invalid. */
    KSF_ETIMEDOUT = 3, /**< The deadline passed before the operation completed. */
    KSF_ECLOSED = 4,   /**< The object is stopping or destroyed. */
    KSF_EPROTO = 5,    /**< A message or protocol response was malformed. */
    KSF_EREMOTE = 6,   /**< The remote handler answered with an error (its JSON). */
    KSF_EKAFKA = 7,    /**< The Kafka client reported an error (ksf_errinfo.kafka_err). */
    KSF_EEXIST = 8,    /**< Already exists, e.g. a pattern registered twice. */
    KSF_ENOENT = 9,    /**< Not found, e.g. an unknown configuration key or controller. */
    KSF_ENOPARTITION = 10, /**< This client owns no partition of the reply topic. */
    KSF_EBUSY = 11,        /**< The in-flight request limit is reached. */
    KSF_ESTATE = 12,       /**< The call is not valid in the object's current state. */
    KSF_EMSGSIZE = 13,     /**< A message is larger than the configured limit. */
    KSF_DEFERRED = 100,    /**< Not an error: a handler will finish its reply later. */
    /** Not an error: a middleware's before callback (or a handler) dropped the
     *  message: an event is committed without running its handler and without a
     *  retry; a request is refused as a NestJS guard does ("Forbidden resource"). */
    KSF_SKIP = 101,
} ksf_err;

/** A short English description of @p err. Never NULL, also for unknown codes. */
KSF_API const char *ksf_strerror(ksf_err err);

#define KSF_ERRINFO_TEXT_SIZE 320

/**
 * Details of a failure: the code, librdkafka's error code when Kafka was involved
 * (0 otherwise, an rd_kafka_resp_err_t value), and a sentence naming what was wrong and
 * what to do about it. Filled by every function that takes one and fails; left
 * untouched on success.
 */
typedef struct ksf_errinfo {
    ksf_err code;
    int kafka_err;
    char text[KSF_ERRINFO_TEXT_SIZE];
} ksf_errinfo;

/* ------------------------------------------------------------------------------------ */
/* Logging                                                                              */
/* ------------------------------------------------------------------------------------ */

/** Log levels; the numbers are syslog's. */
typedef enum ksf_log_level {
    KSF_LOG_ERROR = 3,
    KSF_LOG_WARNING = 4,
    KSF_LOG_NOTICE = 5,
    KSF_LOG_INFO = 6,
    KSF_LOG_DEBUG = 7,
} ksf_log_level;

/**
 * A log sink. @p component names the part of ksf speaking ("server", "client",
 * "kafka", ...). Threads: called from any ksf thread, possibly concurrently; must not
 * call back into the object that logged.
 */
typedef void (*ksf_log_fn)(void *user, ksf_log_level level, const char *component,
                           const char *message);

/** A ready-made sink writing "ksf <LEVEL> <component>: <message>" lines to stderr. */
KSF_API void ksf_log_stderr(void *user, ksf_log_level level, const char *component,
                            const char *message);

/** The name of @p level ("error", "warning", ...). Never NULL. */
KSF_API const char *ksf_log_level_name(ksf_log_level level);

/** One key=value pair of a structured log record; both strings borrowed for the call. */
typedef struct ksf_log_field {
    const char *key;
    const char *value;
} ksf_log_field;

/**
 * A structured log sink: the message without its fields, and the fields apart
 * (ksf uses topic, partition, offset, pattern, correlation_id, group, generation,
 * facility, client, error...). Everything is borrowed for the call.
 * Threads: as ksf_log_fn.
 */
typedef void (*ksf_log_structured_fn)(void *user, ksf_log_level level,
                                      const char *component, const char *message,
                                      const ksf_log_field *fields, size_t nfields);

/**
 * Render a record as one logfmt line without a trailing newline:
 * `level=info component=server msg="partitions assigned" topic=t partition=3`.
 * A value that is empty or holds a space, '=', '"', '\' or a control character is
 * quoted, with '"', '\', newline, tab and CR escaped as \" \\ \n \t \r and other
 * control characters as \u00XX; characters of a key other than letters, digits and
 * "._-/" become '_'. Writes at most @p size bytes including the NUL (always
 * terminated when size > 0) and returns the length the whole line needs, like
 * snprintf. NULL keys/values render as "".
 */
KSF_API size_t ksf_log_format_logfmt(char *buf, size_t size, ksf_log_level level,
                                     const char *component, const char *message,
                                     const ksf_log_field *fields, size_t nfields);

/**
 * As ksf_log_format_logfmt, as one JSON object: {"level":"info","component":"server",
 * "msg":"...","topic":"t"} (fields in order, JSON string escaping; a field named like
 * an earlier key is still written, the reader decides).
 */
KSF_API size_t ksf_log_format_json(char *buf, size_t size, ksf_log_level level,
                                   const char *component, const char *message,
                                   const ksf_log_field *fields, size_t nfields);

/**
 * A ready structured sink: `time=<RFC 3339 UTC, ms> ` then the logfmt line, to the
 * FILE * in @p user (NULL: stderr), one write per line.
 */
KSF_API void ksf_log_logfmt(void *user, ksf_log_level level, const char *component,
                            const char *message, const ksf_log_field *fields,
                            size_t nfields);

/** As ksf_log_logfmt, as JSON lines: {"time":"...",...} (see ksf_log_format_json). */
KSF_API void ksf_log_jsonl(void *user, ksf_log_level level, const char *component,
                           const char *message, const ksf_log_field *fields,
                           size_t nfields);

/* ------------------------------------------------------------------------------------ */
/* Configuration                                                                        */
/* ------------------------------------------------------------------------------------ */

/**
 * Settings shared by servers and clients. Every value is checked when it is set; a bad
 * value is refused with KSF_EINVAL and a sentence naming the key, the value and what
 * is expected. Servers and clients copy the configuration at _new, so one
 * configuration can create several objects and may be destroyed afterwards.
 *
 * Keys accepted by ksf_config_set() (defaults in brackets):
 * - "brokers"               host:port[,host:port...]                   [localhost:9092]
 * - "broker.unreachable.timeout.ms" how long run, connect and the first sends wait
 *                           for any broker to answer before they fail with KSF_EKAFKA
 *                           naming the addresses, 0..86400000; 0: for ever [5000]
 * - "client.id"             NestJS client.clientId, before the suffix  [nestjs-consumer]
 * - "group.id"              NestJS consumer.groupId, before the suffix [nestjs-group;
 *                           a server's program name when unset: docs/design.md]
 * - "postfix.id"            suffix for both ids; "" for none  [-server / -client by role]
 * - "group.instance.id"     static membership (KIP-345): this instance's id, 1..249 of
 *                           A-Z a-z 0-9 . _ - ; "" for none            [none]
 *                           It makes both the server's consumer and the client's reply-
 *                           group membership static: killed and restarted with the same
 *                           id within the session timeout, the instance gets its
 *                           partitions back without a rebalance. A static member does
 *                           not leave its groups at stop/destroy (its partitions wait
 *                           for it up to the session timeout). Unique per instance: two
 *                           servers, or two clients, with one id and group.id (in one
 *                           process or two) fence each other, and the loser stops with
 *                           KSF_EKAFKA naming FENCED_INSTANCE_ID. A server and a client
 *                           may share one (their groups differ). Needs JoinGroup v5
 *                           (Kafka 2.3+); the client refuses an older broker.
 * - "server.workers"        handler threads, 0..1024                   [4]
 *                           0: no pool; the thread in ksf_server_run runs the
 *                           handlers between its polls (less CPU per request, no
 *                           isolation: one handler at a time, none may block or wait
 *                           for this server's own patterns; docs/server.md)
 * - "server.deadline.skew.ms" how far past its ksf_deadline a request may be and
 *                           still run (clock skew between hosts), 0..3600000 [1000]
 * - "client.timeout.ms"     default request timeout, 1..86400000       [30000]
 * - "client.max.in.flight"  requests awaiting a reply, 1..1000000      [10000]
 * - "client.reply.provider" "group": a NestJS reply-group membership, whose
 *                           session/heartbeat/rebalance timeouts are
 *                           consumer.session.timeout.ms, consumer.heartbeat.interval.ms
 *                           and consumer.max.poll.interval.ms if set, else 30000,
 *                           3000 and 60000; "static": client.reply.partition  [group]
 * - "client.reply.partition" the static reply partition, 0..2^31-1     [0]
 * - "client.wire.dialect"   how a client writes its request headers: "nestjs"
 *                           (kafka_correlationId as UUID text, kafka_replyPartition as
 *                           decimal text, what NestJS's ServerKafka reads) or "spring"
 *                           (16 raw UUID bytes and a 4-byte big-endian int, what a
 *                           Spring Kafka @KafkaListener + @SendTo reads; each reply
 *                           then ends its request, as Spring sends one with no end
 *                           marker). Servers need no setting: they read both forms and
 *                           echo the id byte for byte (docs/interop-spring.md) [nestjs]
 * - "trace.headers"         "true" or "false": whether ksf adds W3C traceparent and
 *                           tracestate to what it produces (client requests and events,
 *                           server replies). false: none of its own; a send's
 *                           opts.traceparent still goes as given, and handlers still see
 *                           the incoming trace through ksf_ctx_traceparent() and the
 *                           other ksf_ctx_trace* (worked out only when asked for). It
 *                           saves the header's work in librdkafka on both sides, for
 *                           services that want no trace continuity (docs/tracing.md)
 *                           [true]
 * - "client.deadline.header" "true" or "false": whether requests carry ksf_deadline.
 *                           false: the client's own timeout still ends a request, but
 *                           servers apply only their server.handler.timeout.ms and skip
 *                           nothing as expired; an emit with opts.timeout_ms > 0 still
 *                           carries it (the caller asked) (docs/deadlines.md) [true]
 * - "message.max.bytes"     largest encoded value accepted, 1..1e9     [1000000]
 * - "server.deferred.max"   deferred handlers waiting for ksf_ctx_finish,
 *                           1..1000000; at the limit no new handler starts [10000]
 * - "server.partition.window" a partition's unfinished messages (fetched and not
 *                           started, or started and not complete: handlers running or
 *                           deferred, replies the broker has not acknowledged) at which
 *                           it is paused, 4..1000000; resumed at a quarter. Bounds
 *                           memory when handlers or acknowledgements are slower than
 *                           arrivals; a resume refetches what was fetched past the
 *                           pause, so keep it above the requests in flight one
 *                           partition sees (docs/isolation.md)            [4096]
 * - "server.partition.window.bytes" the same bound in bytes of keys and values,
 *                           1024..1073741824; whichever is reached first pauses
 *                           [67108864 = 64 MiB]
 * - "server.pattern.concurrency" handlers of one pattern started and unfinished at
 *                           once, 0..1024; 0: all workers but one when the server has
 *                           >= 2 patterns and >= 2 workers, else all    [0]
 *                           (a reply waiting for the broker's acknowledgement holds
 *                           no slot; it counts in server.partition.window)
 * - "server.handler.timeout.ms" a request handler's time budget; past it the caller
 *                           gets an error reply at once, 0 = none       [0]
 * - "server.event.retries"  re-runs of a failed event handler, 0..100  [3]
 * - "server.event.retry.backoff.ms" first retry delay (doubling, jitter) [200]
 * - "server.event.retry.backoff.max.ms" the longest retry delay        [5000]
 * - "server.event.dlq.topic" dead-letter topic after the last failure; {pattern} is
 *                           replaced; "none" or "" disables  [{pattern}.dlq]
 * - "server.reply.topics"   reply topics a request may name besides its own
 *                           "<pattern>.reply": a comma list of names and "prefix*"
 *                           globs ("*": any). Never Kafka-internal (__...) topics nor
 *                           the server's own pattern and dead-letter topics; a request
 *                           naming another is skipped unanswered and counted in
 *                           reply_refused (docs/security.md)                 [""]
 * - "server.reply.topics.max" distinct reply topics the globs admit; later new
 *                           ones are refused, 1..1000000                   [1000]
 * - "server.pattern.<pattern>.<setting>" one pattern's value of concurrency,
 *                           handler.timeout.ms, event.retries, event.retry.backoff.ms,
 *                           event.retry.backoff.max.ms or event.dlq.topic
 * - "kafka.<property>"      a librdkafka property for every Kafka handle ksf creates
 *                           (NestJS's `client` options)
 * - "consumer.<property>"   a librdkafka property for consumers only (`consumer`)
 * - "producer.<property>"   a librdkafka property for producers only (`producer`)
 * librdkafka properties are validated against librdkafka at set time. Properties ksf
 * manages itself (bootstrap.servers, client.id, group.id, group.instance.id,
 * enable.auto.commit, enable.auto.offset.store, the callbacks) are refused with a
 * pointer to the ksf key.
 * TLS and SASL (security.protocol, ssl.*, sasl.*) set as kafka.* or consumer.* also
 * secure the client's reply-group connection, which supports PEM files and PLAIN,
 * SCRAM-SHA-256 and SCRAM-SHA-512 (docs/security.md).
 */
typedef struct ksf_config ksf_config;

/** Which Kafka handles a pass-through librdkafka property applies to. */
typedef enum ksf_kafka_role {
    KSF_KAFKA_ALL = 0,
    KSF_KAFKA_CONSUMER = 1,
    KSF_KAFKA_PRODUCER = 2,
} ksf_kafka_role;

/**
 * Create a configuration holding the defaults. *out is NULL on failure.
 * Errors: KSF_ENOMEM, KSF_EINVAL (NULL).
 */
KSF_API ksf_err ksf_config_new(ksf_config **out);

/** Free a configuration. NULL is a no-op. */
KSF_API void ksf_config_destroy(ksf_config *cfg);

/**
 * Copy @p cfg into a new configuration. *out is NULL on failure.
 * Errors: KSF_ENOMEM, KSF_EINVAL (NULL).
 */
KSF_API ksf_err ksf_config_dup(const ksf_config *cfg, ksf_config **out);

/**
 * Set one key (see the table above) to a string value.
 * Errors: KSF_ENOENT for an unknown key, KSF_EINVAL for a bad value, KSF_ENOMEM.
 */
KSF_API ksf_err ksf_config_set(ksf_config *cfg, const char *key, const char *value,
                               ksf_errinfo *ei);

/**
 * Copy the current value of @p key into @p buf (always NUL-terminated when size > 0).
 * Errors: KSF_ENOENT for a key that is neither known nor set, KSF_EINVAL when @p buf is
 * too small (it then holds a truncated value) or an argument is NULL; after any other
 * failure @p buf holds "".
 */
KSF_API ksf_err ksf_config_get(const ksf_config *cfg, const char *key, char *buf,
                               size_t size);

/**
 * Set a librdkafka property for the handles of @p role; the same as
 * ksf_config_set(cfg, "kafka.<key>" / "consumer.<key>" / "producer.<key>", value).
 */
KSF_API ksf_err ksf_config_set_kafka(ksf_config *cfg, ksf_kafka_role role,
                                     const char *key, const char *value, ksf_errinfo *ei);

/**
 * Apply the environment: KSF_BROKERS, when set and non-empty, becomes "brokers", and
 * KSF_INSTANCE_ID "group.instance.id" (e.g. a StatefulSet pod's name);
 * KSF_LOG=level[,format] (level error|warning|notice|info|debug, format text|logfmt|json,
 * default text) replaces both log sinks with one on stderr (ksf_log_stderr,
 * ksf_log_logfmt, ksf_log_jsonl) at that level. Tools and examples call this after
 * setting their default sink and before parsing their flags, so the variable wins over
 * the default and flags win over both.
 * Errors: as ksf_config_set(), naming the variable; KSF_EINVAL for a bad KSF_LOG.
 */
KSF_API ksf_err ksf_config_set_from_env(ksf_config *cfg, ksf_errinfo *ei);

/**
 * Apply a program's configuration flags to @p cfg and take them out of its command
 * line, so that the program then parses only its own flags. The flags:
 * - `--brokers ADDR` or `--brokers=ADDR`: sets "brokers" (host:port[,host:port...]);
 * - `--set KEY=VALUE` or `--set=KEY=VALUE`, repeatable: sets any key of the table
 *   above, librdkafka properties included (`--set kafka.security.protocol=ssl`).
 * They apply in command-line order, so a later one wins; call this after
 * ksf_config_set_from_env() so that flags win over the environment.
 *
 * argv[0] is skipped. Scanning stops at a "--" argument, which stays in argv with
 * everything after it. Every other argument stays, in its order: argv is compacted in
 * place, *argc is updated and, when anything was removed, argv[*argc] is set to NULL.
 * The helper does not know the program's own flags, so a value that reads
 * "--set" or "--brokers" (`--key --set`) is taken as a flag: write it `--key=--set`.
 * Nothing here exits or prints; ksf_config_args_help() has the help lines.
 *
 * Example: `prog --brokers k:9092 x --set client.id=a -v` leaves `prog x -v`, *argc 3.
 *
 * On failure argv and *argc are unchanged, the flags before the bad one have been
 * applied, and the sentence names the flag and what to do, e.g.
 * `flag --set "client.id": expected KEY=VALUE with a configuration key before the '=',
 * e.g. --set client.id=billing`, `flag --brokers needs a value: ...`, or
 * `flag --brokers: ` followed by ksf_config_set()'s sentence.
 * Errors: KSF_EINVAL (a NULL argument, a flag without its value, --set without '=' or
 * key, a bad value), KSF_ENOENT (an unknown key), KSF_ENOMEM.
 */
KSF_API ksf_err ksf_config_set_from_args(ksf_config *cfg, int *argc, char **argv,
                                         ksf_errinfo *ei);

/**
 * The help lines of the flags ksf_config_set_from_args() takes, for a program's
 * --help: two-space indented, the descriptions from column 22, each line ending in a
 * newline (the style of `ksf call --help`). A static string, never NULL.
 */
KSF_API const char *ksf_config_args_help(void);

/**
 * Route logs at or above @p max_level severity (i.e. numerically <= max_level) to
 * @p fn. @p fn NULL turns logging off (the default). librdkafka's own logs are routed
 * to the same sink with component "kafka".
 */
KSF_API void ksf_config_set_log(ksf_config *cfg, ksf_log_fn fn, void *user,
                                ksf_log_level max_level);

/**
 * Route logs at or above @p max_level severity to the structured sink @p fn (NULL:
 * off, the default), alongside the plain sink of ksf_config_set_log(), which keeps
 * working and gets the fields appended to the message as ` key=value` (logfmt
 * quoting). librdkafka's logs arrive with component "kafka" and the fields facility
 * and client.
 */
KSF_API void ksf_config_set_log_structured(ksf_config *cfg, ksf_log_structured_fn fn,
                                           void *user, ksf_log_level max_level);

/* ------------------------------------------------------------------------------------ */
/* Server: handlers and the handler context                                             */
/* ------------------------------------------------------------------------------------ */

typedef struct ksf_server ksf_server;

/**
 * The per-message context handed to a handler (NestJS's KafkaContext analogue). It is
 * valid until the handler returns, or, for a deferred handler, until ksf_ctx_finish().
 * After that the server reuses its memory for a later message: a pointer kept past
 * then (and pointers from its accessors) must not be used, or it acts on that other
 * message.
 */
typedef struct ksf_ctx ksf_ctx;

/**
 * A handler. @p data is the decoded payload, borrowed for the call, following NestJS's
 * parsing rules: a value starting with '{' or '[' that parses as JSON is that JSON; any
 * other text is a JSON string (invalid UTF-8 replaced by U+FFFD); a null Kafka value is
 * json null; a value whose first byte is 0x00 is binary and @p data is NULL (read the
 * bytes with ksf_ctx_value()). A raw handler (KSF_HANDLER_RAW: the *_PATTERN_RAW
 * macros, ksf_server_on_message_raw()) always gets @p data NULL: the value is not
 * decoded unless it calls ksf_ctx_data() or ksf_ctx_unpack().
 *
 * A message handler answers by setting @p *reply to a new reference (or leaving it
 * NULL for a null reply value) and returning KSF_OK. It reports an error to the caller
 * with `return ksf_ctx_reply_error(ctx, "text")`. Any other non-OK return sends
 * NestJS's {"status":"error","message":"Internal server error"}. It may instead
 * `return ksf_ctx_defer(ctx)` and finish later from any thread.
 *
 * An event handler gets a valid @p reply slot too; whatever is put there is discarded.
 *
 * Threads: handlers run on the server's worker pool; messages of one partition are
 * handed to handlers one at a time, in offset order.
 */
typedef ksf_err (*ksf_handler_fn)(ksf_ctx *ctx, const json_t *data, json_t **reply);

/** The pattern (topic) the message arrived on. */
KSF_API const char *ksf_ctx_topic(const ksf_ctx *ctx);
/** The partition the message arrived on. */
KSF_API int32_t ksf_ctx_partition(const ksf_ctx *ctx);
/** The message's offset. */
KSF_API int64_t ksf_ctx_offset(const ksf_ctx *ctx);
/** The message's timestamp in ms since the epoch, or -1 when it has none. */
KSF_API int64_t ksf_ctx_timestamp_ms(const ksf_ctx *ctx);
/** The message key, or NULL when it has none; @p len (optional) receives its length. */
KSF_API const void *ksf_ctx_key(const ksf_ctx *ctx, size_t *len);
/** The raw value bytes, or NULL for a null value; @p len (optional) gets the length. */
KSF_API const void *ksf_ctx_value(const ksf_ctx *ctx, size_t *len);
/** The number of headers on the message. */
KSF_API size_t ksf_ctx_header_count(const ksf_ctx *ctx);
/**
 * Header @p idx (0-based, in wire order): its name and value. A null header value gives
 * *value NULL. Returns false when @p idx is out of range.
 */
KSF_API bool ksf_ctx_header_at(const ksf_ctx *ctx, size_t idx, const char **name,
                               const void **value, size_t *len);
/** The value of the last header named @p name, or NULL when absent. */
KSF_API const void *ksf_ctx_header(const ksf_ctx *ctx, const char *name, size_t *len);
/**
 * The request's correlation id as text, or NULL for an event. Spring Kafka's 16 raw
 * UUID bytes come as the UUID's 36-character text (the reply still echoes the raw
 * bytes; ksf_ctx_header(ctx, "kafka_correlationId", &len) gives them).
 */
KSF_API const char *ksf_ctx_correlation_id(const ksf_ctx *ctx);
/** The topic the reply will go to, or NULL for an event. */
KSF_API const char *ksf_ctx_reply_topic(const ksf_ctx *ctx);
/** The partition the reply will go to, or -1 when the request named none. */
KSF_API int32_t ksf_ctx_reply_partition(const ksf_ctx *ctx);
/** True when the message is an event: no reply will be sent. */
KSF_API bool ksf_ctx_is_event(const ksf_ctx *ctx);
/**
 * The @p user pointer given when the handler was registered; for macro handlers the
 * controller state given to ksf_server_mount_controller (NULL with ksf_server_mount).
 */
KSF_API void *ksf_ctx_user(const ksf_ctx *ctx);

/**
 * The state of the controller this macro handler was mounted from with
 * ksf_server_mount_controller() (NestJS's injected controller members), or NULL for a
 * handler registered by ksf_server_on_message / on_event or mounted without state.
 * Each server has its own: one controller mounted on two servers with two states gives
 * each server's handlers their own. Threads: the pointer is the user's to guard.
 */
KSF_API void *ksf_ctx_controller(const ksf_ctx *ctx);

/**
 * The time the caller stops waiting, in ms since the Unix epoch (the request's
 * ksf_deadline header), or 0 when the message carries none (NestJS callers, events).
 * A request whose deadline leaves less time than its handler's recent run time is not
 * run: the server answers it at once with the error "overloaded: request for ...
 * shed: ..." and counts it in ksf_server_stats.shed (docs/deadlines.md, "Shedding").
 */
KSF_API int64_t ksf_ctx_deadline_ms(const ksf_ctx *ctx);

/**
 * Milliseconds left until ksf_ctx_deadline_ms() by this host's clock: negative once it
 * passed, INT64_MAX when there is no deadline (so min() with a timeout just works).
 * Requests sent through a ksf_client from the handler's thread get at most this long.
 */
KSF_API int64_t ksf_ctx_remaining_ms(const ksf_ctx *ctx);

/**
 * The W3C traceparent of this message's span ("00-<trace-id>-<span-id>-<flags>"): the
 * incoming trace continued with a new span id, or a new trace when the message had no
 * valid traceparent. The reply carries exactly this header (none with trace.headers
 * false; this still answers, worked out on the first call). Never NULL.
 * Threads: any; every ksf_ctx_trace* call on one ctx sees the same span.
 */
KSF_API const char *ksf_ctx_traceparent(const ksf_ctx *ctx);
/** The incoming W3C tracestate, copied onto the reply, or NULL when none. */
KSF_API const char *ksf_ctx_tracestate(const ksf_ctx *ctx);
/** The trace id: 32 lowercase hex characters. Never NULL. */
KSF_API const char *ksf_ctx_trace_id(const ksf_ctx *ctx);
/** This message's span id (on the reply): 16 lowercase hex characters. Never NULL. */
KSF_API const char *ksf_ctx_span_id(const ksf_ctx *ctx);
/**
 * The sender's span id from the incoming traceparent (the remote parent an OpenTelemetry
 * bridge links to), or NULL when the message had no valid traceparent and the server
 * started the trace.
 */
KSF_API const char *ksf_ctx_parent_span_id(const ksf_ctx *ctx);

/**
 * Answer with NestJS's RpcException(string) shape {"status":"error","message":<text>}.
 * Returns KSF_EREMOTE so a handler can `return ksf_ctx_reply_error(ctx, "...")`.
 * On an event it only logs. Later reply calls on the same ctx are refused.
 */
KSF_API ksf_err ksf_ctx_reply_error(ksf_ctx *ctx, const char *message);

/**
 * Answer with an error as RpcException(@p error) does: an object or array is sent as is
 * ({"code":42,"message":"x"}); any other value is wrapped as
 * {"status":"error","message":<value>}. Returns KSF_EREMOTE.
 */
KSF_API ksf_err ksf_ctx_reply_error_json(ksf_ctx *ctx, const json_t *error);

/**
 * Send one value of a streamed reply now (the NestJS Observable case). The final value
 * is the one the handler returns (or passes to ksf_ctx_finish); it carries the
 * end-of-stream header. Errors: KSF_ESTATE after the reply ended or on an event,
 * KSF_EKAFKA when the produce could not be queued.
 */
KSF_API ksf_err ksf_ctx_stream(ksf_ctx *ctx, const json_t *value, ksf_errinfo *ei);

/**
 * Make the final reply value these raw bytes instead of the JSON in *reply (copied).
 * Use a first byte 0x00 for binary data a NestJS peer should see as a Buffer.
 */
KSF_API ksf_err ksf_ctx_set_reply_raw(ksf_ctx *ctx, const void *bytes, size_t len);

/** Give the final reply message a key (copied); NestJS's {key, value} reply form. */
KSF_API ksf_err ksf_ctx_set_reply_key(ksf_ctx *ctx, const void *key, size_t len);

/**
 * Add a header to the final reply message (copied); NestJS's {headers, value} form.
 * Headers named kafka_* are reserved for the protocol and refused with KSF_EINVAL.
 */
KSF_API ksf_err ksf_ctx_add_reply_header(ksf_ctx *ctx, const char *name,
                                         const void *value, size_t len);

/**
 * Keep the context after the handler returns: `return ksf_ctx_defer(ctx);`. The ctx
 * then stays valid until ksf_ctx_finish(), which any thread may call. The message's
 * offset is committed only after the finish and its reply are done. Later messages of
 * the same partition are still dispatched meanwhile. Once the handler has returned, a
 * deferred context holds neither a worker nor its pattern's concurrency slot; at most
 * "server.deferred.max" contexts wait for their finish (then no new handler starts
 * until one finishes).
 */
KSF_API ksf_err ksf_ctx_defer(ksf_ctx *ctx);

/**
 * Finish a deferred handler as if it had returned @p status with @p reply in *reply.
 * Valid at any time once the handler has decided to defer, including before the
 * handler returned (even before it called ksf_ctx_defer): the result is then acted on
 * when the handler returns, and the ctx stays valid until then.
 * Ownership: @p reply (may be NULL) is stolen, whatever the result. The ctx is freed.
 * After the request's time budget (server.handler.timeout.ms) has answered the
 * caller, the finish is accepted and its result discarded (counted in late_discarded).
 * Errors: KSF_ESTATE when the ctx was already finished.
 */
KSF_API ksf_err ksf_ctx_finish(ksf_ctx *ctx, ksf_err status, json_t *reply);

/* Handler registration macros ------------------------------------------------------- */

/** Kinds of registered handler. */
typedef enum ksf_handler_kind {
    KSF_HANDLER_MESSAGE = 1, /**< @MessagePattern: request/reply. */
    KSF_HANDLER_EVENT = 2,   /**< @EventPattern: fire and forget. */
} ksf_handler_kind;

/**
 * Flags of a registered handler (ksf_handler_def.flags, a bit set).
 *
 * KSF_HANDLER_RAW: the request value is not decoded before the handler runs, and its
 * @p data argument is always NULL. For handlers that forward payloads or parse them
 * themselves: they read the bytes with ksf_ctx_value() and may answer with
 * ksf_ctx_set_reply_raw() (or *reply as usual), and skip building and freeing a
 * jansson tree per message. ksf_ctx_data() and ksf_ctx_unpack() still work: they
 * decode the value on their first use in the call (once, by NestJS's rules, as
 * ksf_handler_fn describes). Registered with the *_RAW macros or
 * ksf_server_on_message_raw() / ksf_server_on_event_raw().
 */
typedef enum ksf_handler_flag {
    KSF_HANDLER_RAW = 1u << 0,
} ksf_handler_flag;

/**
 * A handler definition as the macros below create it: static storage in the user's
 * module, linked into a library-owned list by a constructor before main() runs.
 * Not meant to be filled in by hand (use ksf_server_on_message instead).
 */
typedef struct ksf_handler_def {
    const char *controller; /**< KSF_DEFAULT_CONTROLLER for the plain macros */
    const char *pattern;
    ksf_handler_kind kind;
    ksf_handler_fn fn;
    const char *file;
    int line;
    struct ksf_handler_def *next; /**< owned by the registry */
    unsigned flags;               /**< ksf_handler_flag bits; 0 for the plain macros */
} ksf_handler_def;

/** Add @p def to the global handler registry (called by the macros' constructors). */
KSF_API void ksf_registry_add(ksf_handler_def *def);

/** The controller name used by KSF_MESSAGE_PATTERN / KSF_EVENT_PATTERN. */
#define KSF_DEFAULT_CONTROLLER "default"

#define KSF__HANDLER(controller_, pattern_, kind_, fn_)                                  \
    KSF__HANDLER_FLAGS(controller_, pattern_, kind_, fn_, 0u)

#define KSF__HANDLER_FLAGS(controller_, pattern_, kind_, fn_, flags_)                    \
    static ksf_err fn_(ksf_ctx *ctx, const json_t *data, json_t **reply);                \
    static ksf_handler_def ksf__def_##fn_ = {                                            \
        (controller_), (pattern_), (kind_), fn_, __FILE__, __LINE__, NULL, (flags_)};    \
    __attribute__((constructor)) static void ksf__register_##fn_(void)                   \
    {                                                                                    \
        ksf_registry_add(&ksf__def_##fn_);                                               \
    }                                                                                    \
    static ksf_err fn_(ksf_ctx *ctx __attribute__((unused)),                             \
                       const json_t *data __attribute__((unused)),                       \
                       json_t **reply __attribute__((unused)))

/**
 * Define a request/reply handler for @p pattern at file scope, like @MessagePattern:
 *
 *     KSF_MESSAGE_PATTERN("hero.kill.dragon", kill_dragon)
 *     {
 *         *reply = json_pack("[{s:i,s:s}]", "id", 1, "name", "Mythical Sword");
 *         return KSF_OK;
 *     }
 *
 * `ctx`, `data` and `reply` are in scope (see ksf_handler_fn). Handlers may live in any
 * number of translation units; ksf_server_mount() collects them. Handlers in a static
 * library are linked only if something references their object file: see
 * KSF_CONTROLLER_ANCHOR.
 */
#define KSF_MESSAGE_PATTERN(pattern, fn)                                                 \
    KSF__HANDLER(KSF_DEFAULT_CONTROLLER, pattern, KSF_HANDLER_MESSAGE, fn)

/** Define an event handler for @p pattern, like @EventPattern. */
#define KSF_EVENT_PATTERN(pattern, fn)                                                   \
    KSF__HANDLER(KSF_DEFAULT_CONTROLLER, pattern, KSF_HANDLER_EVENT, fn)

/**
 * As KSF_MESSAGE_PATTERN, inside the named controller (a string), so one binary can
 * mount several services separately: ksf_server_mount(srv, "heroes", NULL).
 */
#define KSF_CONTROLLER_MESSAGE_PATTERN(controller, pattern, fn)                          \
    KSF__HANDLER(controller, pattern, KSF_HANDLER_MESSAGE, fn)

/** As KSF_EVENT_PATTERN, inside the named controller. */
#define KSF_CONTROLLER_EVENT_PATTERN(controller, pattern, fn)                            \
    KSF__HANDLER(controller, pattern, KSF_HANDLER_EVENT, fn)

/**
 * As KSF_MESSAGE_PATTERN, for a raw handler (KSF_HANDLER_RAW): the value is not
 * decoded and `data` is always NULL. Read the bytes with ksf_ctx_value(); answer with
 * ksf_ctx_set_reply_raw() or *reply:
 *
 *     KSF_MESSAGE_PATTERN_RAW("blob.echo", blob_echo)
 *     {
 *         size_t len;
 *         const void *v = ksf_ctx_value(ctx, &len);
 *         return ksf_ctx_set_reply_raw(ctx, v, len);
 *     }
 *
 * ksf_ctx_data() / ksf_ctx_unpack() decode the value when the handler asks for it.
 */
#define KSF_MESSAGE_PATTERN_RAW(pattern, fn)                                             \
    KSF__HANDLER_FLAGS(KSF_DEFAULT_CONTROLLER, pattern, KSF_HANDLER_MESSAGE, fn,         \
                       KSF_HANDLER_RAW)

/** As KSF_EVENT_PATTERN, for a raw handler (see KSF_MESSAGE_PATTERN_RAW). */
#define KSF_EVENT_PATTERN_RAW(pattern, fn)                                               \
    KSF__HANDLER_FLAGS(KSF_DEFAULT_CONTROLLER, pattern, KSF_HANDLER_EVENT, fn,           \
                       KSF_HANDLER_RAW)

/** As KSF_CONTROLLER_MESSAGE_PATTERN, for a raw handler (KSF_MESSAGE_PATTERN_RAW). */
#define KSF_CONTROLLER_MESSAGE_PATTERN_RAW(controller, pattern, fn)                      \
    KSF__HANDLER_FLAGS(controller, pattern, KSF_HANDLER_MESSAGE, fn, KSF_HANDLER_RAW)

/** As KSF_CONTROLLER_EVENT_PATTERN, for a raw handler (KSF_MESSAGE_PATTERN_RAW). */
#define KSF_CONTROLLER_EVENT_PATTERN_RAW(controller, pattern, fn)                        \
    KSF__HANDLER_FLAGS(controller, pattern, KSF_HANDLER_EVENT, fn, KSF_HANDLER_RAW)

/**
 * Static-library remedy. An archive member nothing references is not linked, and its
 * constructors never run. Put KSF_CONTROLLER_ANCHOR(name) at file scope in each
 * handler file of the archive and KSF_USE_CONTROLLER(name) at file scope in the
 * program (e.g. next to main); the reference pulls the member in. (Linking with
 * -Wl,--whole-archive works too.) @p name is a C identifier.
 */
/* The extern declaration gives the anchor external linkage in C++ too, where a bare
 * namespace-scope const would be internal and the reference could not find it. */
#define KSF_CONTROLLER_ANCHOR(name)                                                      \
    extern const int ksf_controller_anchor_##name;                                       \
    const int ksf_controller_anchor_##name = 1
/** See KSF_CONTROLLER_ANCHOR. */
#define KSF_USE_CONTROLLER(name)                                                         \
    extern const int ksf_controller_anchor_##name;                                       \
    __attribute__((used)) static const int *const ksf__use_controller_##name =           \
        &ksf_controller_anchor_##name

/* Server lifecycle ---------------------------------------------------------------- */

/**
 * Create a server (NestJS ServerKafka). It consumes the pattern topics in consumer
 * group "<group.id><postfix.id>" with client id "<client.id><postfix.id>" (default
 * nestjs-consumer-server). Without group.id the group is "<program>-server", the
 * program's name (argv[0]'s), so that unrelated services never share a group.
 * Rebalances are cooperative (librdkafka's cooperative-sticky unless
 * consumer.partition.assignment.strategy is set): a server joining or leaving moves
 * only the partitions that change owner, the others keep being served. Every member
 * of a group must use the same assignment protocol: the broker refuses a server
 * joining a group of NestJS (kafkajs) servers or of eager librdkafka members
 * (INCONSISTENT_GROUP_PROTOCOL, logged at error; it serves nothing until they leave;
 * docs/server.md, "Rebalancing"). Nothing connects until ksf_server_run().
 * Ownership: @p cfg is copied. *out is NULL on failure.
 * Errors: KSF_ENOMEM, KSF_EINVAL, KSF_EKAFKA.
 */
KSF_API ksf_err ksf_server_new(ksf_server **out, const ksf_config *cfg, ksf_errinfo *ei);

/**
 * Stop the server if it runs (as ksf_server_stop, then waits for run to return when it
 * runs on another thread) and free it, deferred contexts included. NULL is a no-op.
 * Threads: never call from a handler.
 */
KSF_API void ksf_server_destroy(ksf_server *srv);

/**
 * Register a request/reply handler for @p pattern; @p user is returned by
 * ksf_ctx_user(). Errors: KSF_EEXIST when the pattern already has a handler,
 * KSF_EINVAL for an empty or non-topic pattern, KSF_ESTATE once the server runs.
 */
KSF_API ksf_err ksf_server_on_message(ksf_server *srv, const char *pattern,
                                      ksf_handler_fn fn, void *user, ksf_errinfo *ei);

/** Register an event handler for @p pattern. Errors: as ksf_server_on_message(). */
KSF_API ksf_err ksf_server_on_event(ksf_server *srv, const char *pattern,
                                    ksf_handler_fn fn, void *user, ksf_errinfo *ei);

/**
 * As ksf_server_on_message(), for a raw handler (KSF_HANDLER_RAW): the request value
 * is not decoded and @p fn's @p data is always NULL. The handler reads the bytes with
 * ksf_ctx_value() and may answer with ksf_ctx_set_reply_raw(); ksf_ctx_data() and
 * ksf_ctx_unpack() decode the value on first use. Errors: as ksf_server_on_message().
 */
KSF_API ksf_err ksf_server_on_message_raw(ksf_server *srv, const char *pattern,
                                          ksf_handler_fn fn, void *user, ksf_errinfo *ei);

/** As ksf_server_on_event(), for a raw handler (see ksf_server_on_message_raw()). */
KSF_API ksf_err ksf_server_on_event_raw(ksf_server *srv, const char *pattern,
                                        ksf_handler_fn fn, void *user, ksf_errinfo *ei);

/**
 * Register every macro-defined handler of @p controller (NULL: of all controllers).
 * Errors: KSF_EEXIST naming the pattern (and both definitions' file:line) when a
 * pattern would have two handlers; KSF_ENOENT when the controller has no handlers.
 */
KSF_API ksf_err ksf_server_mount(ksf_server *srv, const char *controller,
                                 ksf_errinfo *ei);

/**
 * As ksf_server_mount(), with @p state for the controller's handlers to read through
 * ksf_ctx_controller() (and ksf_ctx_user()): mount one controller on several servers
 * with a state each. @p controller NULL mounts every controller with that state.
 * Ownership: @p state is borrowed; it must outlive the server.
 * Errors: as ksf_server_mount(); KSF_ESTATE once the server runs.
 */
KSF_API ksf_err ksf_server_mount_controller(ksf_server *srv, const char *controller,
                                            void *state, ksf_errinfo *ei);

/** Called once the server has joined its group and is consuming (see set_ready_cb). */
typedef void (*ksf_ready_fn)(ksf_server *srv, void *user);

/** Set a callback run (on the run thread) once the server is ready to serve. */
KSF_API void ksf_server_set_ready_cb(ksf_server *srv, ksf_ready_fn fn, void *user);

/**
 * Connect, subscribe to the registered patterns and serve until ksf_server_stop().
 * On stop: fetching stops, in-flight handlers finish, replies are flushed, offsets are
 * committed and the group is left (not with group.instance.id: a static member's
 * partitions wait for its restart up to the session timeout); then run returns KSF_OK.
 * Delivery: at least once. A message's offset is committed only after its handler
 * finished and its reply was acknowledged by the broker; stored offsets are committed
 * about every second (consumer auto.commit.interval.ms, 1000 by default).
 * Errors: KSF_EINVAL when no handler is registered, KSF_ESTATE when already running,
 * KSF_EKAFKA for a fatal Kafka error (also when another server took over this one's
 * group.instance.id: FENCED_INSTANCE_ID), or when no broker answered within
 * broker.unreachable.timeout.ms of the start (the sentence names the addresses and
 * what each did).
 */
KSF_API ksf_err ksf_server_run(ksf_server *srv, ksf_errinfo *ei);

/**
 * Ask a running server to stop; returns at once. Threads: async-signal-safe, callable
 * from any thread or a signal handler. Calling it before run makes run return at once.
 */
KSF_API void ksf_server_stop(ksf_server *srv);

/**
 * Install SIGINT and SIGTERM handlers that call ksf_server_stop(@p srv). One server per
 * process can be the target at a time. Errors: KSF_EINVAL when sigaction fails.
 */
KSF_API ksf_err ksf_server_stop_on_signals(ksf_server *srv, ksf_errinfo *ei);

/** Counters of a server, readable at any time. */
typedef struct ksf_server_stats {
    uint64_t requests;       /**< request messages handled */
    uint64_t events;         /**< event messages handled */
    uint64_t replies;        /**< reply messages acknowledged by the broker */
    uint64_t errors;         /**< error replies sent (remote errors, internal errors) */
    uint64_t no_handler;     /**< messages on a topic with no handler */
    uint64_t malformed;      /**< messages whose headers could not be used */
    uint64_t reply_failures; /**< reply produces that failed for good */
    uint64_t expired; /**< messages skipped unhandled: their ksf_deadline had passed */
    /** messages that waited because their pattern was at its concurrency limit
     *  (server.pattern.concurrency; each message counted once) */
    uint64_t throttled;
    /** requests answered with the time-budget error (server.handler.timeout.ms) */
    uint64_t budget_exceeded;
    /** results of handlers that finished after their budget error: discarded */
    uint64_t late_discarded;
    /** event handler re-runs after a failure (server.event.retries) */
    uint64_t event_retries;
    /** failed events produced to their dead-letter topic and acknowledged */
    uint64_t dead_lettered;
    /** dead-letter produces that failed (each is tried again; nothing is dropped) */
    uint64_t dlq_failures;
    /** partitions whose committed offset was out of range (deleted by retention, or
     *  past the end), so that the consumer resumed elsewhere (docs/server.md, "Offsets
     *  out of range"); each is also logged at error */
    uint64_t offset_resets;
    /** messages those resets skipped: deleted before this server read them, so never
     *  handled nor answered */
    uint64_t offset_reset_skipped;
    /** requests not handled because their kafka_replyTopic is refused by the reply
     *  policy (server.reply.topics; docs/security.md); each is committed past */
    uint64_t reply_refused;
    /** requests answered at once with the overload error instead of being run: their
     *  ksf_deadline left less time than the handler's recent run time
     *  (docs/deadlines.md, "Shedding"); also counted in errors, not in requests */
    uint64_t shed;
    /** messages a middleware's before callback refused, so that their handler did not
     *  run (a guard's ksf_ctx_forbid or KSF_SKIP, a pipe's validation error, any other
     *  status; docs/pipeline.md); counted once per handler run, so an event refused on
     *  each of its retries counts each time. Also in requests or events */
    uint64_t refused;
    /** times a partition was paused because its window of unfinished messages was
     *  full (server.partition.window or server.partition.window.bytes; it resumes at
     *  a quarter). A steady count under normal load means the window is too small
     *  for the requests in flight: each resume refetches what was fetched past it */
    uint64_t partition_pauses;
} ksf_server_stats;

/** Copy the server's counters into @p out. */
KSF_API void ksf_server_get_stats(ksf_server *srv, ksf_server_stats *out);

/**
 * Write the server's metrics to @p out in the Prometheus text exposition format 0.0.4
 * (the body of a GET /metrics answer). Per pattern, labelled pattern="...":
 * ksf_server_requests_total, ksf_server_events_total, ksf_server_replies_total,
 * ksf_server_errors_total and the histogram ksf_server_handler_duration_seconds
 * (buckets 0.0001 s to 10 s); unlabelled: ksf_server_no_handler_total,
 * ksf_server_malformed_total, ksf_server_reply_failures_total,
 * ksf_server_offset_resets_total, ksf_server_offset_reset_skipped_total,
 * ksf_server_reply_refused_total, ksf_server_refused_total, ksf_server_expired_total,
 * ksf_server_shed_total, ksf_server_throttled_total, ksf_server_budget_exceeded_total,
 * ksf_server_late_discarded_total, ksf_server_event_retries_total,
 * ksf_server_dead_lettered_total, ksf_server_dlq_failures_total,
 * ksf_server_partition_pauses_total: each unlabelled one is
 * the ksf_server_stats field of its name. docs/metrics.md says what each counts. Use
 * open_memstream() for a buffer. Errors: KSF_EINVAL (a NULL argument, or a write to @p
 * out failed), KSF_ENOMEM. Threads: any, but not while handlers are still being
 * registered; the counters are read without stopping the server.
 */
KSF_API ksf_err ksf_server_write_prometheus(ksf_server *srv, FILE *out);

/**
 * The same metrics as a new JSON object: {"patterns": {"<pattern>": {"requests": n,
 * "events": n, "replies": n, "errors": n, "handler_duration": {"le_seconds": [...],
 * "counts": [cumulative, the +Inf bucket last], "sum_seconds": s, "count": n}}},
 * "no_handler": n, "malformed": n, "reply_failures": n, "offset_resets": n,
 * "offset_reset_skipped": n, "reply_refused": n, "refused": n, "expired": n,
 * "shed": n, "throttled": n, "budget_exceeded": n, "late_discarded": n,
 * "event_retries": n, "dead_lettered": n, "dlq_failures": n, "partition_pauses": n}.
 * Ownership: *out is a new reference (NULL on failure). Errors: KSF_EINVAL, KSF_ENOMEM.
 */
KSF_API ksf_err ksf_server_metrics_json(ksf_server *srv, json_t **out);

/* ------------------------------------------------------------------------------------ */
/* Server: the request pipeline (guards, pipes, interceptors, exception filters)        */
/* ------------------------------------------------------------------------------------ */

/**
 * What a message's handling came to, as the middlewares' after callbacks see it and may
 * change it (NestJS's interceptor Observable and exception filter in one struct).
 *
 * Ownership: the outcome owns @p reply and @p error. A callback that replaces one
 * json_decref()s the old value and stores a new reference (or uses
 * ksf_outcome_set_reply / ksf_outcome_set_error, which do that); after the last after
 * callback ksf sends what is there and frees it.
 */
typedef struct ksf_outcome {
    /** KSF_OK: @p reply is sent. KSF_EREMOTE: @p error is sent. KSF_SKIP (events):
     *  nothing more happens. Any other value: a request gets NestJS's
     *  {"status":"error","message":"Internal server error"}, an event goes to its
     *  retries and dead-letter topic (docs/retries.md), as a handler's return would. */
    ksf_err status;
    /** The final reply value (new reference, NULL for a null value). Raw bytes set
     *  with ksf_ctx_set_reply_raw still win over it, as for handlers. */
    json_t *reply;
    /** With KSF_EREMOTE on a request: the error as it goes on the wire (the
     *  RpcException shape, e.g. {"status":"error","message":"..."}). NULL otherwise,
     *  also for events (their error text is logged and dead-lettered). */
    json_t *error;
    /** Microseconds from the first before callback to now (for a deferred handler,
     *  to its ksf_ctx_finish): what a timing interceptor reports. */
    int64_t duration_us;
    /** True when a before callback stopped the message: the handler did not run. */
    bool refused;
    /** The number of values sent with ksf_ctx_stream() before this final one. */
    uint64_t streamed;
} ksf_outcome;

/**
 * One middleware: NestJS's guard, pipe, interceptor and exception filter as one
 * C-shaped pair of optional callbacks. Register it with ksf_server_use() (every
 * handler), ksf_server_use_controller() or ksf_server_use_pattern().
 *
 * before(ctx, data, user), guard and pipe, runs on the worker thread just before the
 * handler, with the handler's trace scope entered. It returns:
 * - KSF_OK to go on. It may transform the payload: json_decref(*data) and store a new
 *   reference (or NULL); the next before and the handler get that. *data is NULL for a
 *   binary value (read it with ksf_ctx_value()). On a raw handler (KSF_HANDLER_RAW)
 *   the befores get the decoded payload too (a chain with a before pays the decode a
 *   raw handler saves; afters alone do not), and the handler finds what they left
 *   through ksf_ctx_data(), its @p data being NULL.
 * - what ksf_ctx_reply_error() / ksf_ctx_reply_error_json() / ksf_ctx_unpack() /
 *   ksf_ctx_forbid() returned, to refuse with that error: a request's caller gets it
 *   (an RpcException-shaped error NestJS callers understand); an event fails into its
 *   retries and dead-letter topic as configured (server.event.retries,
 *   server.event.dlq.topic), except ksf_ctx_forbid's KSF_SKIP, which drops it.
 * - KSF_SKIP: an event is committed without running its handler (counted nowhere but
 *   the debug log); a request is refused with {"status":"error","message":"Forbidden
 *   resource"}, what NestJS sends when a guard returns false.
 * - any other error: as a handler's (Internal server error; event retries).
 * The befores after a refusing one and the handler do not run.
 *
 * after(ctx, outcome, user), interceptor and exception filter, runs once per message
 * when its final result is made: when the handler returned, or for a deferred handler
 * at ksf_ctx_finish(), on the thread that called it (any thread: a ksf_client reply
 * callback, so it must not block). It sees the status, reply, error and duration, and
 * may change them: replace the reply, map an error to a reply (status KSF_OK and a
 * reply), or a reply to an error. Streamed values (ksf_ctx_stream) are sent as they
 * come; the after sees the final one. It runs for events too (a filter setting
 * KSF_OK ends an event's failure without retries). Inside it, change the outcome
 * rather than calling the ksf_ctx_reply_* functions.
 *
 * Order: befores in registration order, the server's global middlewares first, then
 * its controller's, then its pattern's; afters in the exact reverse order, like
 * NestJS's nested interceptors. The after of a middleware runs only when its own
 * before (if any) returned KSF_OK, so a filter registered before a guard sees the
 * guard's refusal and one registered after it does not. An event retry runs the whole
 * chain again. Messages that never reach a handler (no handler, expired deadline,
 * shed, refused reply topic, the time-budget error) bypass the chain.
 *
 * Threads: the callbacks of one message never overlap; those of different messages
 * run concurrently on the worker pool, so shared state in @p user needs its own lock.
 * Ownership: the struct and @p user are borrowed and must outlive the server.
 */
typedef struct ksf_middleware {
    /** A name for the logs (may be NULL). */
    const char *name;
    /** Guard / pipe; may be NULL. */
    ksf_err (*before)(ksf_ctx *ctx, json_t **data, void *user);
    /** Interceptor / exception filter; may be NULL. */
    void (*after)(ksf_ctx *ctx, ksf_outcome *outcome, void *user);
} ksf_middleware;

/**
 * Add @p mw to every handler of @p srv (NestJS's app.useGlobalGuards/Interceptors/...).
 * Errors: KSF_EINVAL (NULL @p srv or @p mw, or a middleware with neither callback),
 * KSF_ESTATE once ksf_server_run() was called, KSF_ENOMEM.
 * Threads: the registration thread, before run.
 */
KSF_API ksf_err ksf_server_use(ksf_server *srv, const ksf_middleware *mw, void *user,
                               ksf_errinfo *ei);

/**
 * Add @p mw to the handlers of @p controller, the name given in the
 * KSF_CONTROLLER_*_PATTERN macros (@UseGuards on a controller class). ksf_server_run
 * fails with KSF_ENOENT when no handler of that controller is registered.
 * Errors: as ksf_server_use().
 */
KSF_API ksf_err ksf_server_use_controller(ksf_server *srv, const char *controller,
                                          const ksf_middleware *mw, void *user,
                                          ksf_errinfo *ei);

/**
 * Add @p mw to the handler of @p pattern only (@UseGuards on a method). ksf_server_run
 * fails with KSF_ENOENT when @p pattern has no handler then.
 * Errors: as ksf_server_use().
 */
KSF_API ksf_err ksf_server_use_pattern(ksf_server *srv, const char *pattern,
                                       const ksf_middleware *mw, void *user,
                                       ksf_errinfo *ei);

/**
 * Refuse the message as a NestJS guard returning false does: a request's caller gets
 * {"status":"error","message":"Forbidden resource"} and KSF_EREMOTE is returned; an
 * event is dropped: KSF_SKIP is returned. Use as `return ksf_ctx_forbid(ctx);` from a
 * before callback (or a handler).
 */
KSF_API ksf_err ksf_ctx_forbid(ksf_ctx *ctx);

/**
 * Validate and unpack the payload (as transformed by the befores so far) with a
 * jansson format, json_unpack_ex() semantics (@p flags: JSON_STRICT, JSON_VALIDATE_ONLY):
 * `ksf_ctx_unpack(ctx, JSON_STRICT, "{s:s, s:i}", "item", &item, "qty", &qty)`. Strings
 * and objects unpacked are borrowed from the payload, valid until the handler returns. On
 * a mismatch nothing reaches the handler: the caller is answered with
 * {"status":"error","message":"invalid payload: <field>: <what jansson expected>"},
 * e.g. `invalid payload: qty: Expected integer, got string`, the field as a path
 * (`order.items[1].sku`; `$` for the payload itself), and KSF_EREMOTE is returned, so
 * `if ((e = ksf_ctx_unpack(...))) return e;` works in a handler and in a before
 * callback alike. On an event the error is logged and KSF_EREMOTE returned (retries and
 * dead letter). Errors: KSF_ESTATE outside the before callbacks and the handler call
 * (the payload is gone once the handler returned: unpack before deferring);
 * KSF_EINVAL, logged and not answered, when @p fmt or its arguments are wrong
 * (jansson's <format> and <args> errors: the service's bug, so the caller gets the
 * Internal server error when it is returned). On a raw handler (KSF_HANDLER_RAW) the
 * value is decoded on first use, as by ksf_ctx_data() (KSF_ENOMEM when that fails).
 * Threads: the worker running the befores and the handler.
 */
KSF_API ksf_err ksf_ctx_unpack(ksf_ctx *ctx, size_t flags, const char *fmt, ...);

/**
 * The payload as the befores so far left it (borrowed), or NULL outside them and the
 * handler call and for a binary value.
 *
 * For a raw handler (KSF_HANDLER_RAW) the value is decoded here on the first call
 * (once per handler call, kept until the handler returns), by the same rules as a
 * handler's @p data; NULL also when that ran out of memory (logged). When a before
 * replaced the payload, this is the replacement (the raw handler's @p data stays
 * NULL). Threads: the worker running the befores and the handler.
 */
KSF_API const json_t *ksf_ctx_data(const ksf_ctx *ctx);

/** Make @p reply (stolen; NULL: a null value) the reply sent: status KSF_OK, any
 *  error dropped. */
KSF_API void ksf_outcome_set_reply(ksf_outcome *outcome, json_t *reply);

/** Make @p error (borrowed) the error sent, shaped as ksf_ctx_reply_error_json() does:
 *  status KSF_EREMOTE, any reply dropped. Errors: KSF_ENOMEM (outcome unchanged). */
KSF_API ksf_err ksf_outcome_set_error(ksf_outcome *outcome, const json_t *error);

/* ------------------------------------------------------------------------------------ */
/* Client: send (request/reply) and emit (events)                                      */
/* ------------------------------------------------------------------------------------ */

typedef struct ksf_client ksf_client;

/** One delivery to a send callback. Everything in it is borrowed for the call. */
typedef struct ksf_reply {
    /** KSF_OK, KSF_EREMOTE, KSF_ETIMEDOUT, KSF_ECLOSED, KSF_EPROTO, KSF_EKAFKA... */
    ksf_err err;
    /** KSF_OK: the decoded value (NULL for binary, json null for a null value; always
     *  NULL with KSF_SEND_RAW_REPLY: read raw); KSF_EREMOTE: the error as sent by the
     *  server (object or string), decoded also with KSF_SEND_RAW_REPLY; else NULL. */
    const json_t *value;
    /** The raw reply value bytes (NULL for a null value or when err is local). With
     *  KSF_SEND_RAW_REPLY the value as the server produced it: an object's JSON text,
     *  a string's bytes unquoted (NestJS's encoding), NULL for a null value. */
    const void *raw;
    size_t raw_len;
    /** True on the last delivery for this request: exactly one per request. */
    bool done;
    /** The request's correlation id. */
    const char *correlation_id;
    /** For a non-OK err: a sentence saying what happened. Otherwise "". */
    const char *text;
} ksf_reply;

/**
 * A send callback. Without KSF_SEND_STREAM it runs exactly once, with done == true:
 * the final reply value (the last one for a stream), a remote error, KSF_ETIMEDOUT, or
 * KSF_ECLOSED when the client is destroyed first. With KSF_SEND_STREAM it runs once per
 * streamed value (done == false) and then once with done == true (a final value, or no
 * value when the stream ended with a separate end message: err KSF_OK, value NULL).
 * Threads: runs on the client's reply thread (also KSF_EKAFKA when the request could
 * not be delivered: the reply thread serves the producer's delivery reports, within
 * about 10 ms of their arrival; the sender thread for a failure before it was
 * produced: no broker reachable, no reply partition; the destroying thread for
 * KSF_ECLOSED); it must not block, must not call ksf_client_call() and must not
 * destroy the client.
 */
typedef void (*ksf_reply_fn)(const ksf_reply *reply, void *user);

/** Flags for ksf_send_opts.flags. */
enum {
    KSF_SEND_STREAM = 1 << 0, /**< deliver every streamed value, not only the last */
    /** Hand an OK reply over undecoded: value NULL, the bytes in raw/raw_len (each
     *  streamed value too). For callers that forward replies or parse them their own
     *  way: it saves the jansson tree (~2.4k instructions per request). A remote error
     *  (KSF_EREMOTE) is still decoded into value. ksf_client_call() takes no flags and
     *  always decodes. */
    KSF_SEND_RAW_REPLY = 1 << 1,
};

/**
 * Per-request options; a zeroed struct (or NULL) means the defaults.
 *
 * Every request and event carries a W3C `traceparent` header: @p traceparent when set,
 * else, on a server handler's thread, the handler's trace continued (same trace id,
 * new span id, its tracestate), else a new trace; with the setting trace.headers
 * false, only @p traceparent when set. Requests also carry `ksf_deadline` (now + the
 * timeout, in epoch ms) unless client.deadline.header is false; inside a handler the
 * timeout is cut to the handler's remaining time either way.
 */
typedef struct ksf_send_opts {
    /** send: 0 means client.timeout.ms. emit: 0 means no deadline; > 0 gives the
     *  event a ksf_deadline, and servers skip it once that passed. */
    int timeout_ms;
    const void *key; /**< message key (NULL: none) */
    size_t key_len;
    const json_t *headers; /**< extra headers: an object of name -> string */
    const void *raw_value; /**< send these bytes instead of encoding @p data */
    size_t raw_len;
    unsigned flags; /**< KSF_SEND_* */
    /** Your own W3C traceparent (e.g. injected from an OpenTelemetry span), sent as
     *  given; invalid text is refused with KSF_EINVAL. NULL: automatic (see above). */
    const char *traceparent;
    /** The tracestate to go with @p traceparent (requires it); NULL: none. */
    const char *tracestate;
} ksf_send_opts;

/**
 * Create a client (NestJS ClientKafka). Its ids are "<client.id><postfix.id>" and
 * "<group.id><postfix.id>" with postfix "-client" by default. It starts its threads
 * (sender; reply, which also serves delivery reports) at once but connects lazily.
 * Ownership: @p cfg is copied. *out is NULL on failure. Errors: KSF_ENOMEM, KSF_EINVAL
 * (also a TLS/SASL setting the reply-group connection cannot honour, or a TLS file it
 * cannot load, named with the remedy), KSF_EKAFKA.
 */
KSF_API ksf_err ksf_client_new(ksf_client **out, const ksf_config *cfg, ksf_errinfo *ei);

/**
 * Fail every pending request with KSF_ECLOSED (each callback runs once, on the calling
 * thread), flush queued emits for up to 5 s, leave the reply group (not with
 * group.instance.id: the partition waits for the same id up to the session timeout),
 * and free the client. NULL is a no-op.
 * Threads: never call from a reply callback.
 */
KSF_API void ksf_client_destroy(ksf_client *cli);

/**
 * Register "<pattern>.reply" so that ksf_client_connect() acquires its reply partition
 * ahead of time and the first send of @p pattern does not pay for it (sends acquire
 * on demand otherwise). Subscribe every pattern before connect, as with NestJS's
 * subscribeToResponseOf: connect then joins the reply group once with all of them,
 * where a later first send of an unsubscribed pattern costs a group rebalance.
 * Errors: KSF_EINVAL, KSF_ECLOSED.
 */
KSF_API ksf_err ksf_client_subscribe_to_response_of(ksf_client *cli, const char *pattern,
                                                    ksf_errinfo *ei);

/**
 * Wait until the producer reached the brokers and every subscribed reply topic has a
 * reply partition whose first fetch has completed (so the reply to a request sent next
 * is fetched promptly), for up to @p timeout_ms. Errors: KSF_ETIMEDOUT naming what was
 * not ready, KSF_EKAFKA (also: no broker answered within broker.unreachable.timeout.ms,
 * naming the addresses), KSF_ENOPARTITION, KSF_ECLOSED.
 */
KSF_API ksf_err ksf_client_connect(ksf_client *cli, int timeout_ms, ksf_errinfo *ei);

/**
 * Send a request to topic @p pattern and call @p cb with the reply. @p data is encoded
 * as NestJS does (objects and arrays as JSON text, strings raw, numbers and booleans as
 * their text, json null or NULL as a null value) unless opts->raw_value is set.
 * Never waits: returns KSF_OK when the request is queued (also before the reply
 * partition is acquired or a broker reached: the client's sender thread produces it
 * then); @p cb then runs exactly once with done == true, and every failure after the
 * return comes there: KSF_EKAFKA when no broker answered within
 * broker.unreachable.timeout.ms (naming the addresses), KSF_ENOPARTITION (no reply
 * partition: the sentence names the topic and its partition count; with the group
 * provider, at once while more instances than partitions share the reply group),
 * KSF_ETIMEDOUT (saying "no service consumes <pattern>" when the pattern's topic did
 * not exist before the first request to it). On any other return @p cb is never
 * called. Errors: KSF_EINVAL, KSF_EBUSY (client.max.in.flight reached: retry later),
 * KSF_EMSGSIZE, KSF_EKAFKA (the producer's queue is full), KSF_ECLOSED, KSF_ENOMEM.
 * Threads: any thread, including server handlers.
 */
KSF_API ksf_err ksf_client_send(ksf_client *cli, const char *pattern, const json_t *data,
                                const ksf_send_opts *opts, ksf_reply_fn cb, void *user,
                                ksf_errinfo *ei);

/**
 * Send and wait for the final reply on the calling thread. On KSF_OK, *reply is the
 * reply value (json null for a null value, NULL for a binary value: use send for
 * those); on KSF_EREMOTE it is the error JSON sent by the server; otherwise NULL.
 * @p timeout_ms 0 means client.timeout.ms. Threads: never from a reply callback.
 * Errors: those of ksf_client_send(), KSF_EREMOTE, KSF_ETIMEDOUT.
 */
KSF_API ksf_err ksf_client_call(ksf_client *cli, const char *pattern, const json_t *data,
                                int timeout_ms, json_t **reply, ksf_errinfo *ei);

/** Delivery report of an emit: KSF_OK once the broker acknowledged it. */
typedef void (*ksf_emit_fn)(ksf_err err, const char *text, void *user);

/**
 * Emit an event to topic @p pattern: no correlation headers, no reply. @p cb (optional)
 * runs once when the broker acknowledged the event or it failed for good, on the
 * client's reply thread (the destroying thread for what destroy flushes), under the
 * rules of a reply callback: it must not block, must not call ksf_client_call() and
 * must not destroy the client (it may emit and send).
 * Errors: KSF_EINVAL, KSF_EMSGSIZE, KSF_EKAFKA (queue full), KSF_ECLOSED.
 */
KSF_API ksf_err ksf_client_emit(ksf_client *cli, const char *pattern, const json_t *data,
                                const ksf_send_opts *opts, ksf_emit_fn cb, void *user,
                                ksf_errinfo *ei);

/**
 * Wait up to @p timeout_ms until every emitted event and sent request left the
 * producer. From a reply or emit callback it serves the delivery reports itself
 * (their callbacks then run inside it). Errors: KSF_ETIMEDOUT with the count still
 * queued.
 */
KSF_API ksf_err ksf_client_flush(ksf_client *cli, int timeout_ms, ksf_errinfo *ei);

/** Counters of a client, readable at any time. */
typedef struct ksf_client_stats {
    uint64_t sent;              /**< requests produced */
    uint64_t replies;           /**< requests answered with a value */
    uint64_t remote_errors;     /**< requests answered with an error */
    uint64_t timeouts;          /**< requests that timed out */
    uint64_t late_replies;      /**< replies for requests that had timed out */
    uint64_t unknown_replies;   /**< replies with an id this client never sent */
    uint64_t duplicate_replies; /**< replies for requests already finished */
    uint64_t emitted;           /**< events acknowledged */
    /** requests ended by a local error instead of a reply: not produced (no reply
     *  partition, brokers unreachable, a produce refused) or not delivered; each
     *  callback got that error (KSF_EKAFKA or the cause's code). Requests refused by
     *  ksf_client_send's return code are not counted */
    uint64_t send_failures;
    /** events whose delivery failed: their emit callback got KSF_EKAFKA */
    uint64_t emit_failures;
    uint32_t in_flight; /**< requests awaiting their final reply now */
} ksf_client_stats;

/** Copy the client's counters into @p out. */
KSF_API void ksf_client_get_stats(ksf_client *cli, ksf_client_stats *out);

/**
 * Write the client's metrics to @p out in the Prometheus text exposition format 0.0.4.
 * Per pattern sent to, labelled pattern="...": ksf_client_requests_total,
 * ksf_client_replies_total, ksf_client_remote_errors_total, ksf_client_timeouts_total,
 * ksf_client_late_replies_total and the round-trip histogram
 * ksf_client_request_duration_seconds; per client: ksf_client_in_flight,
 * ksf_client_reply_partition{topic,partition,state="owned"|"draining"} (1 per reply
 * partition held now), ksf_client_reply_group_rebalances_total,
 * ksf_client_unknown_replies_total, ksf_client_duplicate_replies_total,
 * ksf_client_events_emitted_total, ksf_client_send_failures_total,
 * ksf_client_emit_failures_total (each the ksf_client_stats field of its name).
 * Errors: KSF_EINVAL (a NULL argument or a failed write), KSF_ENOMEM. Threads: any.
 */
KSF_API ksf_err ksf_client_write_prometheus(ksf_client *cli, FILE *out);

/**
 * The same metrics as a new JSON object: {"patterns": {"<pattern>": {"sent": n,
 * "replies": n, "remote_errors": n, "timeouts": n, "late_replies": n,
 * "request_duration": {...as in ksf_server_metrics_json}}}, "in_flight": n,
 * "reply_partitions": [{"topic": t, "partition": p, "draining": bool}],
 * "rebalances": n, "unknown_replies": n, "duplicate_replies": n, "emitted": n,
 * "send_failures": n, "emit_failures": n}.
 * Ownership: *out is a new reference (NULL on failure). Errors: KSF_EINVAL, KSF_ENOMEM.
 */
KSF_API ksf_err ksf_client_metrics_json(ksf_client *cli, json_t **out);

#ifdef __cplusplus
}
#endif

#endif /* KSF_KSF_H */
