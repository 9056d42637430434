/* Filling ksf_errinfo: one helper so every failure sentence is built the same way. */
#ifndef KSF_ERRINFO_H
#define KSF_ERRINFO_H

#include <ksf/ksf.h>

/*
 * Record @p code and a printf-formatted sentence in @p ei (which may be NULL) and
 * return @p code, so callers can write `return ksfi_fail(ei, KSF_EINVAL, "...")`.
 */
ksf_err ksfi_fail(ksf_errinfo *ei, ksf_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* As ksfi_fail, also recording librdkafka's error code. */
ksf_err ksfi_fail_kafka(ksf_errinfo *ei, int kafka_err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
