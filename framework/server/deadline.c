#include "server/deadline.h"

#include "base/errinfo.h"
#include "obs/trace.h"
#include "server/ctx.h"
#include "server/server.h"

#include <string.h>
#include <time.h>

#define EXPIRED_LOG_INTERVAL_MS 1000

int64_t
ksfi_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool
ksfi_deadline_parse(const void *value, size_t len, int64_t *out)
{
    const unsigned char *v = value;
    int64_t n = 0;
    if (!v || len == 0 || len > 19) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return false;
        }
        if (n > KSFI_DEADLINE_MAX_MS) {
            return false; /* stop before 19 digits could overflow int64 */
        }
        n = n * 10 + (v[i] - '0');
    }
    if (n < KSFI_DEADLINE_MIN_MS || n >= KSFI_DEADLINE_MAX_MS) {
        return false;
    }
    *out = n;
    return true;
}

size_t
ksfi_deadline_format(int64_t ms, char out[21])
{
    char rev[21];
    size_t n = 0;
    uint64_t v = ms < 0 ? 0 : (uint64_t)ms; /* never negative: callers add to now */
    do {
        rev[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) {
        out[i] = rev[n - 1 - i];
    }
    out[n] = '\0';
    return n;
}

ksf_err
ksfi_deadline_outgoing(int timeout_ms, int *timeout_out, int64_t *deadline_out,
                       ksf_errinfo *ei)
{
    const ksfi_scope *cur = ksfi_scope_current();
    int64_t now = ksfi_wall_ms();
    int timeout = timeout_ms;
    if (cur && cur->deadline_ms) {
        int64_t left = cur->deadline_ms - now;
        if (left <= 0) {
            return ksfi_fail(ei, KSF_ETIMEDOUT,
                             "the handler's own deadline passed %lld ms ago; not sending "
                             "a request whose caller has given up",
                             (long long)-left);
        }
        if (left < timeout) {
            timeout = (int)left;
        }
    }
    *timeout_out = timeout;
    *deadline_out = now + timeout;
    return KSF_OK;
}

bool
ksfi_ratelimit_take(ksfi_ratelimit *rl, int interval_ms, uint64_t *held)
{
    int64_t now = mono_ms();
    int64_t next = atomic_load(&rl->next_ms);
    if (now < next ||
        !atomic_compare_exchange_strong(&rl->next_ms, &next, now + interval_ms)) {
        atomic_fetch_add(&rl->held, 1);
        return false;
    }
    *held = atomic_exchange(&rl->held, 0);
    return true;
}

bool
ksfi_ctx_expired(ksf_ctx *ctx)
{
    ksf_server *srv = ctx->srv;
    int64_t deadline = ctx->scope.deadline_ms;
    if (!deadline) {
        return false;
    }
    int64_t late = ksfi_wall_ms() - deadline;
    if (late <= srv->cfg->server_deadline_skew_ms) {
        return false;
    }
    atomic_fetch_add(&srv->counters.expired, 1);
    uint64_t held = 0;
    if (ksfi_ratelimit_take(&srv->expired_log, EXPIRED_LOG_INTERVAL_MS, &held)) {
        /* Debug only: under overload this is every message, and the count says it. */
        ksfi_log(&srv->log, KSF_LOG_DEBUG, "server",
                 "%s[%d]@%lld: skipped, its deadline passed %lld ms ago (the caller gave "
                 "up; no reply); %llu more skipped since the last line",
                 ctx->topic, (int)ctx->msg->partition, (long long)ctx->msg->offset,
                 (long long)late, (unsigned long long)held);
    }
    return true;
}
