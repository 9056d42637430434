/*
 * Internal logging: formats a record and hands it to the configured sinks, if any: the
 * plain one (message with the fields appended as ` key=value`) and the structured one
 * (message and fields apart).
 */
#ifndef KSF_LOG_H
#define KSF_LOG_H

#include <ksf/ksf.h>

typedef struct ksfi_logger {
    ksf_log_fn fn;
    void *user;
    ksf_log_level max_level;
    ksf_log_structured_fn sfn;
    void *suser;
    ksf_log_level smax_level;
} ksfi_logger;

/* The most fields one record carries; extra ones are dropped. */
#define KSFI_LOG_FIELDS_MAX 16

/* A logger taking its sinks from @p cfg. */
ksfi_logger ksfi_logger_from_config(const ksf_config *cfg);

/* True when a record at @p level would reach a sink: skip building costly fields. */
bool ksfi_log_enabled(const ksfi_logger *lg, ksf_log_level level);

/* Log a printf-formatted message (cheap no-op when the level is filtered out). */
void ksfi_log(const ksfi_logger *lg, ksf_log_level level, const char *component,
              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* As ksfi_log, with @p n key=value fields (borrowed for the call). */
void ksfi_logkv(const ksfi_logger *lg, ksf_log_level level, const char *component,
                const ksf_log_field *fields, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/*
 * Number-to-text for fields without a heap allocation: KSFI_LOG_NUM(buf, v) prints
 * @p v (any integer, as long long) into the char array @p buf and yields it.
 */
const char *ksfi_log_num(char *buf, size_t size, long long v);
#define KSFI_LOG_NUM(buf, v) ksfi_log_num((buf), sizeof(buf), (long long)(v))

#endif
