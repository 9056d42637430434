#include "base/log.h"

#include "base/clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *
ksf_log_level_name(ksf_log_level level)
{
    switch (level) {
    case KSF_LOG_ERROR:
        return "error";
    case KSF_LOG_WARNING:
        return "warning";
    case KSF_LOG_NOTICE:
        return "notice";
    case KSF_LOG_INFO:
        return "info";
    case KSF_LOG_DEBUG:
        return "debug";
    }
    return "log";
}

void
ksf_log_stderr(void *user, ksf_log_level level, const char *component,
               const char *message)
{
    (void)user;
    /* One fprintf per line so concurrent threads do not interleave within a line. */
    fprintf(stderr, "ksf %s %s: %s\n", ksf_log_level_name(level), component, message);
}

/* ---- rendering ----------------------------------------------------------------------
 * A bounded writer that keeps counting past the end, so the formatters can report the
 * length a whole line needs (snprintf's contract) without a second pass. */

typedef struct out {
    char *buf;
    size_t size;
    size_t len; /* the length needed so far, possibly > size */
} out;

static void
put_char(out *o, char c)
{
    if (o->len + 1 < o->size) {
        o->buf[o->len] = c;
    }
    o->len++;
}

static void
put_str(out *o, const char *s)
{
    for (; *s; s++) {
        put_char(o, *s);
    }
}

static size_t
out_end(out *o)
{
    if (o->size > 0) {
        o->buf[o->len < o->size ? o->len : o->size - 1] = '\0';
    }
    return o->len;
}

static bool
logfmt_needs_quotes(const char *v)
{
    if (!*v) {
        return true; /* key= alone reads as a missing value */
    }
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p <= ' ' || *p == '=' || *p == '"' || *p == '\\' || *p == 0x7f) {
            return true;
        }
    }
    return false;
}

/* The escapes shared by quoted logfmt values and JSON strings. */
static void
put_escaped(out *o, const char *v)
{
    static const char hex[] = "0123456789abcdef";
    /* The characters with a short escape, and that escape's letter, at the same index. */
    static const char shorts[] = "\"\\\n\t\r", letters[] = "\"\\ntr";
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        const char *s = strchr(shorts, *p);
        if (s) {
            put_char(o, '\\');
            put_char(o, letters[s - shorts]);
        } else if (*p < 0x20 || *p == 0x7f) {
            put_str(o, "\\u00");
            put_char(o, hex[*p >> 4]);
            put_char(o, hex[*p & 15]);
        } else {
            put_char(o, (char)*p);
        }
    }
}

static void
put_logfmt_value(out *o, const char *v)
{
    v = v ? v : "";
    if (!logfmt_needs_quotes(v)) {
        put_str(o, v);
        return;
    }
    put_char(o, '"');
    put_escaped(o, v);
    put_char(o, '"');
}

static void
put_logfmt_key(out *o, const char *k)
{
    k = k && *k ? k : "_";
    for (; *k; k++) {
        char c = *k;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || c == '/';
        put_char(o, ok ? c : '_');
    }
}

static void
put_logfmt_pair(out *o, const char *k, const char *v)
{
    put_logfmt_key(o, k);
    put_char(o, '=');
    put_logfmt_value(o, v);
}

static void
logfmt_body(out *o, ksf_log_level level, const char *component, const char *message,
            const ksf_log_field *fields, size_t nfields)
{
    put_logfmt_pair(o, "level", ksf_log_level_name(level));
    put_char(o, ' ');
    put_logfmt_pair(o, "component", component);
    put_char(o, ' ');
    put_logfmt_pair(o, "msg", message);
    for (size_t i = 0; i < nfields; i++) {
        put_char(o, ' ');
        put_logfmt_pair(o, fields[i].key, fields[i].value);
    }
}

size_t
ksf_log_format_logfmt(char *buf, size_t size, ksf_log_level level, const char *component,
                      const char *message, const ksf_log_field *fields, size_t nfields)
{
    out o = {buf, size, 0};
    logfmt_body(&o, level, component, message, fields, nfields);
    return out_end(&o);
}

static void
put_json_pair(out *o, const char *k, const char *v, bool first)
{
    if (!first) {
        put_char(o, ',');
    }
    put_char(o, '"');
    put_escaped(o, k ? k : "");
    put_str(o, "\":\"");
    put_escaped(o, v ? v : "");
    put_char(o, '"');
}

static void
json_body(out *o, ksf_log_level level, const char *component, const char *message,
          const ksf_log_field *fields, size_t nfields)
{
    put_json_pair(o, "level", ksf_log_level_name(level), true);
    put_json_pair(o, "component", component, false);
    put_json_pair(o, "msg", message, false);
    for (size_t i = 0; i < nfields; i++) {
        put_json_pair(o, fields[i].key, fields[i].value, false);
    }
}

size_t
ksf_log_format_json(char *buf, size_t size, ksf_log_level level, const char *component,
                    const char *message, const ksf_log_field *fields, size_t nfields)
{
    out o = {buf, size, 0};
    put_char(&o, '{');
    json_body(&o, level, component, message, fields, nfields);
    put_char(&o, '}');
    return out_end(&o);
}

/* "2026-11-26T11:35:19.123Z": UTC so lines from several hosts sort together. */
static void
put_time(out *o)
{
    struct timespec ts;
    struct tm tm;
    char t[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(t + n, sizeof t - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
    put_str(o, t);
}

/* Lines longer than this are cut (with "..."): a log line is not a data channel. */
#define KSFI_LOG_LINE_MAX 4096

static void
write_line(void *user, out *o)
{
    if (o->len + 1 >= o->size) {
        memcpy(o->buf + o->size - 5, "...", 3); /* leaves room for \n and NUL */
        o->len = o->size - 2;
    }
    put_char(o, '\n');
    out_end(o);
    /* One fputs per line so concurrent threads do not interleave within a line. */
    fputs(o->buf, user ? (FILE *)user : stderr);
}

/* The time field a line starts with: @p before, the time, @p after. */
static void
put_time_field(out *o, const char *before, const char *after)
{
    put_str(o, before);
    put_time(o);
    put_str(o, after);
}

void
ksf_log_logfmt(void *user, ksf_log_level level, const char *component,
               const char *message, const ksf_log_field *fields, size_t nfields)
{
    char line[KSFI_LOG_LINE_MAX];
    out o = {line, sizeof line, 0};
    put_time_field(&o, "time=", " ");
    logfmt_body(&o, level, component, message, fields, nfields);
    write_line(user, &o);
}

void
ksf_log_jsonl(void *user, ksf_log_level level, const char *component, const char *message,
              const ksf_log_field *fields, size_t nfields)
{
    char line[KSFI_LOG_LINE_MAX];
    out o = {line, sizeof line, 0};
    put_time_field(&o, "{\"time\":\"", "\",");
    json_body(&o, level, component, message, fields, nfields);
    put_char(&o, '}');
    write_line(user, &o);
}

/* ---- the internal entry points ------------------------------------------------------
 */

bool
ksfi_log_enabled(const ksfi_logger *lg, ksf_log_level level)
{
    return lg &&
           ((lg->fn && level <= lg->max_level) || (lg->sfn && level <= lg->smax_level));
}

const char *
ksfi_log_num(char *buf, size_t size, long long v)
{
    snprintf(buf, size, "%lld", v);
    return buf;
}

static void
emit(const ksfi_logger *lg, ksf_log_level level, const char *component,
     const ksf_log_field *fields, size_t n, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (n > KSFI_LOG_FIELDS_MAX) {
        n = KSFI_LOG_FIELDS_MAX;
    }
    if (lg->sfn && level <= lg->smax_level) {
        lg->sfn(lg->suser, level, component, msg, fields, n);
    }
    if (!lg->fn || level > lg->max_level) {
        return;
    }
    if (n == 0) {
        lg->fn(lg->user, level, component, msg);
        return;
    }
    char line[2048];
    out o = {line, sizeof line, 0};
    put_str(&o, msg);
    for (size_t i = 0; i < n; i++) {
        put_char(&o, ' ');
        put_logfmt_pair(&o, fields[i].key, fields[i].value);
    }
    out_end(&o);
    lg->fn(lg->user, level, component, line);
}

void
ksfi_log(const ksfi_logger *lg, ksf_log_level level, const char *component,
         const char *fmt, ...)
{
    if (!ksfi_log_enabled(lg, level)) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    emit(lg, level, component, NULL, 0, fmt, ap);
    va_end(ap);
}

void
ksfi_logkv(const ksfi_logger *lg, ksf_log_level level, const char *component,
           const ksf_log_field *fields, size_t n, const char *fmt, ...)
{
    if (!ksfi_log_enabled(lg, level)) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    emit(lg, level, component, fields, n, fmt, ap);
    va_end(ap);
}

/* ---- rate-limited lines ------------------------------------------------------------ */

static int64_t
monotonic_ms(void)
{
    return ksfi_clock_ms();
}

void
ksfi_log_limiter_init(ksfi_log_limiter *l, int burst, int interval_ms,
                      int64_t (*clock)(void))
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->lock, NULL);
    l->clock = clock ? clock : monotonic_ms;
    l->burst = burst;
    l->interval_ms = interval_ms;
}

void
ksfi_log_limiter_destroy(ksfi_log_limiter *l)
{
    pthread_mutex_destroy(&l->lock);
}

/* The slot of @p key, claiming a free one (lock held). */
static ksfi_log_limiter_slot *
limiter_slot(ksfi_log_limiter *l, const char *key)
{
    for (size_t i = 0; i < KSFI_LOG_LIMITER_KEYS; i++) {
        ksfi_log_limiter_slot *s = &l->slots[i];
        if (!s->key) {
            s->key = key;
            s->window_start = l->clock();
            return s;
        }
        if (!strcmp(s->key, key)) {
            return s;
        }
    }
    return &l->slots[KSFI_LOG_LIMITER_KEYS - 1];
}

static void
log_suppressed(const ksfi_logger *lg, ksf_log_level level, const char *component,
               const char *key, uint64_t n, int64_t ms)
{
    char nb[24];
    ksf_log_field f[] = {{"key", key}, {"suppressed", KSFI_LOG_NUM(nb, n)}};
    ksfi_logkv(lg, level, component, f, 2,
               "%s: %llu similar line(s) suppressed in the last %lld ms", key,
               (unsigned long long)n, (long long)ms);
}

bool
ksfi_logkv_limited(const ksfi_logger *lg, ksfi_log_limiter *l, const char *key,
                   ksf_log_level level, const char *component,
                   const ksf_log_field *fields, size_t n, const char *fmt, ...)
{
    if (!ksfi_log_enabled(lg, level)) {
        return false;
    }
    pthread_mutex_lock(&l->lock);
    ksfi_log_limiter_slot *s = limiter_slot(l, key);
    int64_t now = l->clock(), since = now - s->window_start;
    uint64_t report = 0;
    if (since >= l->interval_ms) {
        report = s->suppressed;
        s->suppressed = 0;
        s->count = 0;
        s->window_start = now;
    }
    bool pass = s->count < l->burst;
    if (pass) {
        s->count++;
    } else {
        s->suppressed++;
    }
    pthread_mutex_unlock(&l->lock);
    if (report) {
        log_suppressed(lg, level, component, key, report, since);
    }
    if (pass) {
        va_list ap;
        va_start(ap, fmt);
        emit(lg, level, component, fields, n, fmt, ap);
        va_end(ap);
    }
    return pass;
}

void
ksfi_log_limiter_flush(const ksfi_logger *lg, ksfi_log_limiter *l, ksf_log_level level,
                       const char *component)
{
    for (size_t i = 0; i < KSFI_LOG_LIMITER_KEYS; i++) {
        pthread_mutex_lock(&l->lock);
        ksfi_log_limiter_slot *s = &l->slots[i];
        const char *key = s->key;
        uint64_t n = s->suppressed;
        int64_t ms = l->clock() - s->window_start;
        s->suppressed = 0;
        pthread_mutex_unlock(&l->lock);
        if (key && n) {
            log_suppressed(lg, level, component, key, n, ms);
        }
    }
}

bool
ksfi_ratelimit_take(ksfi_ratelimit *rl, int interval_ms, uint64_t *held)
{
    int64_t now = ksfi_clock_ms();
    int64_t next = atomic_load(&rl->next_ms);
    if (now < next ||
        !atomic_compare_exchange_strong(&rl->next_ms, &next, now + interval_ms)) {
        atomic_fetch_add(&rl->held, 1);
        return false;
    }
    *held = atomic_exchange(&rl->held, 0);
    return true;
}
