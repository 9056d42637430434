#include "mock_broker.h"
#include "settings.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ksft_broker {
    rd_kafka_t *rk; /* the mock cluster lives inside this handle's threads */
    rd_kafka_mock_cluster_t *mcluster;
    char address[64];
};

ksft_broker *
ksft_broker_start(void)
{
    char err[256];
    ksft_broker *b = calloc(1, sizeof *b);
    ck_assert_ptr_nonnull(b);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The handle only hosts the cluster; keep it quiet. */
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(b->rk != NULL, "mock host handle: %s", err);
    b->mcluster = rd_kafka_mock_cluster_new(b->rk, 1);
    ck_assert_msg(b->mcluster != NULL, "rd_kafka_mock_cluster_new failed");
    snprintf(b->address, sizeof b->address, "%s",
             rd_kafka_mock_cluster_bootstraps(b->mcluster));
    return b;
}

void
ksft_broker_stop(ksft_broker *b)
{
    if (!b) {
        return;
    }
    rd_kafka_mock_cluster_destroy(b->mcluster);
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
    return b->mcluster;
}

void
ksft_broker_create_topic(ksft_broker *b, const char *topic, int partitions)
{
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(b->mcluster, topic, partitions, 1);
    ck_assert_msg(e == RD_KAFKA_RESP_ERR_NO_ERROR, "create topic %s: %s", topic,
                  rd_kafka_err2str(e));
}

void
ksft_broker_set_down(ksft_broker *b, bool down)
{
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
                                 {"consumer.fetch.wait.max.ms", "5"},
                                 {"consumer.session.timeout.ms", "6000"},
                                 {"consumer.heartbeat.interval.ms", "500"}};
    ksf_config *cfg = ksft_config_from(kv, KSFT_NKV(kv));
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
