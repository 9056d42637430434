/* Internal logging: formats a line and hands it to the configured sink, if any. */
#ifndef KSF_LOG_H
#define KSF_LOG_H

#include <ksf/ksf.h>

typedef struct ksfi_logger {
    ksf_log_fn fn;
    void *user;
    ksf_log_level max_level;
} ksfi_logger;

/* A logger taking its sink from @p cfg. */
ksfi_logger ksfi_logger_from_config(const ksf_config *cfg);

/* Log a printf-formatted message (cheap no-op when the level is filtered out). */
void ksfi_log(const ksfi_logger *lg, ksf_log_level level, const char *component,
              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
