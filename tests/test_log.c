/* Structured logging: the logfmt and JSON renderings, the ready sinks, and how the
 * internal ksfi_logkv reaches the plain and the structured sinks. */
#include "base/config.h"
#include "base/log.h"
#include "kafka/kafka.h"

#include "suite.h"

#include <check.h>
#include <ksf/ksf.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

KSFT_TEST(test_log_logfmt_plain_values, 10)
{
    char buf[256];
    ksf_log_field f[] = {{"topic", "hero.kill"}, {"partition", "3"}};
    size_t n = ksf_log_format_logfmt(buf, sizeof buf, KSF_LOG_INFO, "server",
                                     "partitions assigned", f, 2);
    ck_assert_str_eq(buf, "level=info component=server msg=\"partitions assigned\" "
                          "topic=hero.kill partition=3");
    ck_assert_uint_eq(n, strlen(buf));
}
END_TEST

KSFT_TEST(test_log_logfmt_escaping, 10)
{
    char buf[256];
    ksf_log_field f[] = {
        {"a", "two words"}, {"b", "say \"hi\""},  {"c", "line1\nline2\ttab\r"},
        {"d", ""},          {"e", "back\\slash"}, {"f", "k=v"},
        {"g", "\x01"},      {"bad key", "x"},     {"h", NULL},
    };
    ksf_log_format_logfmt(buf, sizeof buf, KSF_LOG_WARNING, "client", "m", f, 9);
    ck_assert_str_eq(buf, "level=warning component=client msg=m a=\"two words\" "
                          "b=\"say \\\"hi\\\"\" c=\"line1\\nline2\\ttab\\r\" d=\"\" "
                          "e=\"back\\\\slash\" f=\"k=v\" g=\"\\u0001\" bad_key=x h=\"\"");
}
END_TEST

KSFT_TEST(test_log_logfmt_truncates_like_snprintf, 10)
{
    char buf[16];
    size_t n =
        ksf_log_format_logfmt(buf, sizeof buf, KSF_LOG_ERROR, "kafka", "boom", NULL, 0);
    ck_assert_uint_eq(n, strlen("level=error component=kafka msg=boom"));
    ck_assert_str_eq(buf, "level=error com"); /* 15 characters and the NUL */
    ck_assert_uint_eq(
        ksf_log_format_logfmt(NULL, 0, KSF_LOG_ERROR, "kafka", "boom", NULL, 0), n);
}
END_TEST

KSFT_TEST(test_log_json_escaping, 10)
{
    char buf[256];
    ksf_log_field f[] = {{"correlation_id", "a\"b"}, {"note", "x\\y\nz\x1f"}};
    ksf_log_format_json(buf, sizeof buf, KSF_LOG_DEBUG, "server", "hello world", f, 2);
    ck_assert_str_eq(buf, "{\"level\":\"debug\",\"component\":\"server\","
                          "\"msg\":\"hello world\",\"correlation_id\":\"a\\\"b\","
                          "\"note\":\"x\\\\y\\nz\\u001f\"}");
    /* It is JSON a parser reads back to the same strings. */
    json_error_t je;
    json_t *o = json_loads(buf, 0, &je);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(json_string_value(json_object_get(o, "note")), "x\\y\nz\x1f");
    json_decref(o);
}
END_TEST

/* Read what a sink wrote to a temporary file. */
static char *
slurp(FILE *f)
{
    static char text[8192];
    rewind(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    return text;
}

static void
assert_matches(const char *text, const char *pattern)
{
    regex_t re;
    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    int rc = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    ck_assert_msg(rc == 0, "\"%s\" does not match /%s/", text, pattern);
}

KSFT_TEST(test_log_ready_sinks_write_one_line, 10)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ksf_log_field fl[] = {{"offset", "42"}};
    ksf_log_logfmt(f, KSF_LOG_NOTICE, "server", "a b", fl, 1);
    ksf_log_jsonl(f, KSF_LOG_INFO, "client", "c", NULL, 0);
    assert_matches(slurp(f), "^time=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                             "\\.[0-9]{3}Z level=notice component=server msg=\"a b\" "
                             "offset=42\n"
                             "\\{\"time\":\"[0-9T:.-]+Z\",\"level\":\"info\","
                             "\"component\":\"client\",\"msg\":\"c\"\\}\n$");
    fclose(f);
}
END_TEST

KSFT_TEST(test_log_ready_sink_cuts_long_lines, 10)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    char *big = malloc(10000);
    memset(big, 'x', 9999);
    big[9999] = '\0';
    ksf_log_logfmt(f, KSF_LOG_INFO, "server", big, NULL, 0);
    free(big);
    const char *text = slurp(f);
    ck_assert_uint_eq(strlen(text), 4095); /* the 4096-byte line buffer less its NUL */
    ck_assert_str_eq(text + strlen(text) - 4, "...\n");
    fclose(f);
}
END_TEST

/* A plain and a structured sink recording their last call. */
typedef struct seen {
    int calls;
    ksf_log_level level;
    char component[32];
    char message[512];
    char fields[512]; /* "k=v;k=v;" */
} seen;

static void
plain_sink(void *user, ksf_log_level level, const char *component, const char *message)
{
    seen *s = user;
    s->calls++;
    s->level = level;
    snprintf(s->component, sizeof s->component, "%s", component);
    snprintf(s->message, sizeof s->message, "%s", message);
}

static void
structured_sink(void *user, ksf_log_level level, const char *component,
                const char *message, const ksf_log_field *fields, size_t n)
{
    seen *s = user;
    plain_sink(user, level, component, message);
    s->fields[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t o = strlen(s->fields);
        snprintf(s->fields + o, sizeof s->fields - o, "%s=%s;", fields[i].key,
                 fields[i].value);
    }
}

KSFT_TEST(test_log_logkv_reaches_both_sinks, 10)
{
    ksf_config *cfg;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    seen plain = {0}, structured = {0};
    ksf_config_set_log(cfg, plain_sink, &plain, KSF_LOG_INFO);
    ksf_config_set_log_structured(cfg, structured_sink, &structured, KSF_LOG_DEBUG);
    /* Servers and clients copy their configuration: the sinks must survive a dup. */
    ksf_config *copy;
    ck_assert_int_eq(ksf_config_dup(cfg, &copy), KSF_OK);
    ksfi_logger lg = ksfi_logger_from_config(copy);
    char n[24];
    ksf_log_field f[] = {{"topic", "a b"}, {"partition", KSFI_LOG_NUM(n, 7)}};
    ksfi_logkv(&lg, KSF_LOG_WARNING, "server", f, 2, "reply failed after %d tries", 3);
    ck_assert_int_eq(plain.calls, 1);
    ck_assert_str_eq(plain.message,
                     "reply failed after 3 tries topic=\"a b\" partition=7");
    ck_assert_int_eq(structured.calls, 1);
    ck_assert_str_eq(structured.message, "reply failed after 3 tries");
    ck_assert_str_eq(structured.fields, "topic=a b;partition=7;");
    ck_assert_str_eq(structured.component, "server");
    ck_assert_int_eq(structured.level, KSF_LOG_WARNING);
    /* Each sink filters on its own level. */
    ksfi_logkv(&lg, KSF_LOG_DEBUG, "client", f, 1, "detail");
    ck_assert_int_eq(plain.calls, 1);
    ck_assert_int_eq(structured.calls, 2);
    ck_assert_str_eq(structured.fields, "topic=a b;");
    /* The old call keeps working and reaches the structured sink without fields. */
    ksfi_log(&lg, KSF_LOG_ERROR, "kafka", "%s", "plain");
    ck_assert_int_eq(plain.calls, 2);
    ck_assert_str_eq(plain.message, "plain");
    ck_assert_int_eq(structured.calls, 3);
    ck_assert_str_eq(structured.fields, "");
    ck_assert(!ksfi_log_enabled(NULL, KSF_LOG_ERROR));
    ksf_config_destroy(copy);
    ksf_config_destroy(cfg);
}
END_TEST

KSFT_TEST(test_log_off_by_default, 10)
{
    ksf_config *cfg;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ksfi_logger lg = ksfi_logger_from_config(cfg);
    ck_assert(!ksfi_log_enabled(&lg, KSF_LOG_ERROR));
    ksfi_logkv(&lg, KSF_LOG_ERROR, "server", NULL, 0, "nobody hears this");
    ksf_config_set_log_structured(NULL, structured_sink, NULL, KSF_LOG_DEBUG); /* no-op */
    ksf_config_destroy(cfg);
}
END_TEST

/* librdkafka's records: a structured sink fed from its threads. */
typedef struct kafka_seen {
    pthread_mutex_t lock;
    int records, with_fields;
    char facility[64], client[128];
} kafka_seen;

static void
kafka_sink(void *user, ksf_log_level level, const char *component, const char *message,
           const ksf_log_field *fields, size_t n)
{
    kafka_seen *k = user;
    (void)message;
    if (strcmp(component, "kafka") != 0 || level != KSF_LOG_DEBUG) {
        return;
    }
    pthread_mutex_lock(&k->lock);
    k->records++;
    if (n == 2 && !strcmp(fields[0].key, "facility") &&
        !strcmp(fields[1].key, "client")) {
        k->with_fields++;
        snprintf(k->facility, sizeof k->facility, "%s", fields[0].value);
        snprintf(k->client, sizeof k->client, "%s", fields[1].value);
    }
    pthread_mutex_unlock(&k->lock);
}

/* The handle's opaque starts with the logger, as kafka.h requires. */
typedef struct owner {
    ksfi_logger log;
} owner;

KSFT_TEST(test_log_kafka_records_carry_facility_and_client, 20)
{
    kafka_seen k = {.lock = PTHREAD_MUTEX_INITIALIZER};
    ksf_config *cfg;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    /* Nothing listens on port 1 of the loopback: the handle only logs its start-up. */
    ck_assert_int_eq(ksf_config_set(cfg, "brokers", "127.0.0.1:1", &ei), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.debug", "generic", &ei), KSF_OK);
    ksf_config_set_log_structured(cfg, kafka_sink, &k, KSF_LOG_DEBUG);
    owner o = {ksfi_logger_from_config(cfg)};
    rd_kafka_conf_t *conf = NULL;
    ck_assert_int_eq(
        ksfi_kafka_conf(cfg, KSF_KAFKA_PRODUCER, "logtest", NULL, &conf, &ei), KSF_OK);
    rd_kafka_conf_set_opaque(conf, &o);
    char err[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(rk != NULL, "%s", err);
    int got = 0;
    for (int i = 0; i < 500; i++) { /* up to 5 s, polling the condition */
        pthread_mutex_lock(&k.lock);
        got = k.with_fields;
        pthread_mutex_unlock(&k.lock);
        if (got > 0) {
            break;
        }
        rd_kafka_poll(rk, 10);
    }
    rd_kafka_destroy(rk);
    ck_assert_int_gt(k.with_fields, 0);
    ck_assert_int_eq(k.with_fields, k.records); /* every record has both fields */
    ck_assert_str_ne(k.facility, "");
    ck_assert_msg(!strncmp(k.client, "logtest#producer-", 17), "client=%s", k.client);
    ksf_config_destroy(cfg);
}
END_TEST

/* ---- rate-limited lines -------------------------------------------------------------
 */

static int64_t fake_now;

static int64_t
fake_clock(void)
{
    return fake_now;
}

/* Every plain line, kept. */
typedef struct lines {
    int n;
    char text[64][256];
} lines;

static void
lines_sink(void *user, ksf_log_level level, const char *component, const char *message)
{
    (void)level, (void)component;
    lines *l = user;
    if (l->n < 64) {
        snprintf(l->text[l->n], sizeof l->text[0], "%s", message);
    }
    l->n++;
}

KSFT_TEST(test_log_limiter_bursts_and_reports, 10)
{
    ksf_config *cfg;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    lines got = {0};
    ksf_config_set_log(cfg, lines_sink, &got, KSF_LOG_INFO);
    ksfi_logger lg = ksfi_logger_from_config(cfg);
    ksfi_log_limiter l;
    fake_now = 5000;
    ksfi_log_limiter_init(&l, 3, 1000, fake_clock);
    /* 10 lines at once: 3 through, 7 held. */
    int passed = 0;
    for (int i = 0; i < 10; i++) {
        passed += ksfi_logkv_limited(&lg, &l, "bad", KSF_LOG_WARNING, "server", NULL, 0,
                                     "bad message %d", i);
    }
    ck_assert_int_eq(passed, 3);
    ck_assert_int_eq(got.n, 3);
    ck_assert_str_eq(got.text[2], "bad message 2");
    /* Another key has its own budget. */
    ck_assert(ksfi_logkv_limited(&lg, &l, "other", KSF_LOG_WARNING, "server", NULL, 0,
                                 "other"));
    ck_assert_int_eq(got.n, 4);
    /* Still the same window at 999 ms: held. */
    fake_now = 5999;
    ck_assert(!ksfi_logkv_limited(&lg, &l, "bad", KSF_LOG_WARNING, "server", NULL, 0,
                                  "bad message 10"));
    ck_assert_int_eq(got.n, 4);
    /* The next window: the count of the 8 held back, then the line. */
    fake_now = 6000;
    ck_assert(ksfi_logkv_limited(&lg, &l, "bad", KSF_LOG_WARNING, "server", NULL, 0,
                                 "bad message 11"));
    ck_assert_int_eq(got.n, 6);
    ck_assert_str_eq(got.text[4], "bad: 8 similar line(s) suppressed in the last 1000 ms "
                                  "key=bad suppressed=8");
    ck_assert_str_eq(got.text[5], "bad message 11");
    /* Two more through, two held; the flush reports those. */
    for (int i = 0; i < 4; i++) {
        ksfi_logkv_limited(&lg, &l, "bad", KSF_LOG_WARNING, "server", NULL, 0, "more");
    }
    ck_assert_int_eq(got.n, 8);
    fake_now = 6250;
    ksfi_log_limiter_flush(&lg, &l, KSF_LOG_WARNING, "server");
    ck_assert_int_eq(got.n, 9);
    ck_assert_str_eq(got.text[8], "bad: 2 similar line(s) suppressed in the last 250 ms "
                                  "key=bad suppressed=2");
    /* Nothing held: the flush says nothing, and the next window reports nothing. */
    ksfi_log_limiter_flush(&lg, &l, KSF_LOG_WARNING, "server");
    fake_now = 9000;
    ck_assert(
        ksfi_logkv_limited(&lg, &l, "bad", KSF_LOG_WARNING, "server", NULL, 0, "late"));
    ck_assert_int_eq(got.n, 10);
    ck_assert_str_eq(got.text[9], "late");
    /* A filtered-out level is neither logged nor counted. */
    ck_assert(!ksfi_logkv_limited(&lg, &l, "bad", KSF_LOG_DEBUG, "server", NULL, 0, "x"));
    ksfi_log_limiter_flush(&lg, &l, KSF_LOG_WARNING, "server");
    ck_assert_int_eq(got.n, 10);
    ksfi_log_limiter_destroy(&l);
    ksf_config_destroy(cfg);
}
END_TEST

KSFT_MAIN("log")
