#include "broker.h"
#include "real_kafka.h"
#include "settings.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct ksft_broker {
    /* The mock cluster lives inside this handle's threads; on real Kafka it is the
     * admin handle (metadata, topic creation and deletion). */
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mcluster; /* NULL on real Kafka */
    char address[512];
};

const char *
ksft_real_kafka(void)
{
    const char *v = getenv("KSF_TEST_KAFKA");
    return v && *v ? v : NULL;
}

static rd_kafka_t *
quiet_handle(const char *bootstrap)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    if (bootstrap) {
        ck_assert_msg(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err,
                                        sizeof err) == RD_KAFKA_CONF_OK,
                      "KSF_TEST_KAFKA \"%s\": %s", bootstrap, err);
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(rk != NULL, "test broker handle: %s", err);
    return rk;
}

ksft_broker *
ksft_broker_start(void)
{
    ksft_broker *b = calloc(1, sizeof *b);
    ck_assert_ptr_nonnull(b);
    const char *real = ksft_real_kafka();
    b->rk = quiet_handle(real);
    if (real) {
        snprintf(b->address, sizeof b->address, "%s", real);
        ksft_kafka_delete_user_topics(b->rk);
        return b;
    }
    b->mcluster = rd_kafka_mock_cluster_new(b->rk, 1);
    ck_assert_msg(b->mcluster != NULL, "rd_kafka_mock_cluster_new failed");
    snprintf(b->address, sizeof b->address, "%s",
             rd_kafka_mock_cluster_bootstraps(b->mcluster));
    return b;
}

bool
ksft_broker_is_mock(const ksft_broker *b)
{
    return b->mcluster != NULL;
}

void
ksft_broker_stop(ksft_broker *b)
{
    if (!b) {
        return;
    }
    if (b->mcluster) {
        rd_kafka_mock_cluster_destroy(b->mcluster);
    }
    rd_kafka_destroy(b->rk);
    free(b);
}

const char *
ksft_broker_address(const ksft_broker *b)
{
    return b->address;
}

rd_kafka_mock_cluster_t *
ksft_broker_mock(ksft_broker *b)
{
    ck_assert_msg(b->mcluster != NULL,
                  "this case needs the mock's fault injection; on real Kafka it must "
                  "start with KSFT_NEEDS_MOCK(why)");
    return b->mcluster;
}

void
ksft_broker_create_topic(ksft_broker *b, const char *topic, int partitions)
{
    if (!b->mcluster) {
        ksft_kafka_create_topic(b->rk, topic, partitions);
        return;
    }
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(b->mcluster, topic, partitions, 1);
    ck_assert_msg(e == RD_KAFKA_RESP_ERR_NO_ERROR, "create topic %s: %s", topic,
                  rd_kafka_err2str(e));
}

void
ksft_broker_set_down(ksft_broker *b, bool down)
{
    (void)ksft_broker_mock(b);
    rd_kafka_resp_err_t e = down ? rd_kafka_mock_broker_set_down(b->mcluster, 1)
                                 : rd_kafka_mock_broker_set_up(b->mcluster, 1);
    ck_assert_int_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR);
}

ksf_config *
ksft_config(const ksft_broker *b)
{
    /* group.id: the tests name the server group "nestjs-group-server" (a server's
     * default is now its program's name, see docs/design.md). */
    const char *const kv[][2] = {{"brokers", b->address},
                                 {"group.id", "nestjs-group"},
                                 {"consumer.session.timeout.ms", "6000"},
                                 {"consumer.heartbeat.interval.ms", "500"}};
    ksf_config *cfg = ksft_config_from(kv, KSFT_NKV(kv));
    if (b->mcluster) {
        ksft_config_set_all(
            cfg, (const char *const[][2]){{"consumer.fetch.wait.max.ms", "5"}}, 1);
    }
    /* tests/meson.build runs some suites again with the handlers on the consumer
     * thread (server.workers=0); a test that sets its own count still wins. */
    const char *workers = getenv("KSFT_SERVER_WORKERS");
    if (workers) {
        ksft_config_set_all(cfg, (const char *const[][2]){{"server.workers", workers}},
                            1);
    }
    ksf_config_set_log(cfg, ksf_log_stderr, NULL, KSF_LOG_WARNING);
    return cfg;
}

bool
ksft_under_valgrind(void)
{
    /* valgrind preloads its vgpreload_*.so into the program it runs. */
    const char *preload = getenv("LD_PRELOAD");
    return preload && strstr(preload, "vgpreload");
}

int
ksft_scaled_ms(int ms)
{
    const char *mult = getenv("CK_TIMEOUT_MULTIPLIER");
    long scale = ksft_under_valgrind() ? 4 : 1;
    long m = mult ? strtol(mult, NULL, 10) : 1;
    if (m > 1 && m <= 10) {
        scale *= m;
    }
    return (int)((long)ms * scale > INT32_MAX ? INT32_MAX : (long)ms * scale);
}

int64_t
ksft_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
