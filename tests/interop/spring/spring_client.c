/*
 * C -> Spring: a ksf client with client.wire.dialect=spring calls every handler of the
 * Spring service (SpringService.java, @KafkaListener + @SendTo) and checks the exact
 * results, errors and timeouts, then emits an event and checks Spring recorded it.
 * Usage: spring_client BROKER EVENT_LOG     Prints "N passed, N failed"; exit 0 if none
 * failed.
 */
#include "../interop_check.h"
#include "../interop_config.h"

#include <ksf/ksf.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Call @p pattern and compare: @p want_err, and the value (KSF_OK) or the remote error
 * JSON (KSF_EREMOTE) with @p want_json; anything else has no value to compare. */
static void
expect(ksf_client *cli, const char *name, const char *pattern, const char *payload_json,
       int timeout_ms, ksf_err want_err, const char *want_json)
{
    json_t *payload = json_loads(payload_json, JSON_DECODE_ANY, NULL);
    json_t *want = want_json ? json_loads(want_json, JSON_DECODE_ANY, NULL) : NULL;
    json_t *got = NULL;
    ksf_errinfo ei = {0};
    ksf_err e = ksf_client_call(cli, pattern, payload, timeout_ms, &got, &ei);
    bool ok = e == want_err;
    if (ok && (e == KSF_OK || e == KSF_EREMOTE)) {
        ok = want ? json_equal(got, want) : json_is_null(got);
    }
    char *g = got ? json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    char detail[1024];
    snprintf(detail, sizeof detail, "expected %s %s; got %s %s (%s)",
             ksf_strerror(want_err), want_json ? want_json : "null", ksf_strerror(e),
             g ? g : "null", ei.text);
    check(name, ok, detail);
    free(g);
    json_decref(got);
    json_decref(want);
    json_decref(payload);
}

/* spring.headers returns what Spring read from the request: 16 id bytes, the reply
 * topic, and a 4-byte reply partition that is one of the topic's 4. */
static void
check_headers(ksf_client *cli)
{
    json_t *got = NULL;
    ksf_errinfo ei = {0};
    ksf_err e = ksf_client_call(cli, "spring.headers", NULL, 15000, &got, &ei);
    json_int_t partition = json_integer_value(json_object_get(got, "replyPartition"));
    json_t *want = json_pack("{s:i,s:s,s:i,s:I}", "correlationIdBytes", 16, "replyTopic",
                             "spring.headers.reply", "replyPartitionBytes", 4,
                             "replyPartition", partition);
    char *g = got ? json_dumps(got, JSON_COMPACT) : NULL;
    char detail[1024];
    snprintf(detail, sizeof detail, "got %s %s (%s)", ksf_strerror(e), g ? g : "null",
             ei.text);
    check("spring.headers",
          e == KSF_OK && json_equal(got, want) && partition >= 0 && partition < 4,
          detail);
    free(g);
    json_decref(got);
    json_decref(want);
}

static void
pause_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* A timed-out request's reply that still comes is counted, not delivered. */
static void
check_late_reply(ksf_client *cli)
{
    ksf_client_stats before, after;
    ksf_client_get_stats(cli, &before);
    expect(cli, "spring.slow (500 ms timeout)", "spring.slow", "{}", 500, KSF_ETIMEDOUT,
           NULL);
    /* The handler sleeps 1.5 s: its reply arrives about 1 s after the timeout. */
    for (int i = 0; i < 100; i++) {
        ksf_client_get_stats(cli, &after);
        if (after.late_replies > before.late_replies) {
            break;
        }
        pause_ms(100); /* polling the client's counter; bounded at 10 s */
    }
    char detail[128];
    snprintf(detail, sizeof detail, "late_replies went from %llu to %llu",
             (unsigned long long)before.late_replies,
             (unsigned long long)after.late_replies);
    check("spring.slow late reply counted", after.late_replies == before.late_replies + 1,
          detail);
}

static const char *const patterns[] = {
    "spring.object", "spring.array",       "spring.string",  "spring.number",
    "spring.null",   "spring.kafka-null",  "spring.echo",    "spring.error",
    "spring.slow",   "spring.error-plain", "spring.headers", NULL};

int
main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "Usage: spring_client BROKER EVENT_LOG\n");
        return 2;
    }
    const char *const settings[][2] = {{"client.id", "spring-interop-c"},
                                       {"client.wire.dialect", "spring"}};
    ksf_client *cli =
        interop_client_connect("spring_client", argv[1], settings,
                               sizeof settings / sizeof settings[0], patterns, 60000);
    if (!cli) {
        return 2;
    }
    expect(cli, "spring.object", "spring.object", "{\"heroId\":1}", 15000, KSF_OK,
           "{\"id\":1,\"name\":\"Mythical Sword\"}");
    expect(cli, "spring.array", "spring.array", "{}", 15000, KSF_OK,
           "[{\"id\":1},{\"id\":2}]");
    expect(cli, "spring.string", "spring.string", "{}", 15000, KSF_OK,
           "\"dragon slain\"");
    /* Text on the wire either way: a Spring Integer 42 arrives as "42", as a NestJS
     * number does. */
    expect(cli, "spring.number", "spring.number", "{}", 15000, KSF_OK, "\"42\"");
    expect(cli, "spring.kafka-null", "spring.kafka-null", "{}", 15000, KSF_OK, NULL);
    /* A Spring handler that returns null sends no reply: the call times out. */
    expect(cli, "spring.null", "spring.null", "{}", 2000, KSF_ETIMEDOUT, NULL);
    expect(cli, "spring.echo object", "spring.echo", "{\"a\":[1,2.5,\"x\",null,true]}",
           15000, KSF_OK, "{\"a\":[1,2.5,\"x\",null,true]}");
    expect(cli, "spring.echo text", "spring.echo", "\"plain text\"", 15000, KSF_OK,
           "\"plain text\"");
    expect(cli, "spring.echo number", "spring.echo", "7", 15000, KSF_OK, "\"7\"");
    expect(cli, "spring.error", "spring.error", "{}", 15000, KSF_EREMOTE,
           "{\"status\":\"error\",\"message\":\"hero not found\"}");
    /* Without a KafkaListenerErrorHandler Spring logs the exception, sends nothing. */
    expect(cli, "spring.error-plain", "spring.error-plain", "{}", 2000, KSF_ETIMEDOUT,
           NULL);
    check_late_reply(cli);
    expect(cli, "spring.slow", "spring.slow", "{}", 15000, KSF_OK, "\"slow done\"");
    check_headers(cli);

    ksf_errinfo ei = {0};
    json_t *event = json_pack("{s:i,s:i}", "heroId", 1, "dragonId", 7);
    ksf_err e = ksf_client_emit(cli, "spring.event", event, NULL, NULL, NULL, &ei);
    json_decref(event);
    check("emit spring.event", e == KSF_OK, ei.text);
    check("Spring recorded spring.event",
          wait_for_line(
              argv[2],
              "{\"topic\":\"spring.event\",\"data\":{\"heroId\":1,\"dragonId\":7}}"),
          "no matching line in the event log");
    ksf_client_stats st;
    ksf_client_get_stats(cli, &st);
    char detail[128];
    snprintf(detail, sizeof detail, "unknown_replies %llu, duplicate_replies %llu",
             (unsigned long long)st.unknown_replies,
             (unsigned long long)st.duplicate_replies);
    check("no stray replies", st.unknown_replies == 0 && st.duplicate_replies == 0,
          detail);
    ksf_client_destroy(cli);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
