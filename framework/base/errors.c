#include "base/errinfo.h"

#include <stdarg.h>
#include <stdio.h>

const char *
ksf_version(void)
{
    return KSF_VERSION_STRING;
}

const char *
ksf_strerror(ksf_err err)
{
    switch (err) {
    case KSF_OK:
        return "success";
    case KSF_ENOMEM:
        return "out of memory";
    case KSF_EINVAL:
        return "invalid argument";
    case KSF_ETIMEDOUT:
        return "timed out";
    case KSF_ECLOSED:
        return "closed";
    case KSF_EPROTO:
        return "protocol error";
    case KSF_EREMOTE:
        return "remote handler error";
    case KSF_EKAFKA:
        return "Kafka error";
    case KSF_EEXIST:
        return "already exists";
    case KSF_ENOENT:
        return "not found";
    case KSF_ENOPARTITION:
        return "no reply partition";
    case KSF_EBUSY:
        return "too many requests in flight";
    case KSF_ESTATE:
        return "invalid state for this call";
    case KSF_EMSGSIZE:
        return "message too large";
    case KSF_DEFERRED:
        return "reply deferred";
    case KSF_SKIP:
        return "skipped by a middleware";
    }
    return "unknown ksf error";
}

/* The format attribute lets -Wformat-nonliteral (clang, -Wformat=2) see fmt checked. */
static ksf_err vfail(ksf_errinfo *ei, ksf_err code, int kafka_err, const char *fmt,
                     va_list ap) __attribute__((format(printf, 4, 0)));

static ksf_err
vfail(ksf_errinfo *ei, ksf_err code, int kafka_err, const char *fmt, va_list ap)
{
    if (ei) {
        ei->code = code;
        ei->kafka_err = kafka_err;
        vsnprintf(ei->text, sizeof ei->text, fmt, ap);
    }
    return code;
}

ksf_err
ksfi_fail(ksf_errinfo *ei, ksf_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(ei, code, 0, fmt, ap);
    va_end(ap);
    return code;
}

ksf_err
ksfi_fail_kafka(ksf_errinfo *ei, int kafka_err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(ei, KSF_EKAFKA, kafka_err, fmt, ap);
    va_end(ap);
    return KSF_EKAFKA;
}
