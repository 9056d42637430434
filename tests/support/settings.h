/*
 * Configurations from {key, value} tables, so a test states its settings as data and a
 * refused setting fails the test with the key, the value and ksf's own sentence.
 */
#ifndef KSF_TEST_SETTINGS_H
#define KSF_TEST_SETTINGS_H

#include <ksf/ksf.h>
#include <stddef.h>

/* The number of {key, value} rows of a table declared as an array. */
#define KSFT_NKV(kv) (sizeof(kv) / sizeof((kv)[0]))

/* Set each {key, value} of @p kv on @p cfg in order, through ksf_config_set; the first
 * refused one fails the current test, naming the key, the value and the error. */
void ksft_config_set_all(ksf_config *cfg, const char *const kv[][2], size_t n);

/* The same through ksf_config_set_kafka(@p role): keys are librdkafka property names. */
void ksft_config_set_kafka_all(ksf_config *cfg, ksf_kafka_role role,
                               const char *const kv[][2], size_t n);

/* @p cfg's value of @p key is exactly @p want (ksf_config_get); else the test fails,
 * naming the key. */
void ksft_assert_config_get(const ksf_config *cfg, const char *key, const char *want);

/* ksft_assert_config_get for each {key, want} row of @p kv: a test's expected values
 * (defaults, a copy) as a table. */
void ksft_assert_config_all(const ksf_config *cfg, const char *const kv[][2], size_t n);

/* A new configuration (ksf's defaults) with @p kv set on it. The caller destroys it. */
ksf_config *ksft_config_from(const char *const kv[][2], size_t n);

/* On a new configuration, ksf_config_set(@p key, @p value) succeeds and leaves the
 * errinfo alone, and ksf_config_get then gives @p stored (NULL: @p value). */
void ksft_assert_config_accepts(const char *key, const char *value, const char *stored);

/* On a new configuration, ksf_config_set(@p key, @p value) returns @p code with exactly
 * @p sentence (and the same code without an errinfo), and the key's value is unchanged:
 * a refused value changes nothing. */
void ksft_assert_config_refuses(const char *key, const char *value, ksf_err code,
                                const char *sentence);

#endif
