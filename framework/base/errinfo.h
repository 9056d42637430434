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

/*
 * @p ei emptied as `= {0}` would leave it for its readers (no error, empty text),
 * without zeroing its 320-byte text: on the per-message paths that zeroing was a
 * visible share of the work.
 */
static inline void
ksfi_errinfo_clear(ksf_errinfo *ei)
{
    ei->code = KSF_OK;
    ei->kafka_err = 0;
    ei->text[0] = '\0';
}

#endif
