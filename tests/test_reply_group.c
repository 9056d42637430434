/*
 * The group-managed reply provider against the mock broker, with a ksf server
 * answering PATTERN by echoing the request and the kafka_replyPartition it carried.
 * The storm case is the zero-loss proof (docs/reply-partitions.md takes its table):
 * clients join, leave cleanly and vanish (a SIGKILLed child process) while coordinator
 * errors are injected, and every request of the surviving clients must get exactly one
 * reply on a reply partition that never moves.
 */
#include "broker.h"

#include "service.h"
#include "suite.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PATTERN "rg.work"
#define REPLY_TOPIC PATTERN ".reply"
#define GROUP "nestjs-group-client"
#define MAX_REQ 8000   /* per client; the storm sends about 2000 */
#define WINDOW 32      /* requests in flight per client */
#define SEND_GAP_MS 15 /* pacing between sends: ~60 requests/s per client */
#define API_JOIN_GROUP 11
#define API_HEARTBEAT 12

/* ---- the responder: a ksf server -------------------------------------------------- */

static ksf_err
echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    *reply = json_pack("{s:O?, s:i}", "d", data, "p", (int)ksf_ctx_reply_partition(ctx));
    return *reply ? KSF_OK : KSF_ENOMEM;
}

/* An echo server on @p b running on @p s's thread, ready. */
static void
server_start(ksft_service *s, ksft_broker *b)
{
    ksf_config *cfg = ksft_config(b);
    ksf_server *srv = ksft_server(cfg);
    ksf_config_destroy(cfg);
    ck_assert_int_eq(ksf_server_on_message(srv, PATTERN, echo, NULL, NULL), KSF_OK);
    ksft_service_start(s, srv, 20000);
}

/* ---- a sending client ------------------------------------------------------------- */

typedef struct sender sender;

typedef struct req {
    sender *s;
    uint32_t seq;
    int64_t sent_ms; /* when ksf_client_send was called */
} req;

struct sender {
    char name[8];
    ksf_client *cli;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    atomic_int generation; /* the latest reply-group generation its membership logged */
    atomic_uint coordinator_errors; /* injected errors its membership received */
    atomic_uint sent, ok, failed, bad_value, enopart, send_errors, partition_changes;
    atomic_int partition; /* advertised partition seen in replies; -1 before */
    atomic_llong first_ok_ms, max_enopart_ms, first_enopart_ms;
    atomic_uchar seen[MAX_REQ];
    atomic_uchar refused[MAX_REQ]; /* failed with KSF_ENOPARTITION: never produced */
    req reqs[MAX_REQ];
    pthread_mutex_t m; /* guards the texts */
    char enopart_text[512], error_text[512];
};

/* Log sink: warnings to stderr; the membership's "in generation N" lines tracked. */
static void
sink(void *user, ksf_log_level level, const char *component, const char *message)
{
    sender *s = user;
    const char *g = strstr(message, " in generation ");
    if (!strcmp(component, "group") && g) {
        atomic_store(&s->generation, atoi(g + strlen(" in generation ")));
    }
    if (!strcmp(component, "group") &&
        (strstr(message, "Heartbeat answered NOT_COORDINATOR") ||
         strstr(message, "JoinGroup answered REBALANCE_IN_PROGRESS"))) {
        atomic_fetch_add(&s->coordinator_errors, 1);
    }
    if (level <= KSF_LOG_WARNING) {
        fprintf(stderr, "%s: ksf %s %s: %s\n", s->name, ksf_log_level_name(level),
                component, message);
    }
}

static void note_failure(sender *s, ksf_err e, const char *text, int64_t sent_ms);

static void
on_reply(const ksf_reply *r, void *user)
{
    req *q = user;
    sender *s = q->s;
    const json_t *seq =
        r->value ? json_object_get(json_object_get(r->value, "d"), "s") : NULL;
    const json_t *p = r->value ? json_object_get(r->value, "p") : NULL;
    if (r->err == KSF_ENOPARTITION) {
        /* send never waits: a member with no reply partition learns it here. */
        atomic_store(&s->refused[q->seq], 1);
        note_failure(s, r->err, r->text, q->sent_ms);
        return;
    }
    if (r->err != KSF_OK) {
        atomic_fetch_add(&s->failed, 1);
        pthread_mutex_lock(&s->m);
        snprintf(s->error_text, sizeof s->error_text, "%s: %s", ksf_strerror(r->err),
                 r->text ? r->text : "");
        pthread_mutex_unlock(&s->m);
        return;
    }
    if (!json_is_integer(seq) || json_integer_value(seq) != q->seq ||
        !json_is_integer(p)) {
        atomic_fetch_add(&s->bad_value, 1);
        return;
    }
    atomic_fetch_add(&s->seen[q->seq], 1);
    atomic_fetch_add(&s->ok, 1);
    long long zero = 0;
    atomic_compare_exchange_strong(&s->first_ok_ms, &zero, ksft_now_ms());
    int want = -1, got = (int)json_integer_value(p);
    if (!atomic_compare_exchange_strong(&s->partition, &want, got) && want != got) {
        atomic_fetch_add(&s->partition_changes, 1);
    }
}

static uint32_t
in_flight(sender *s)
{
    ksf_client_stats st;
    ksf_client_get_stats(s->cli, &st);
    return st.in_flight;
}

static void
note_failure(sender *s, ksf_err e, const char *text, int64_t sent_ms)
{
    int64_t took_ms = ksft_now_ms() - sent_ms;
    pthread_mutex_lock(&s->m);
    if (e == KSF_ENOPARTITION) {
        atomic_fetch_add(&s->enopart, 1);
        snprintf(s->enopart_text, sizeof s->enopart_text, "%s", text);
        /* Those sent before the first answer waited for the group's first assignment
         * (together: send does not wait, the sender thread does); the rest must be
         * fast. */
        long long zero = 0;
        atomic_compare_exchange_strong(&s->first_enopart_ms, &zero, ksft_now_ms());
        if (sent_ms > atomic_load(&s->first_enopart_ms) &&
            took_ms > atomic_load(&s->max_enopart_ms)) {
            atomic_store(&s->max_enopart_ms, took_ms);
        }
    } else {
        atomic_fetch_add(&s->send_errors, 1);
        snprintf(s->error_text, sizeof s->error_text, "send: %s: %s", ksf_strerror(e),
                 text);
    }
    pthread_mutex_unlock(&s->m);
}

static void *
sender_main(void *arg)
{
    sender *s = arg;
    while (!atomic_load(&s->stop)) {
        uint32_t seq = atomic_load(&s->sent);
        if (seq >= MAX_REQ) {
            break;
        }
        if (in_flight(s) >= WINDOW) {
            ksft_sleep_ms(2);
            continue;
        }
        s->reqs[seq] = (req){s, seq, ksft_now_ms()};
        json_t *data = json_pack("{s:s, s:i}", "c", s->name, "s", (int)seq);
        ksf_errinfo ei = {0};
        int64_t t0 = ksft_now_ms();
        ksf_err e =
            ksf_client_send(s->cli, PATTERN, data, NULL, on_reply, &s->reqs[seq], &ei);
        json_decref(data);
        if (e == KSF_OK) {
            atomic_fetch_add(&s->sent, 1);
        } else {
            note_failure(s, e, ei.text, t0);
        }
        ksft_sleep_ms(SEND_GAP_MS);
    }
    return NULL;
}

static sender *
sender_new(ksft_broker *b, const char *name)
{
    sender *s = calloc(1, sizeof *s);
    ck_assert_ptr_nonnull(s);
    snprintf(s->name, sizeof s->name, "%s", name);
    atomic_store(&s->partition, -1);
    atomic_store(&s->generation, -1);
    pthread_mutex_init(&s->m, NULL);
    ksf_errinfo ei = {0};
    ksf_config *cfg = ksft_config(b);
    ksf_config_set_log(cfg, sink, s, KSF_LOG_INFO);
    ck_assert_msg(ksf_client_new(&s->cli, cfg, &ei) == KSF_OK, "%s", ei.text);
    ksf_config_destroy(cfg);
    return s;
}

static void
sender_start(sender *s)
{
    ck_assert_int_eq(pthread_create(&s->thread, NULL, sender_main, s), 0);
    s->started = true;
}

/* Stop sending and wait until every request sent has had its callback. */
static void
sender_quiesce(sender *s)
{
    atomic_store(&s->stop, true);
    if (s->started) {
        pthread_join(s->thread, NULL);
        s->started = false;
    }
    ksft_deadline until = ksft_deadline_in(40000);
    while (s->cli && in_flight(s) > 0 && ksft_deadline_wait(&until)) {
    }
    ck_assert_msg(!s->cli || in_flight(s) == 0, "%s: %u requests still in flight",
                  s->name, in_flight(s));
}

static void
sender_free(sender *s)
{
    ksf_client_destroy(s->cli);
    pthread_mutex_destroy(&s->m);
    free(s);
}

/* Wait until @p s has @p n more successful replies than now; false after @p ms. */
static bool
wait_ok(sender *s, unsigned n, int ms)
{
    unsigned want = atomic_load(&s->ok) + n;
    ksft_deadline until = ksft_deadline_in(ms);
    while (atomic_load(&s->ok) < want && ksft_deadline_wait(&until)) {
    }
    return atomic_load(&s->ok) >= want;
}

/* Wait until every sender in @p v logged a generation above @p gen. */
static bool
wait_generation(sender *const *v, size_t n, int gen, int ms)
{
    ksft_deadline until = ksft_deadline_in(ms);
    for (size_t i = 0; i < n; i++) {
        while (atomic_load(&v[i]->generation) <= gen && ksft_deadline_wait(&until)) {
        }
        if (atomic_load(&v[i]->generation) <= gen) {
            return false;
        }
    }
    return true;
}

/* ---- the client that vanishes: a child process ------------------------------------ */

typedef struct child {
    pid_t pid;
    int addr_w;   /* parent writes the broker address here to start it */
    int status_r; /* the child writes one byte here at its first reply */
} child;

static void
child_reply(const ksf_reply *r, void *user)
{
    static atomic_bool told;
    if (r->err == KSF_OK && !atomic_exchange(&told, true)) {
        ssize_t w = write(*(int *)user, "D", 1);
        (void)w;
    }
}

/* Runs in the child: a client in the same reply group sending until it is killed (its
 * own requests are not counted). Bounded: it ends on its own after 150 s, or when the
 * parent goes away. */
static void
child_main(int addr_r, int status_w)
{
    char addr[128] = "";
    size_t n = 0;
    pid_t parent = getppid();
    while (n < sizeof addr - 1 && read(addr_r, addr + n, 1) == 1 && addr[n] != '\n') {
        n++;
    }
    addr[n] = '\0';
    ksf_config *cfg = NULL;
    ksf_client *cli = NULL;
    if (n == 0 || ksf_config_new(&cfg) != KSF_OK ||
        ksf_config_set(cfg, "brokers", addr, NULL) != KSF_OK ||
        ksf_config_set(cfg, "consumer.fetch.wait.max.ms", "5", NULL) != KSF_OK ||
        ksf_config_set(cfg, "consumer.session.timeout.ms", "6000", NULL) != KSF_OK ||
        ksf_config_set(cfg, "consumer.heartbeat.interval.ms", "500", NULL) != KSF_OK ||
        ksf_client_new(&cli, cfg, NULL) != KSF_OK) {
        _exit(1);
    }
    int64_t until = ksft_now_ms() + 150000; /* paced by SEND_GAP_MS below */
    for (int i = 0; ksft_now_ms() < until && getppid() == parent; i++) {
        json_t *data = json_pack("{s:s, s:i}", "c", "D", "s", i);
        ksf_client_send(cli, PATTERN, data, NULL, child_reply, &status_w, NULL);
        json_decref(data);
        ksft_sleep_ms(SEND_GAP_MS);
    }
    _exit(0);
}

/* Fork before this process has any thread, so the child starts clean. */
static child
child_fork(void)
{
    int a[2], st[2];
    ck_assert_int_eq(pipe(a), 0);
    ck_assert_int_eq(pipe(st), 0);
    child c = {.pid = fork(), .addr_w = a[1], .status_r = st[0]};
    ck_assert_int_ge(c.pid, 0);
    if (c.pid == 0) {
        close(a[1]);
        close(st[0]);
        child_main(a[0], st[1]);
    }
    close(a[0]);
    close(st[1]);
    return c;
}

static void
child_release(child *c, const char *address)
{
    char line[160];
    int n = snprintf(line, sizeof line, "%s\n", address);
    ck_assert_int_eq(write(c->addr_w, line, (size_t)n), n);
}

/* Wait for the child's first reply byte; false after @p ms. */
static bool
child_wait_reply(child *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    fd_set fds;
    FD_ZERO(&fds);
    FD_SET(c->status_r, &fds);
    char b;
    return select(c->status_r + 1, &fds, NULL, NULL, &tv) == 1 &&
           read(c->status_r, &b, 1) == 1 && b == 'D';
}

static void
child_kill(child *c)
{
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
        c->pid = 0;
    }
    close(c->addr_w);
    close(c->status_r);
}

/* ---- the storm ----------------------------------------------------------------------
 */

typedef struct tally {
    unsigned sent, lost, dup; /* sent: requests produced (not refused) */
} tally;

static tally
count(sender *s)
{
    tally t = {0, 0, 0};
    unsigned sent = atomic_load(&s->sent);
    for (unsigned i = 0; i < sent; i++) {
        unsigned char n = atomic_load(&s->seen[i]);
        if (atomic_load(&s->refused[i])) {
            continue; /* KSF_ENOPARTITION through the callback: never produced */
        }
        t.sent++;
        t.lost += n == 0;
        t.dup += n > 1 ? n - 1u : 0u;
    }
    return t;
}

/* Make the next @p n requests of @p api (from any client of the broker) fail. Real Kafka
 * has no such injection: there the storm runs without the errors. */
static void
push_errors(ksft_broker *b, int16_t api, rd_kafka_resp_err_t err, size_t n)
{
    if (!ksft_broker_is_mock(b)) {
        return;
    }
    rd_kafka_resp_err_t errs[8];
    ck_assert_uint_le(n, 8);
    for (size_t i = 0; i < n; i++) {
        errs[i] = err;
    }
    rd_kafka_mock_push_request_errors_array(ksft_broker_mock(b), api, n, errs);
}

static void
print_table(sender *const *v, size_t n, const ksf_client_stats *st)
{
    printf("client  partition  sent  replies  lost  dup  timeouts  late  enopartition  "
           "coordinator errors\n");
    for (size_t i = 0; i < n; i++) {
        tally t = count(v[i]);
        printf("%-6s  %9d  %4u  %7u  %4u  %3u  %8llu  %4llu  %12u  %18u\n", v[i]->name,
               atomic_load(&v[i]->partition), t.sent, atomic_load(&v[i]->ok), t.lost,
               t.dup, (unsigned long long)st[i].timeouts,
               (unsigned long long)st[i].late_replies, atomic_load(&v[i]->enopart),
               atomic_load(&v[i]->coordinator_errors));
    }
    fflush(stdout);
}

/* Exactly one reply per request, on one partition, nothing else went wrong. */
static void
assert_clean(sender *s, const ksf_client_stats *st)
{
    tally t = count(s);
    ck_assert_msg(t.sent > 0, "%s sent nothing", s->name);
    ck_assert_msg(t.lost == 0 && t.dup == 0, "%s: %u lost, %u duplicated of %u", s->name,
                  t.lost, t.dup, t.sent);
    ck_assert_msg(atomic_load(&s->ok) == t.sent, "%s: %u replies for %u requests",
                  s->name, atomic_load(&s->ok), t.sent);
    ck_assert_msg(atomic_load(&s->failed) == 0, "%s: %u failed: %s", s->name,
                  atomic_load(&s->failed), s->error_text);
    ck_assert_msg(atomic_load(&s->send_errors) == 0, "%s: %s", s->name, s->error_text);
    ck_assert_uint_eq(atomic_load(&s->bad_value), 0);
    ck_assert_msg(atomic_load(&s->partition_changes) == 0,
                  "%s: its reply partition changed", s->name);
    ck_assert_uint_eq(st->timeouts, 0);
    ck_assert_uint_eq(st->late_replies, 0);
    ck_assert_uint_eq(st->duplicate_replies, 0);
    ck_assert_uint_eq(st->unknown_replies, 0);
}

KSFT_TEST(test_reply_group_storm, 150)
{
    child d = child_fork(); /* first: no thread exists yet */
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, PATTERN, 4);
    ksft_broker_create_topic(b, REPLY_TOPIC, 4);
    ksft_service srv = {0};
    server_start(&srv, b);
    enum { A, B, C, E, N };
    sender *v[N];
    const char *names[N] = {"A", "B", "C", "E"};
    for (int i = 0; i < N; i++) {
        v[i] = sender_new(b, names[i]); /* launch order A < B < C < E */
    }
    /* Phase 1: three clients join together and send. */
    for (int i = A; i <= C; i++) {
        sender_start(v[i]);
    }
    for (int i = A; i <= C; i++) {
        ck_assert_msg(wait_ok(v[i], 20, 30000), "%s got no replies", v[i]->name);
    }
    /* Phase 2: a fourth (the child) joins while Heartbeats fail with NOT_COORDINATOR. */
    int gen = atomic_load(&v[A]->generation);
    /* The mock fails the next Heartbeats of ANY client, the server's consumer included,
     * so push enough that several reach the reply-group members. */
    push_errors(b, API_HEARTBEAT, RD_KAFKA_RESP_ERR_NOT_COORDINATOR, 6);
    child_release(&d, ksft_broker_address(b));
    ck_assert_msg(child_wait_reply(&d, 30000), "the child client got no reply");
    ck_assert_msg(wait_generation(v, C + 1, gen, 30000), "no rebalance for the child");
    /* Phase 3: a fifth joins, one more than the partitions; JoinGroup fails once. */
    gen = atomic_load(&v[A]->generation);
    push_errors(b, API_JOIN_GROUP, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS, 1);
    sender_start(v[E]);
    ksft_deadline until = ksft_deadline_in(40000);
    while (atomic_load(&v[E]->enopart) < 5 && ksft_deadline_wait(&until)) {
    }
    ck_assert_msg(atomic_load(&v[E]->enopart) >= 5, "E never failed with ENOPARTITION");
    ck_assert_uint_eq(atomic_load(&v[E]->ok), 0);
    /* Phase 4: B leaves cleanly; E takes the partition it frees. */
    ksf_client_stats st[N];
    sender_quiesce(v[B]);
    ksf_client_get_stats(v[B]->cli, &st[B]);
    int64_t left_at = ksft_now_ms();
    push_errors(b, API_HEARTBEAT, RD_KAFKA_RESP_ERR_NOT_COORDINATOR, 6);
    ksf_client_destroy(v[B]->cli);
    v[B]->cli = NULL;
    ck_assert_msg(wait_ok(v[E], 20, 30000), "E got no partition after B left");
    ck_assert_int_ge(atomic_load(&v[E]->first_ok_ms), left_at);
    /* Phase 5: the child vanishes; the session timeout evicts it. */
    sender *alive[] = {v[A], v[C], v[E]};
    gen = atomic_load(&v[A]->generation);
    for (size_t i = 0; i < 3; i++) {
        gen = atomic_load(&alive[i]->generation) > gen
                  ? atomic_load(&alive[i]->generation)
                  : gen;
    }
    int64_t killed_at = ksft_now_ms();
    child_kill(&d);
    ck_assert_msg(wait_generation(alive, 3, gen, 40000), "the child was never evicted");
    /* Evicted by the session timeout (6000 ms), which runs from the child's last
     * heartbeat (every 500 ms) before the kill: a real broker evicts it 5.5-6 s after. */
    ck_assert_int_ge(ksft_now_ms() - killed_at, 6000 - 500);
    for (size_t i = 0; i < 3; i++) {
        ck_assert(wait_ok(alive[i], 20, 20000));
    }
    for (size_t i = 0; i < 3; i++) {
        sender_quiesce(alive[i]);
    }
    for (int i = 0; i < N; i++) {
        if (v[i]->cli) {
            ksf_client_get_stats(v[i]->cli, &st[i]);
        }
    }
    print_table(v, N, st);
    for (int i = 0; i < N; i++) {
        assert_clean(v[i], &st[i]);
    }
    /* Distinct partitions among clients alive together; E's surplus failures fast. */
    ck_assert_int_ne(atomic_load(&v[A]->partition), atomic_load(&v[B]->partition));
    ck_assert_int_ne(atomic_load(&v[A]->partition), atomic_load(&v[C]->partition));
    ck_assert_int_ne(atomic_load(&v[B]->partition), atomic_load(&v[C]->partition));
    ck_assert_int_ne(atomic_load(&v[E]->partition), atomic_load(&v[A]->partition));
    ck_assert_int_ne(atomic_load(&v[E]->partition), atomic_load(&v[C]->partition));
    ck_assert_str_eq(
        v[E]->enopart_text,
        "The client consumer did not subscribe to the corresponding reply "
        "topic (" REPLY_TOPIC "). It has 4 partitions and at least 5 members "
        "of reply group " GROUP " share it, so this client has none; it gets "
        "one as soon as a member leaves (run at most 4 instances, or add "
        "partitions).");
    /* Fast, not a group join: a request queued while the sender thread is busy with
     * an earlier one waits for that one too (109 ms seen once under load). */
    ck_assert_int_lt(atomic_load(&v[E]->max_enopart_ms), 250);
    /* The injected errors reached the memberships (E's first JoinGroup took one). */
    if (ksft_broker_is_mock(b)) {
        ck_assert_uint_ge(atomic_load(&v[E]->coordinator_errors), 1);
        unsigned injected = 0;
        for (int i = 0; i < N; i++) {
            injected += atomic_load(&v[i]->coordinator_errors);
        }
        ck_assert_uint_ge(injected, 3);
    }
    for (int i = 0; i < N; i++) {
        sender_free(v[i]);
    }
    ksft_service_stop(&srv);
    ksft_broker_stop(b);
}
END_TEST

/* ---- smaller cases ----------------------------------------------------------------- */

/* One call; returns the reply partition the server saw in the request. */
static int
call_partition(ksf_client *cli, int n)
{
    ksf_errinfo ei = {0};
    json_t *data = json_pack("{s:s, s:i}", "c", "x", "s", n), *reply = NULL;
    ksf_err e = ksf_client_call(cli, PATTERN, data, 30000, &reply, &ei);
    json_decref(data);
    ck_assert_msg(e == KSF_OK, "call: %s", ei.text);
    const json_t *p = json_object_get(reply, "p");
    ck_assert(json_is_integer(p));
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(reply, "d"), "s")), n);
    int partition = (int)json_integer_value(p);
    json_decref(reply);
    return partition;
}

static ksf_client *
client_new(ksft_broker *b)
{
    ksf_errinfo ei = {0};
    ksf_client *cli = NULL;
    ksf_config *cfg = ksft_config(b);
    ck_assert_msg(ksf_client_new(&cli, cfg, &ei) == KSF_OK, "%s", ei.text);
    ksf_config_destroy(cfg);
    return cli;
}

KSFT_TEST(test_reply_group_distinct, 40)
{
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, REPLY_TOPIC, 4);
    ksft_service srv = {0};
    server_start(&srv, b);
    ksf_client *one = client_new(b), *two = client_new(b);
    /* one joins alone and gets all four partitions, advertising the lowest; two's
     * join rebalances: one keeps 0 (its previous), two gets the first free one. */
    ck_assert_int_eq(call_partition(one, 1), 0);
    ck_assert_int_eq(call_partition(two, 2), 1);
    ck_assert_int_eq(call_partition(one, 3), 0);
    ck_assert_int_eq(call_partition(two, 4), 1);
    ksf_client_stats st;
    ksf_client_get_stats(one, &st);
    ck_assert_uint_eq(st.replies, 2);
    ck_assert_uint_eq(st.unknown_replies, 0);
    ksf_client_destroy(one);
    ksf_client_destroy(two);
    ksft_service_stop(&srv);
    ksft_broker_stop(b);
}
END_TEST

KSFT_TEST(test_reply_group_restart, 40)
{
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, REPLY_TOPIC, 4);
    ksft_service srv = {0};
    server_start(&srv, b);
    ksf_client *cli = client_new(b);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(call_partition(cli, i), 0);
    }
    ksf_client_destroy(cli); /* leaves the group; its replies stay in partition 0 */
    cli = client_new(b);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(call_partition(cli, 10 + i), 0);
    }
    /* It started at the high watermark: none of the old replies came back. */
    ksf_client_stats st;
    ksf_client_get_stats(cli, &st);
    ck_assert_uint_eq(st.replies, 5);
    ck_assert_uint_eq(st.unknown_replies, 0);
    ck_assert_uint_eq(st.late_replies + st.duplicate_replies + st.timeouts, 0);
    ksf_client_destroy(cli);
    ksft_service_stop(&srv);
    ksft_broker_stop(b);
}
END_TEST

KSFT_TEST(test_reply_group_acquire_timeout, 30)
{
    KSFT_NEEDS_MOCK("its 3 s first join; a real broker joins within the 500 ms");
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, REPLY_TOPIC, 4);
    ksf_client *cli = client_new(b);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_subscribe_to_response_of(cli, PATTERN, &ei), KSF_OK);
    int64_t t0 = ksft_now_ms();
    /* A group join takes 3 s on the mock: 500 ms is not enough. */
    ck_assert_int_eq(ksf_client_connect(cli, 500, &ei), KSF_ETIMEDOUT);
    int64_t took = ksft_now_ms() - t0;
    ck_assert_int_ge(took, 450);
    ck_assert_int_lt(took, 1500);
    const char *head = "reply topic " REPLY_TOPIC ": reply group " GROUP
                       " assigned no partition of it within ";
    const char *tail = " ms (a group join takes seconds, a rebalance up to the session "
                       "timeout); call ksf_client_connect() with a longer timeout first";
    ck_assert_msg(!strncmp(ei.text, head, strlen(head)), "%s", ei.text);
    int ms = atoi(ei.text + strlen(head));
    ck_assert_int_gt(ms, 0);
    ck_assert_int_le(ms, 500);
    const char *rest = strstr(ei.text + strlen(head), " ms (");
    ck_assert_ptr_nonnull(rest);
    ck_assert_str_eq(rest, tail);
    /* The join goes on: a later connect with time to spare succeeds. */
    ck_assert_msg(ksf_client_connect(cli, 15000, &ei) == KSF_OK, "%s", ei.text);
    ksf_client_destroy(cli);
    ksft_broker_stop(b);
}
END_TEST

KSFT_MAIN("reply_group")
