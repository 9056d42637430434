#include "settings.h"

#include <check.h>
#include <string.h>

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

void
ksft_assert_config_get(const ksf_config *cfg, const char *key, const char *want)
{
    char buf[256];
    ksf_err e = ksf_config_get(cfg, key, buf, sizeof buf);
    ck_assert_msg(e == KSF_OK, "getting %s: %s", key, ksf_strerror(e));
    ck_assert_msg(!strcmp(buf, want), "%s is \"%s\", expected \"%s\"", key, buf, want);
}

void
ksft_assert_config_all(const ksf_config *cfg, const char *const kv[][2], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ksft_assert_config_get(cfg, kv[i][0], kv[i][1]);
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

void
ksft_assert_config_accepts(const char *key, const char *value, const char *stored)
{
    ksf_config *cfg = ksft_config_from(NULL, 0);
    ksf_errinfo ei = {.code = KSF_EPROTO, .text = "untouched"};
    ck_assert_msg(ksf_config_set(cfg, key, value, &ei) == KSF_OK, "%s=%s refused: %s",
                  key, value, ei.text);
    ck_assert_str_eq(ei.text, "untouched"); /* errinfo is left alone on success */
    ksft_assert_config_get(cfg, key, stored ? stored : value);
    ksf_config_destroy(cfg);
}

void
ksft_assert_config_refuses(const char *key, const char *value, ksf_err code,
                           const char *sentence)
{
    ksf_config *cfg = ksft_config_from(NULL, 0);
    char before[256], after[256];
    ksf_err had = ksf_config_get(cfg, key, before, sizeof before);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_set(cfg, key, value, &ei), code);
    ck_assert_int_eq(ei.code, code);
    ck_assert_str_eq(ei.text, sentence);
    ck_assert_int_eq(ksf_config_set(cfg, key, value, NULL), code); /* ei optional */
    ck_assert_int_eq(ksf_config_get(cfg, key, after, sizeof after), had);
    if (had == KSF_OK) {
        ck_assert_str_eq(after, before); /* a refused value changes nothing */
    }
    ksf_config_destroy(cfg);
}
