#include "server_probe.h"

#include "settings.h"
#include "suite.h"

#include <check.h>
#include <string.h>

void
ksft_probe_open(ksft_probe *p, const ksft_world_spec *spec)
{
    static const char *const reply[] = {KSFT_PROBE_REPLY, NULL};
    ksft_world_spec s = spec ? *spec : (ksft_world_spec){0};
    const ksft_handler *handlers = s.handlers;
    s.handlers = NULL; /* the server comes after the reply-topic setting below */
    s.no_client = true;
    memset(p, 0, sizeof *p);
    ksft_world_open(&p->w, &s);
    ksft_world_topics(&p->w, reply);
    const char *const kv[][2] = {{"server.reply.topics", KSFT_PROBE_REPLY}};
    ksft_config_set_all(p->w.cfg, kv, KSFT_NKV(kv));
    const char *addr = ksft_broker_address(p->w.broker);
    p->prod = ksft_producer_new(addr);
    p->replies = ksft_collector_new(addr, KSFT_PROBE_REPLY, 0);
    if (handlers) {
        ksft_world_serve(&p->w, ksft_world_server(&p->w, handlers));
    }
}

void
ksft_probe_close(ksft_probe *p)
{
    ksft_world_stop_server(&p->w);
    ksft_collector_destroy(p->replies);
    ksft_producer_destroy(p->prod);
    ksft_world_close(&p->w);
}

const ksft_msg *
ksft_probe_request(ksft_probe *p, const char *topic, const char *id, const void *value,
                   size_t len)
{
    ksft_send_request(p->prod, topic, 0, id, KSFT_PROBE_REPLY, 0, value, len, true);
    ck_assert_msg(ksft_collector_wait_id(p->replies, id, 1, KSFT_PROBE_WAIT_MS) >= 1,
                  "no reply to %s (%s) within %d ms", topic, id, KSFT_PROBE_WAIT_MS);
    return ksft_collector_get_id(p->replies, id, 0);
}

ksf_server_stats
ksft_probe_stats(const ksft_probe *p)
{
    ksf_server_stats s;
    ksf_server_get_stats(p->w.srv, &s);
    return s;
}

void
ksft_probe_stop(ksft_probe *p, size_t replies)
{
    ksft_world_stop_server(&p->w);
    ksft_collector_poll(p->replies, 100);
    ck_assert_uint_eq(ksft_collector_count(p->replies), replies);
}

void
ksft_assert_bytes(const void *got, size_t got_len, const void *want, size_t want_len,
                  const char *what)
{
    ck_assert_msg((got == NULL) == (want == NULL), "%s: %s, expected %s", what,
                  got ? "present" : "null", want ? "present" : "null");
    ck_assert_msg(got_len == want_len && (!want_len || !memcmp(got, want, want_len)),
                  "%s: got %zu bytes \"%.*s\", expected %zu bytes \"%.*s\"", what,
                  got_len, (int)got_len, got ? (const char *)got : "", want_len,
                  (int)want_len, want ? (const char *)want : "");
}

void
ksft_assert_headers(const ksft_msg *m, const ksfi_header *want, size_t n)
{
    ck_assert_uint_eq(m->nhdrs, n + 1);
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(m->hdrs[i].name, want[i].name);
        ksft_assert_bytes(m->hdrs[i].value, m->hdrs[i].len, want[i].value, want[i].len,
                          want[i].name);
    }
    ck_assert_str_eq(m->hdrs[n].name, "traceparent");
    ck_assert_uint_eq(m->hdrs[n].len, 55);
}

void
ksft_assert_value_reply(const ksft_msg *m, const char *id, const char *value, size_t len)
{
    ksft_assert_bytes(m->value, m->len, value, len, "value");
    ksfi_header want[] = {{KSFI_HDR_CORRELATION_ID, id, strlen(id)}, KSFT_DISPOSED};
    ksft_assert_headers(m, want, 2);
}

void
ksft_assert_error_reply(const ksft_msg *m, const char *id, const char *err)
{
    ksft_assert_bytes(m->value, m->len, NULL, 0, "value");
    ksfi_header want[] = {{KSFI_HDR_CORRELATION_ID, id, strlen(id)},
                          {KSFI_HDR_NEST_ERR, err, strlen(err)},
                          KSFT_DISPOSED};
    ksft_assert_headers(m, want, 3);
}

void
ksft_assert_header(const ksft_msg *m, const char *name, const char *want, size_t len)
{
    const void *v = NULL;
    size_t got = 0;
    ck_assert_msg(ksft_msg_header(m, name, &v, &got), "header %s missing", name);
    ksft_assert_bytes(v, got, want, len, name);
}
