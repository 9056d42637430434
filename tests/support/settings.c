#include "settings.h"

#include <check.h>

void
ksft_config_set_all(ksf_config *cfg, const char *const kv[][2], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ksf_errinfo ei = {0};
        ksf_err e = ksf_config_set(cfg, kv[i][0], kv[i][1], &ei);
        ck_assert_msg(e == KSF_OK, "setting %s=%s: %s (%s)", kv[i][0], kv[i][1],
                      ksf_strerror(e), ei.text);
    }
}

void
ksft_config_set_kafka_all(ksf_config *cfg, ksf_kafka_role role, const char *const kv[][2],
                          size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ksf_errinfo ei = {0};
        ksf_err e = ksf_config_set_kafka(cfg, role, kv[i][0], kv[i][1], &ei);
        ck_assert_msg(e == KSF_OK, "setting librdkafka %s=%s: %s (%s)", kv[i][0],
                      kv[i][1], ksf_strerror(e), ei.text);
    }
}

ksf_config *
ksft_config_from(const char *const kv[][2], size_t n)
{
    ksf_config *cfg = NULL;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ksft_config_set_all(cfg, kv, n);
    return cfg;
}
