#include "log.h"

#include "config.h"

#include <stdarg.h>
#include <stdio.h>

const char *
ksf_log_level_name(ksf_log_level level)
{
    switch (level) {
    case KSF_LOG_ERROR:
        return "error";
    case KSF_LOG_WARNING:
        return "warning";
    case KSF_LOG_NOTICE:
        return "notice";
    case KSF_LOG_INFO:
        return "info";
    case KSF_LOG_DEBUG:
        return "debug";
    }
    return "log";
}

void
ksf_log_stderr(void *user, ksf_log_level level, const char *component,
               const char *message)
{
    (void)user;
    /* One fprintf per line so concurrent threads do not interleave within a line. */
    fprintf(stderr, "ksf %s %s: %s\n", ksf_log_level_name(level), component, message);
}

ksfi_logger
ksfi_logger_from_config(const ksf_config *cfg)
{
    ksfi_logger lg = {cfg->log_fn, cfg->log_user, cfg->log_max_level};
    return lg;
}

void
ksfi_log(const ksfi_logger *lg, ksf_log_level level, const char *component,
         const char *fmt, ...)
{
    if (!lg || !lg->fn || level > lg->max_level) {
        return;
    }
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    lg->fn(lg->user, level, component, line);
}
