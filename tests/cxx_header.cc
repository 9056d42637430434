// <ksf/ksf.h> compiled as C++ (with the project's warnings as errors): the extern "C"
// guards, the enums and structs, and the handler macros. This file is the program;
// tests/cxx_handlers.cc holds macro-defined handlers and is compiled into an archive
// this program does not reference, so it is compiled (checked) but not linked until
// the registry exists on the branch.
#include <ksf/ksf.h>

#include <cstdio>
#include <cstring>

static ksf_err
plain_handler(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    *reply = json_deep_copy(data);
    return KSF_OK;
}

int
main()
{
    ksf_handler_fn fn = plain_handler; // the callback type is usable from C++
    ksf_send_opts opts = {};
    opts.flags = KSF_SEND_STREAM;
    ksf_errinfo ei = {};
    ksf_config *cfg = nullptr;
    if (ksf_config_new(&cfg) != KSF_OK || fn == nullptr || opts.flags != 1) {
        return 1;
    }
    if (ksf_config_set(cfg, "brokers", "nohost", &ei) != KSF_EINVAL ||
        std::strstr(ei.text, "brokers \"nohost\"") == nullptr) {
        std::fprintf(stderr, "unexpected: %s\n", ei.text);
        return 1;
    }
    ksf_config_destroy(cfg);
    ksf_config_destroy(nullptr);
    std::printf("%s %s\n", ksf_version(), ksf_strerror(KSF_ETIMEDOUT));
    return std::strcmp(ksf_version(), KSF_VERSION_STRING) != 0;
}
