// Handler macros used from C++ (see cxx_header.cc): message and event patterns, a named
// controller, and the static-library anchor.
#include <ksf/ksf.h>

KSF_MESSAGE_PATTERN("cxx.echo", cxx_echo)
{
    *reply = json_deep_copy(data);
    return KSF_OK;
}

KSF_EVENT_PATTERN("cxx.event", cxx_event)
{
    return ksf_ctx_is_event(ctx) ? KSF_OK : KSF_EINVAL;
}

KSF_CONTROLLER_MESSAGE_PATTERN("cxx", "cxx.sum", cxx_sum)
{
    json_int_t sum = 0;
    size_t i;
    json_t *item;
    json_array_foreach (data, i, item) {
        sum += json_integer_value(item);
    }
    *reply = json_integer(sum);
    return KSF_OK;
}

KSF_CONTROLLER_EVENT_PATTERN("cxx", "cxx.note", cxx_note)
{
    return KSF_OK;
}

// Raw handlers (KSF_HANDLER_RAW): data is NULL, the bytes come from ksf_ctx_value.
KSF_MESSAGE_PATTERN_RAW("cxx.raw", cxx_raw)
{
    size_t len = 0;
    const void *v = ksf_ctx_value(ctx, &len);
    return v ? ksf_ctx_set_reply_raw(ctx, v, len) : KSF_OK;
}

KSF_CONTROLLER_EVENT_PATTERN_RAW("cxx", "cxx.raw.note", cxx_raw_note)
{
    return data == nullptr ? KSF_OK : KSF_EINVAL;
}

KSF_CONTROLLER_ANCHOR(cxx_handlers);
