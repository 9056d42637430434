/*
 * Broker failover on real Apache Kafka, the counterpart of test_faults' mock-only
 * outages: a ksf echo server and client under load (10,000 requests, 64 in flight)
 * while a broker process dies.
 * - leader_killed: a 3-node cluster (replication 3, min.insync.replicas 2); the leader
 *   of the request topic's partition 0 is killed with SIGKILL mid-load.
 * - single_restart: a 1-node cluster is killed with SIGKILL mid-load and restarted on
 *   its data.
 * Each asserts that every request got exactly one callback, a reply carrying its own
 * value (zero lost, zero duplicates delivered), and prints the longest stall (the
 * longest time in which no request was answered). The cluster is this test's own
 * (`tools/dev kafka`, KSF_DEV), so the case runs only in the real-Kafka stage
 * (KSF_TEST_KAFKA set); on the mock it says it is skipped.
 */
#include "broker.h"
#include "raw_kafka.h"
#include "real_kafka.h"
#include "service.h"
#include "suite.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define PATTERN "fo.echo"
#define REQUESTS 10000
#define WINDOW 64
#define KILL_AT 2000             /* answered requests before the broker dies */
#define REQUEST_TIMEOUT_MS 90000 /* longer than any outage here: none may time out */

/* ---- the cluster: `tools/dev kafka` as a child process ----------------------------- */

typedef struct cluster {
    pid_t pid;
    char state_dir[64];
    char address[512];
    rd_kafka_t *admin;
} cluster;

static void
cluster_start(cluster *c, const char *nodes)
{
    const char *dev = getenv("KSF_DEV");
    ck_assert_msg(dev != NULL, "KSF_DEV (tools/dev) is not set");
    snprintf(c->state_dir, sizeof c->state_dir, "/tmp/ksft-failover.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(c->state_dir));
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    c->pid = fork();
    ck_assert_int_ge(c->pid, 0);
    if (c->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* the tool then stops its nodes */
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(dev, dev, "kafka", "--nodes", nodes, "--state-dir", c->state_dir, "--topic",
              PATTERN ":4", "--topic", PATTERN ".reply:4", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_msg(fgets(c->address, sizeof c->address, f) != NULL,
                  "tools/dev kafka --nodes %s printed no address (its stderr says why)",
                  nodes);
    fclose(f);
    c->address[strcspn(c->address, "\n")] = '\0';
    ck_assert_msg(!strncmp(c->address, "127.0.0.1:", 10), "tools/dev kafka said \"%s\"",
                  c->address);
    static const char *const kv[][2] = {{"log_level", "0"}};
    c->admin = ksft_rd_new(RD_KAFKA_PRODUCER, ksft_rd_conf(c->address, kv, 1), "admin");
}

static void
cluster_stop(cluster *c)
{
    int status = 0;
    rd_kafka_destroy(c->admin);
    kill(c->pid, SIGTERM);
    ck_assert_int_eq(waitpid(c->pid, &status, 0), c->pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "tools/dev kafka exit status %d", status);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", c->state_dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* The node that leads @p topic's partition @p partition. */
static int
leader_of(cluster *c, const char *topic, int partition)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c->admin, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    ck_assert_int_eq(rd_kafka_metadata(c->admin, 0, rkt, &md, 10000), 0);
    ck_assert_int_eq(md->topic_cnt, 1);
    ck_assert_int_gt(md->topics[0].partition_cnt, partition);
    int leader = md->topics[0].partitions[partition].leader;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    ck_assert_int_ge(leader, 1);
    return leader;
}

static void
kill_node(cluster *c, int node)
{
    char path[160];
    snprintf(path, sizeof path, "%s/node-%d.pid", c->state_dir, node);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: no pid file", path);
    long pid = 0;
    ck_assert_int_eq(fscanf(f, "%ld", &pid), 1);
    fclose(f);
    ck_assert_int_eq(kill((pid_t)pid, SIGKILL), 0);
}

static void
restart_node(cluster *c, int node)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "%s/node-%d.restart --wait", c->state_dir, node);
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
}

/* ---- the load ---------------------------------------------------------------------- */

typedef struct load {
    ksft_tally tally;
    ksf_client *cli;
    int64_t last_progress_ms; /* when `finished` last grew */
    size_t last_finished;
    int64_t longest_stall_ms;
} load;

/* Note progress; called often from the sending loop and the final wait. */
static void
watch(load *l)
{
    size_t f = ksft_tally_finished(&l->tally);
    int64_t now = ksft_now_ms();
    if (f != l->last_finished) {
        l->last_finished = f;
        l->last_progress_ms = now;
    } else if (f < l->tally.n && now - l->last_progress_ms > l->longest_stall_ms) {
        l->longest_stall_ms = now - l->last_progress_ms;
    }
}

/* Send REQUESTS with WINDOW in flight; at KILL_AT answers call @p fault once. */
static void
run_load(load *l, void (*fault)(void *), void *arg)
{
    bool faulted = false;
    l->last_progress_ms = ksft_now_ms();
    for (size_t i = 0; i < REQUESTS; i++) {
        while (i - ksft_tally_finished(&l->tally) >= WINDOW) {
            watch(l);
            ksft_sleep_ms(1);
        }
        if (!faulted && ksft_tally_finished(&l->tally) >= KILL_AT) {
            faulted = true;
            fault(arg);
        }
        ck_assert_int_eq(
            ksft_tally_send(&l->tally, l->cli, PATTERN, i, REQUEST_TIMEOUT_MS, 60000),
            KSF_OK);
        watch(l);
    }
    ksft_deadline until = ksft_deadline_in(REQUEST_TIMEOUT_MS + 10000);
    while (ksft_tally_finished(&l->tally) < REQUESTS && ksft_deadline_wait(&until)) {
        watch(l);
        ksft_sleep_ms(1);
    }
    ck_assert(faulted);
}

static void
assert_exact(load *l, const char *what)
{
    ksft_tally *t = &l->tally;
    printf("%s: %u of %d answered, %u timed out, %u other errors, %u duplicates "
           "delivered, %u wrong values; longest stall %lld ms\n",
           what, atomic_load(&t->ok), REQUESTS, atomic_load(&t->timedout),
           atomic_load(&t->kafka) + atomic_load(&t->remote) + atomic_load(&t->other) +
               atomic_load(&t->closed),
           atomic_load(&t->extra_calls), atomic_load(&t->wrong_value),
           (long long)l->longest_stall_ms);
    fflush(stdout);
    ck_assert_uint_eq(ksft_tally_finished(t), REQUESTS);
    ck_assert_uint_eq(atomic_load(&t->ok), REQUESTS);
    ck_assert_uint_eq(atomic_load(&t->extra_calls), 0);
    ck_assert_uint_eq(atomic_load(&t->wrong_value), 0);
    for (size_t i = 0; i < REQUESTS; i++) {
        ck_assert_uint_eq(atomic_load(&t->calls[i]), 1);
    }
}

static ksf_config *
failover_config(const cluster *c)
{
    const char *const kv[][2] = {{"brokers", c->address},
                                 {"consumer.session.timeout.ms", "6000"},
                                 {"consumer.heartbeat.interval.ms", "500"}};
    ksf_config *cfg = ksft_config_from(kv, KSFT_NKV(kv));
    ksf_config_set_log(cfg, ksf_log_stderr, NULL, KSF_LOG_ERROR);
    return cfg;
}

/* A cluster of @p nodes nodes, server and client on it, the load with @p fault (given
 * the cluster) at KILL_AT, exact checks; the cluster stops after. */
static void
failover_case(const char *nodes, const char *what, void (*fault)(void *))
{
    cluster cl = {0}, *c = &cl;
    cluster_start(c, nodes);
    ksf_config *cfg = failover_config(c);
    static const char *const patterns[] = {PATTERN, NULL};
    ksft_service svc = {0};
    ksft_service_start(&svc, ksft_echo_server(cfg, patterns), 60000);
    load l = {0};
    ksft_tally_init(&l.tally, REQUESTS);
    l.cli = ksft_client(cfg);
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_client_subscribe_to_response_of(l.cli, PATTERN, &ei) == KSF_OK,
                  "%s", ei.text);
    ck_assert_msg(ksf_client_connect(l.cli, 60000, &ei) == KSF_OK, "%s", ei.text);
    run_load(&l, fault, c);
    assert_exact(&l, what);
    ksf_client_destroy(l.cli);
    ksft_tally_free(&l.tally);
    ksft_service_stop(&svc);
    ksf_config_destroy(cfg);
    cluster_stop(c);
}

/* ---- cases ------------------------------------------------------------------------- */

static void
kill_request_leader(void *arg)
{
    cluster *c = arg;
    int leader = leader_of(c, PATTERN, 0);
    printf("killing node %d, the leader of " PATTERN " [0]\n", leader);
    fflush(stdout);
    kill_node(c, leader);
}

KSFT_TEST(test_failover_leader_killed, 240)
{
    KSFT_NEEDS_REAL_KAFKA("a 3-node cluster whose nodes can be killed");
    failover_case("3", "3 nodes, leader killed", kill_request_leader);
}
END_TEST

static void
kill_and_restart_single(void *arg)
{
    cluster *c = arg;
    printf("killing the only node, then restarting it on its data\n");
    fflush(stdout);
    kill_node(c, 1);
    restart_node(c, 1);
}

KSFT_TEST(test_failover_single_restart, 240)
{
    KSFT_NEEDS_REAL_KAFKA("a broker that can be killed and restarted on its data");
    failover_case("1", "1 node, killed and restarted", kill_and_restart_single);
}
END_TEST

KSFT_MAIN("failover")
