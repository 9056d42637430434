/*
 * ksf_config: every key's accepted and refused values with the exact sentence (key,
 * value, expectation), librdkafka pass-through validation, KSF_BROKERS, get/dup, the
 * NestJS client and group ids, and allocation failure at every point.
 */
#include "base/alloc.h"
#include "base/config.h"
#include "codec/wire.h"
#include "settings.h"

#include "suite.h"

#include <check.h>
#include <ksf/ksf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ksf_config *
new_config(void)
{
    ksf_config *cfg = NULL;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ck_assert_ptr_nonnull(cfg);
    return cfg;
}

#define HOSTPORT "; expected host:port[,host:port...] (e.g. 127.0.0.1:9092)"
#define IDCHARS " to 200 printable ASCII characters without spaces"

KSFT_TEST(test_config_defaults, 30)
{
    static const char *const defaults[][2] = {
        {"brokers", "localhost:9092"},
        {"client.id", "nestjs-consumer"},
        {"group.id", "nestjs-group"},
        {"server.workers", "4"},
        {"client.timeout.ms", "30000"},
        {"client.max.in.flight", "10000"},
        {"client.reply.partition", "0"},
        {"client.reply.provider", "group"},
        {"client.wire.dialect", "nestjs"},
        {"message.max.bytes", "1000000"},
        {"trace.headers", "true"},
        {"client.deadline.header", "true"},
        {"server.partition.window", "4096"},
        {"server.partition.window.bytes", "67108864"},
    };
    ksf_config *cfg = new_config();
    ksft_assert_config_all(cfg, defaults, KSFT_NKV(defaults));
    char buf[16];
    ck_assert_int_eq(ksf_config_get(cfg, "postfix.id", buf, sizeof buf), KSF_ENOENT);
    ck_assert_int_eq(ksf_config_get(cfg, "kafka.acks", buf, sizeof buf), KSF_ENOENT);
    ck_assert_int_eq(ksf_config_get(cfg, "nope", buf, sizeof buf), KSF_ENOENT);
    ksf_config_destroy(cfg);
}
END_TEST

KSFT_TEST(test_config_brokers, 30)
{
    ksft_assert_config_accepts("brokers", "127.0.0.1:9092", NULL);
    ksft_assert_config_accepts("brokers", "a:1,b.example.com:65535", NULL);
    ksft_assert_config_accepts("brokers", "[::1]:9092", NULL);
    ksft_assert_config_refuses("brokers", "", KSF_EINVAL,
                               "brokers \"\": empty list" HOSTPORT);
    ksft_assert_config_refuses("brokers", "kafka", KSF_EINVAL,
                               "brokers \"kafka\": missing :port" HOSTPORT);
    ksft_assert_config_refuses("brokers", ":9092", KSF_EINVAL,
                               "brokers \":9092\": empty host" HOSTPORT);
    ksft_assert_config_refuses("brokers", "h:", KSF_EINVAL,
                               "brokers \"h:\": invalid port" HOSTPORT);
    ksft_assert_config_refuses("brokers", "h:9x", KSF_EINVAL,
                               "brokers \"h:9x\": invalid port" HOSTPORT);
    ksft_assert_config_refuses("brokers", "h:123456", KSF_EINVAL,
                               "brokers \"h:123456\": invalid port" HOSTPORT);
    ksft_assert_config_refuses("brokers", "h:0", KSF_EINVAL,
                               "brokers \"h:0\": port out of range 1-65535" HOSTPORT);
    ksft_assert_config_refuses("brokers", "h:65536", KSF_EINVAL,
                               "brokers \"h:65536\": port out of range 1-65535" HOSTPORT);
    ksft_assert_config_refuses("brokers", "a:1,,b:2", KSF_EINVAL,
                               "brokers \"a:1,,b:2\": empty entry" HOSTPORT);
    ksft_assert_config_refuses("brokers", "a:1,", KSF_EINVAL,
                               "brokers \"a:1,\": empty entry" HOSTPORT);
    ksft_assert_config_refuses(
        "brokers", "a b:1", KSF_EINVAL,
        "brokers \"a b:1\": space or non-printable character in host" HOSTPORT);
    ksft_assert_config_refuses(
        "brokers", "h\x01\"x:1", KSF_EINVAL,
        "brokers \"h\\x01\\\"x:1\": space or non-printable character in "
        "host" HOSTPORT);
    ksft_assert_config_refuses(
        "brokers", "h\xc3\xa9:1", KSF_EINVAL,
        "brokers \"h\\xc3\\xa9:1\": space or non-printable character in "
        "host" HOSTPORT);
}
END_TEST

KSFT_TEST(test_config_ids, 30)
{
    ksft_assert_config_accepts("client.id", "hero", NULL);
    ksft_assert_config_accepts("group.id", "hero-consumer", NULL);
    ksft_assert_config_accepts("postfix.id", "-x", NULL);
    ksft_assert_config_accepts("postfix.id", "", NULL);
    ksft_assert_config_refuses("client.id", "", KSF_EINVAL,
                               "client.id \"\": empty; expected 1" IDCHARS);
    ksft_assert_config_refuses(
        "group.id", "a b", KSF_EINVAL,
        "group.id \"a b\": contains a space or non-printable character; "
        "expected 1" IDCHARS);
    ksft_assert_config_refuses(
        "postfix.id", "-\xc3\xa9", KSF_EINVAL,
        "postfix.id \"-\\xc3\\xa9\": contains a space or non-printable "
        "character; expected 0" IDCHARS);
    char longid[202];
    memset(longid, 'a', 201);
    longid[201] = '\0';
    ksft_assert_config_refuses(
        "client.id", longid, KSF_EINVAL,
        "client.id \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "...\": longer than 200 characters; expected 1" IDCHARS);
    longid[200] = '\0';
    ksft_assert_config_accepts("client.id", longid, NULL);
}
END_TEST

#define INSTANCE_EXPECT                                                                  \
    "; expected 1 to 249 of A-Z a-z 0-9 . _ - (Kafka's rule), unique per instance, or "  \
    "\"\" for none"

/* group.instance.id (KIP-345): Kafka's Java rule, "" unsets, and the librdkafka
 * pass-through points at the ksf key, which makes server and reply group static. */
KSFT_TEST(test_config_instance_id, 30)
{
    char buf[300];
    ksf_config *cfg = new_config();
    ck_assert_int_eq(ksf_config_get(cfg, "group.instance.id", buf, sizeof buf),
                     KSF_ENOENT); /* unset by default: dynamic membership */
    ck_assert_ptr_null(cfg->group_instance_id);
    ksf_config_destroy(cfg);
    ksft_assert_config_accepts("group.instance.id", "hero-1", NULL);
    ksft_assert_config_accepts("group.instance.id", "Pod_7.zone-b", NULL);
    char id[251];
    memset(id, 'i', 250);
    id[250] = '\0';
    ksft_assert_config_refuses("group.instance.id", id, KSF_EINVAL,
                               "group.instance.id \"iiiiiiiiiiiiiiiiiiiiiiiiiiiiii"
                               "iiiiiiiiiiiiiiiiiiiiiiiiiiiiii...\": longer than 249 "
                               "characters" INSTANCE_EXPECT);
    id[249] = '\0';
    ksft_assert_config_accepts("group.instance.id", id, NULL);
    ksft_assert_config_refuses(
        "group.instance.id", "hero 1", KSF_EINVAL,
        "group.instance.id \"hero 1\": contains a character other than A-Z "
        "a-z 0-9 . _ -" INSTANCE_EXPECT);
    ksft_assert_config_refuses(
        "group.instance.id", "hero/1", KSF_EINVAL,
        "group.instance.id \"hero/1\": contains a character other than A-Z "
        "a-z 0-9 . _ -" INSTANCE_EXPECT);
    ksft_assert_config_refuses(
        "group.instance.id", "h\xc3\xa9ro", KSF_EINVAL,
        "group.instance.id \"h\\xc3\\xa9ro\": contains a character other "
        "than A-Z a-z 0-9 . _ -" INSTANCE_EXPECT);
    ksft_assert_config_refuses("group.instance.id", "..", KSF_EINVAL,
                               "group.instance.id \"..\": \".\" and \"..\" are not "
                               "allowed" INSTANCE_EXPECT);

    cfg = new_config();
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_set(cfg, "group.instance.id", "hero-1", &ei), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "group.instance.id", "", &ei), KSF_OK);
    ck_assert_int_eq(ksf_config_get(cfg, "group.instance.id", buf, sizeof buf),
                     KSF_ENOENT);
    ck_assert_ptr_null(cfg->group_instance_id);
    static const char *const roles[] = {"kafka.", "consumer.", "producer."};
    for (size_t i = 0; i < 3; i++) {
        char key[64];
        snprintf(key, sizeof key, "%sgroup.instance.id", roles[i]);
        ck_assert_int_eq(ksf_config_set(cfg, key, "hero-1", &ei), KSF_EINVAL);
        snprintf(buf, sizeof buf,
                 "%s: ksf manages this librdkafka property; use \"group.instance.id\" "
                 "(it also makes the client's reply-group membership static)",
                 key);
        ck_assert_str_eq(ei.text, buf);
    }
    ck_assert_uint_eq(cfg->nprops, 0);
    ksf_config_destroy(cfg);
}
END_TEST

/* KSF_INSTANCE_ID: a restarted pod's identity from its environment. */
KSFT_TEST(test_config_env_instance_id, 30)
{
    ksf_config *cfg = new_config();
    ksf_errinfo ei = {0};
    char buf[64];
    unsetenv("KSF_BROKERS");
    setenv("KSF_INSTANCE_ID", "", 1); /* empty: ignored */
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_OK);
    ck_assert_int_eq(ksf_config_get(cfg, "group.instance.id", buf, sizeof buf),
                     KSF_ENOENT);
    setenv("KSF_INSTANCE_ID", "hero-0", 1);
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_OK);
    ksft_assert_config_get(cfg, "group.instance.id", "hero-0");
    setenv("KSF_INSTANCE_ID", "hero 0", 1);
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text, "environment variable KSF_INSTANCE_ID: group.instance.id "
                              "\"hero 0\": contains a character other than A-Z a-z 0-9 "
                              ". _ -" INSTANCE_EXPECT);
    ksft_assert_config_get(cfg, "group.instance.id", "hero-0"); /* unchanged */
    setenv("KSF_BROKERS", "nohost", 1); /* a bad KSF_BROKERS stops before the id */
    setenv("KSF_INSTANCE_ID", "hero-9", 1);
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_EINVAL);
    ksft_assert_config_get(cfg, "group.instance.id", "hero-0");
    unsetenv("KSF_BROKERS");
    unsetenv("KSF_INSTANCE_ID");
    ksf_config_destroy(cfg);
}
END_TEST

KSFT_TEST(test_config_integers, 30)
{
    static const struct {
        const char *key, *min, *max, *below, *above;
    } keys[] = {
        {"server.workers", "0", "1024", "-1", "1025"},
        {"client.timeout.ms", "1", "86400000", "0", "86400001"},
        {"client.max.in.flight", "1", "1000000", "0", "1000001"},
        {"client.reply.partition", "0", "2147483647", "-1", "2147483648"},
        {"message.max.bytes", "1", "1000000000", "0", "1000000001"},
        {"server.partition.window", "4", "1000000", "3", "1000001"},
        {"server.partition.window.bytes", "1024", "1073741824", "1023", "1073741825"},
    };
    static const char *const junk[] = {"",   "abc",  "5x",  " 5",
                                       "+5", "0x10", "1.5", "99999999999999999999"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char want[256];
        ksft_assert_config_accepts(keys[i].key, keys[i].min, NULL);
        ksft_assert_config_accepts(keys[i].key, keys[i].max, NULL);
        if (atoll(keys[i].min) <= 7) { /* leading zeros: read as decimal */
            ksft_assert_config_accepts(keys[i].key, "007", "7");
        } else {
            ksft_assert_config_accepts(keys[i].key, "0001024", "1024");
        }
        const char *bad[] = {keys[i].below, keys[i].above};
        for (size_t b = 0; b < 2 + sizeof junk / sizeof junk[0]; b++) {
            const char *v = b < 2 ? bad[b] : junk[b - 2];
            snprintf(want, sizeof want, "%s \"%s\": expected an integer from %s to %s",
                     keys[i].key, v, keys[i].min, keys[i].max);
            ksft_assert_config_refuses(keys[i].key, v, KSF_EINVAL, want);
        }
    }
}
END_TEST

/*
 * A setting that takes one of a few words: each of @p words (NULL-terminated) is
 * accepted, each of @p bad refused with "<key> "<bad>": expected <expected>", and the
 * last word is kept by a copy, which is returned for the case's own checks.
 */
static ksf_config *
assert_word_setting(const char *key, const char *const *words, const char *const *bad,
                    const char *expected)
{
    size_t last = 0;
    for (size_t i = 0; words[i]; i++) {
        ksft_assert_config_accepts(key, words[i], NULL);
        last = i;
    }
    for (size_t i = 0; bad[i]; i++) {
        char sentence[256];
        snprintf(sentence, sizeof sentence, "%s \"%s\": expected %s", key, bad[i],
                 expected);
        ksft_assert_config_refuses(key, bad[i], KSF_EINVAL, sentence);
    }
    ksf_config *cfg = new_config(), *copy = NULL;
    ck_assert_int_eq(ksf_config_set(cfg, key, words[last], NULL), KSF_OK);
    ck_assert_int_eq(ksf_config_dup(cfg, &copy), KSF_OK);
    ksft_assert_config_get(copy, key, words[last]);
    ksf_config_destroy(cfg);
    return copy;
}

/* The group provider is a client's default (test_config_defaults). */
KSFT_TEST(test_config_reply_provider, 30)
{
    ksf_config *copy = assert_word_setting(
        "client.reply.provider", (const char *const[]){"group", "static", NULL},
        (const char *const[]){"", "Group", "static ", "groups", NULL},
        "\"group\" (a reply-group membership) or \"static\" (client.reply.partition)");
    ck_assert_int_eq(copy->client_reply_provider, KSFI_REPLY_STATIC);
    ksf_config_destroy(copy);
}
END_TEST

KSFT_TEST(test_config_wire_dialect, 30)
{
    ksf_config *copy = assert_word_setting(
        "client.wire.dialect", (const char *const[]){"nestjs", "spring", NULL},
        (const char *const[]){"", "Spring", "nest", NULL},
        "\"nestjs\" (NestJS ClientKafka's headers) or \"spring\" (Spring Kafka's "
        "ReplyingKafkaTemplate's headers)");
    ck_assert_int_eq(copy->client_wire_dialect, KSFI_WIRE_SPRING);
    ksf_config_destroy(copy);
}
END_TEST

/* The two switches of lean requests (docs/configuration.md): "true" or "false" only,
 * as librdkafka spells its booleans. */
KSFT_TEST(test_config_switches, 30)
{
    static const char *const keys[] = {"trace.headers", "client.deadline.header"};
    for (size_t k = 0; k < 2; k++) {
        ksf_config *copy = assert_word_setting(
            keys[k], (const char *const[]){"true", "false", NULL},
            (const char *const[]){"", "1", "0", "yes", "TRUE", "False", "true ", NULL},
            "\"true\" or \"false\"");
        ck_assert(k == 0 ? !copy->trace_headers && copy->client_deadline_header
                         : copy->trace_headers && !copy->client_deadline_header);
        ksf_config_destroy(copy);
    }
    /* The sentence names the key, the value and what is accepted, exactly. */
    ksft_assert_config_refuses("trace.headers", "off", KSF_EINVAL,
                               "trace.headers \"off\": expected \"true\" or \"false\"");
    ksft_assert_config_refuses("client.deadline.header", "no", KSF_EINVAL,
                               "client.deadline.header \"no\": expected \"true\" or "
                               "\"false\"");
    /* A near miss suggests the key. */
    ksft_assert_config_refuses(
        "trace.header", "false", KSF_ENOENT,
        "unknown configuration key \"trace.header\" (did you mean \"trace.headers\"?); "
        "the keys are listed in docs/configuration.md, and librdkafka properties go "
        "under kafka., consumer. or producer.");
}
END_TEST

KSFT_TEST(test_config_unknown_key, 30)
{
    ksft_assert_config_refuses(
        "brokerz", "x", KSF_ENOENT,
        "unknown configuration key \"brokerz\" (did you mean \"brokers\"?); the "
        "keys are listed in docs/configuration.md, and librdkafka properties go "
        "under kafka., consumer. or producer.");
    ksft_assert_config_refuses(
        "server.worker", "2", KSF_ENOENT,
        "unknown configuration key \"server.worker\" (did you mean "
        "\"server.workers\"?); the keys are listed in docs/configuration.md, and "
        "librdkafka properties go under kafka., consumer. or producer.");
    ksft_assert_config_refuses(
        "linger.ms", "5", KSF_ENOENT,
        "unknown configuration key \"linger.ms\"; the keys are listed in "
        "docs/configuration.md, and librdkafka properties go under kafka., "
        "consumer. or producer.");
    ksf_errinfo ei = {0};
    ksf_config *cfg = new_config();
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.", "1", &ei), KSF_ENOENT);
    ck_assert_int_eq(ksf_config_set(cfg, "", "1", &ei), KSF_ENOENT);
    ck_assert_int_eq(ksf_config_set(NULL, "brokers", "a:1", &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text, "ksf_config_set: cfg, key and value are required");
    ck_assert_int_eq(ksf_config_set(cfg, NULL, "a:1", NULL), KSF_EINVAL);
    ck_assert_int_eq(ksf_config_set(cfg, "brokers", NULL, NULL), KSF_EINVAL);
    ksf_config_destroy(cfg);
}
END_TEST

KSFT_TEST(test_config_kafka_passthrough, 30)
{
    ksf_config *cfg = new_config();
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.socket.timeout.ms", "5000", &ei), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "consumer.auto.offset.reset", "earliest", &ei),
                     KSF_OK);
    ck_assert_int_eq(ksf_config_set_kafka(cfg, KSF_KAFKA_PRODUCER, "linger.ms", "5", &ei),
                     KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "producer.linger.ms", "7", &ei), KSF_OK);
    ksft_assert_config_get(cfg, "kafka.socket.timeout.ms", "5000");
    ksft_assert_config_get(cfg, "consumer.auto.offset.reset", "earliest");
    ksft_assert_config_get(cfg, "producer.linger.ms", "7"); /* replaced, not duplicated */
    ck_assert_uint_eq(cfg->nprops, 3);
    char buf[16];
    ck_assert_int_eq(ksf_config_get(cfg, "consumer.linger.ms", buf, sizeof buf),
                     KSF_ENOENT);
    /* unknown to librdkafka */
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.no.such.property", "1", &ei), KSF_ENOENT);
    ck_assert_str_eq(ei.text, "kafka.no.such.property: librdkafka has no such property "
                              "(see librdkafka's CONFIGURATION.md)");
    /* a bad value: librdkafka's own reason */
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.socket.timeout.ms", "soon", &ei),
                     KSF_EINVAL);
    ck_assert_str_eq(ei.text, "kafka.socket.timeout.ms \"soon\": Invalid value for "
                              "configuration property \"socket.timeout.ms\"");
    ck_assert_int_eq(ksf_config_set(cfg, "producer.acks", "maybe", &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "producer.acks \"maybe\": "));
    ksft_assert_config_get(cfg, "kafka.socket.timeout.ms", "5000");
    /* managed properties point at the ksf key */
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.bootstrap.servers", "a:1", &ei),
                     KSF_EINVAL);
    ck_assert_str_eq(ei.text, "kafka.bootstrap.servers: ksf manages this librdkafka "
                              "property; use \"brokers\"");
    ck_assert_int_eq(ksf_config_set(cfg, "consumer.group.id", "g", &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text, "consumer.group.id: ksf manages this librdkafka property; "
                              "use \"group.id\" and \"postfix.id\"");
    ck_assert_int_eq(ksf_config_set_kafka(cfg, KSF_KAFKA_ALL, "client.id", "c", &ei),
                     KSF_EINVAL);
    ck_assert_int_eq(ksf_config_set(cfg, "consumer.enable.auto.commit", "true", &ei),
                     KSF_EINVAL);
    ck_assert_int_eq(ksf_config_set(cfg, "producer.metadata.broker.list", "a:1", &ei),
                     KSF_EINVAL);
    ck_assert_int_eq(ksf_config_set(cfg, "consumer.enable.auto.offset.store", "1", &ei),
                     KSF_EINVAL);
    /* bad roles and arguments */
    ck_assert_int_eq(ksf_config_set_kafka(cfg, (ksf_kafka_role)7, "linger.ms", "1", &ei),
                     KSF_EINVAL);
    ck_assert_str_eq(ei.text,
                     "kafka role 7: expected KSF_KAFKA_ALL, KSF_KAFKA_CONSUMER or "
                     "KSF_KAFKA_PRODUCER");
    ck_assert_int_eq(ksf_config_set_kafka(cfg, KSF_KAFKA_ALL, "", "1", &ei), KSF_EINVAL);
    ck_assert_int_eq(ksf_config_set_kafka(NULL, KSF_KAFKA_ALL, "a", "1", &ei),
                     KSF_EINVAL);
    ck_assert_uint_eq(cfg->nprops, 3);
    ksf_config_destroy(cfg);
}
END_TEST

KSFT_TEST(test_config_get_buffer, 30)
{
    ksf_config *cfg = new_config();
    char buf[8];
    ck_assert_int_eq(ksf_config_get(cfg, "brokers", buf, 5), KSF_EINVAL);
    ck_assert_str_eq(buf, "loca"); /* truncated and terminated */
    ck_assert_int_eq(ksf_config_get(cfg, "brokers", buf, 0), KSF_EINVAL);
    ck_assert_int_eq(ksf_config_get(cfg, "server.workers", buf, 2), KSF_OK);
    ck_assert_str_eq(buf, "4");
    ck_assert_int_eq(ksf_config_get(NULL, "brokers", buf, sizeof buf), KSF_EINVAL);
    ck_assert_int_eq(ksf_config_get(cfg, NULL, buf, sizeof buf), KSF_EINVAL);
    ck_assert_int_eq(ksf_config_get(cfg, "brokers", NULL, 8), KSF_EINVAL);
    ksf_config_destroy(cfg);
}
END_TEST

KSFT_TEST(test_config_env_brokers, 30)
{
    ksf_config *cfg = new_config();
    ksf_errinfo ei = {0};
    unsetenv("KSF_BROKERS");
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_OK);
    ksft_assert_config_get(cfg, "brokers", "localhost:9092");
    setenv("KSF_BROKERS", "", 1); /* empty: ignored */
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_OK);
    ksft_assert_config_get(cfg, "brokers", "localhost:9092");
    setenv("KSF_BROKERS", "127.0.0.1:39092,127.0.0.1:39093", 1);
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_OK);
    ksft_assert_config_get(cfg, "brokers", "127.0.0.1:39092,127.0.0.1:39093");
    ck_assert_int_eq(ksf_config_set(cfg, "brokers", "flag:1", NULL),
                     KSF_OK); /* flags win */
    ksft_assert_config_get(cfg, "brokers", "flag:1");
    setenv("KSF_BROKERS", "nohost", 1);
    ck_assert_int_eq(ksf_config_set_from_env(cfg, &ei), KSF_EINVAL);
    ck_assert_int_eq(ei.code, KSF_EINVAL);
    ck_assert_str_eq(ei.text, "environment variable KSF_BROKERS: brokers \"nohost\": "
                              "missing :port" HOSTPORT);
    ck_assert_int_eq(ksf_config_set_from_env(cfg, NULL), KSF_EINVAL);
    ksft_assert_config_get(cfg, "brokers", "flag:1");
    unsetenv("KSF_BROKERS");
    ksf_config_destroy(cfg);
}
END_TEST

static void
log_sink(void *user, ksf_log_level level, const char *component, const char *message)
{
    (void)user;
    (void)level;
    (void)component;
    (void)message;
}

KSFT_TEST(test_config_dup, 30)
{
    static const char *const kv[][2] = {{"client.id", "hero"},
                                        {"postfix.id", ""},
                                        {"group.instance.id", "hero-3"},
                                        {"server.workers", "9"},
                                        {"consumer.fetch.wait.max.ms", "5"}};
    ksf_config *cfg = ksft_config_from(kv, KSFT_NKV(kv)), *copy = NULL;
    int token;
    ksf_config_set_log(cfg, log_sink, &token, KSF_LOG_DEBUG);
    ck_assert_int_eq(ksf_config_dup(cfg, &copy), KSF_OK);
    ksf_config_set(cfg, "client.id", "other", NULL); /* the copy is independent */
    ksf_config_set(cfg, "consumer.fetch.wait.max.ms", "50", NULL);
    ksf_config_destroy(cfg);
    static const char *const copied[][2] = {
        {"client.id", "hero"},
        {"postfix.id", ""},
        {"group.instance.id", "hero-3"},
        {"server.workers", "9"},
        {"consumer.fetch.wait.max.ms", "5"},
        {"brokers", "localhost:9092"},
    };
    ksft_assert_config_all(copy, copied, KSFT_NKV(copied));
    ck_assert(copy->log_fn == log_sink);
    ck_assert_ptr_eq(copy->log_user, &token);
    ck_assert_int_eq(copy->log_max_level, KSF_LOG_DEBUG);
    ck_assert_int_eq(ksf_config_dup(NULL, &cfg), KSF_EINVAL);
    ck_assert_int_eq(ksf_config_dup(copy, NULL), KSF_EINVAL);
    ck_assert_int_eq(ksf_config_new(NULL), KSF_EINVAL);
    ksf_config_destroy(copy);
    ksf_config_destroy(NULL); /* no-op */
    ksf_config_set_log(NULL, log_sink, NULL, KSF_LOG_ERROR);
}
END_TEST

static void
assert_names(ksf_config *cfg, const char *server_client, const char *server_group,
             const char *client_client, const char *client_group)
{
    char *s[4] = {ksfi_config_client_id(cfg, KSFI_SERVER_POSTFIX),
                  ksfi_config_group_id(cfg, KSFI_SERVER_POSTFIX),
                  ksfi_config_client_id(cfg, KSFI_CLIENT_POSTFIX),
                  ksfi_config_group_id(cfg, KSFI_CLIENT_POSTFIX)};
    ck_assert_str_eq(s[0], server_client);
    ck_assert_str_eq(s[1], server_group);
    ck_assert_str_eq(s[2], client_client);
    ck_assert_str_eq(s[3], client_group);
    for (int i = 0; i < 4; i++) {
        ksfi_free(s[i]);
    }
}

KSFT_TEST(test_config_nestjs_names, 30)
{
    ksf_config *cfg = new_config();
    /* Unset, a server's group is its program's (unrelated services stay apart); a
     * client's is NestJS's default. */
    assert_names(cfg, "nestjs-consumer-server", "test_config-server",
                 "nestjs-consumer-client", "nestjs-group-client");
    ksf_config_set(cfg, "group.id", "nestjs-group", NULL); /* share it with NestJS */
    assert_names(cfg, "nestjs-consumer-server", "nestjs-group-server",
                 "nestjs-consumer-client", "nestjs-group-client");
    ksf_config_set(cfg, "client.id", "hero", NULL);
    ksf_config_set(cfg, "group.id", "hero-consumer", NULL);
    assert_names(cfg, "hero-server", "hero-consumer-server", "hero-client",
                 "hero-consumer-client");
    ksf_config_set(cfg, "postfix.id", "-v2", NULL); /* the same suffix on both ids */
    assert_names(cfg, "hero-v2", "hero-consumer-v2", "hero-v2", "hero-consumer-v2");
    ksf_config_set(cfg, "postfix.id", "", NULL); /* postfixId: '' means none */
    assert_names(cfg, "hero", "hero-consumer", "hero", "hero-consumer");
    ksf_config_destroy(cfg);
}
END_TEST

/* ---- allocation failure at every point
 * ------------------------------------------------- */

typedef ksf_err (*op_fn)(ksf_config *cfg, ksf_config **made);

/*
 * Run @p op with allocation number 1, 2, ... failing until it runs without reaching
 * the failure: each failing run must return KSF_ENOMEM, and (under valgrind) leak
 * nothing. Returns how many failure points were exercised.
 */
static unsigned long
sweep(op_fn op, bool sticky)
{
    for (unsigned long nth = 1; nth < 1000; nth++) {
        ksf_config *cfg = new_config(), *made = NULL;
        ksf_config_set(cfg, "kafka.linger.ms", "1", NULL);
        ksf_config_set(cfg, "postfix.id", "-p", NULL);
        ksfi_alloc_fail_after(nth, sticky);
        ksf_err e = op(cfg, &made);
        unsigned long used = ksfi_alloc_count();
        ksfi_alloc_fail_after(0, 0);
        ksf_config_destroy(made);
        ksf_config_destroy(cfg);
        if (used < nth) {
            ck_assert_int_eq(e, KSF_OK); /* no failure injected: success */
            return nth - 1;
        }
        ck_assert_msg(e == KSF_ENOMEM, "failure %lu returned %d", nth, e);
    }
    ck_abort_msg("no end to the allocations");
    return 0;
}

static ksf_err
op_new(ksf_config *cfg, ksf_config **made)
{
    (void)cfg;
    return ksf_config_new(made);
}

static ksf_err
op_dup(ksf_config *cfg, ksf_config **made)
{
    return ksf_config_dup(cfg, made);
}

static ksf_err
op_set_all(ksf_config *cfg, ksf_config **made)
{
    static const char *const kv[][2] = {
        {"brokers", "a:1"},       {"client.id", "c"},
        {"group.id", "g"},        {"postfix.id", ""},
        {"server.workers", "2"},  {"kafka.linger.ms", "2"},
        {"producer.acks", "all"}, {"consumer.fetch.wait.max.ms", "5"}};
    (void)made;
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        ksf_errinfo ei = {0};
        char before[64];
        ksf_err had = ksf_config_get(cfg, kv[i][0], before, sizeof before);
        ksf_err e = ksf_config_set(cfg, kv[i][0], kv[i][1], &ei);
        if (e) {
            ck_assert_int_eq(ei.code, KSF_ENOMEM);
            ck_assert_ptr_nonnull(strstr(ei.text, "out of memory setting \""));
            char after[64];
            ck_assert_int_eq(ksf_config_get(cfg, kv[i][0], after, sizeof after), had);
            if (had == KSF_OK) {
                ck_assert_str_eq(after, before); /* the old value survives */
            }
            return e;
        }
        ksft_assert_config_get(cfg, kv[i][0], kv[i][1]);
    }
    return KSF_OK;
}

static ksf_err
op_names(ksf_config *cfg, ksf_config **made)
{
    (void)made;
    char *a = ksfi_config_client_id(cfg, KSFI_SERVER_POSTFIX);
    char *b = ksfi_config_group_id(cfg, KSFI_CLIENT_POSTFIX);
    ksf_err e = a && b ? KSF_OK : KSF_ENOMEM;
    ksfi_free(a);
    ksfi_free(b);
    return e;
}

static ksf_err
op_env(ksf_config *cfg, ksf_config **made)
{
    (void)made;
    setenv("KSF_BROKERS", "e:1", 1);
    ksf_err e = ksf_config_set_from_env(cfg, NULL);
    unsetenv("KSF_BROKERS");
    return e;
}

KSFT_TEST(test_config_alloc_failures, 30)
{
    ck_assert_uint_eq(sweep(op_new, false), 4);
    ck_assert_uint_eq(sweep(op_new, true), 4);
    ck_assert_uint_ge(sweep(op_dup, false), 7);
    ck_assert_uint_ge(sweep(op_dup, true), 7);
    ck_assert_uint_ge(sweep(op_set_all, false), 8);
    ck_assert_uint_ge(sweep(op_set_all, true), 8);
    ck_assert_uint_eq(sweep(op_names, false), 2);
    ck_assert_uint_eq(sweep(op_env, false), 1);
}
END_TEST

KSFT_MAIN("config")
