#include "base/topic.h"

#include "base/errinfo.h"

#include <stdbool.h>
#include <string.h>

const bool ksfi_topic_byte[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,
    ['7'] = 1, ['8'] = 1, ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1,
    ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,
    ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1,
    ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
    ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1, ['.'] = 1,
    ['_'] = 1, ['-'] = 1};

ksf_err
ksfi_topic_check(const char *topic, size_t reserve, const char *reserve_for,
                 ksf_errinfo *ei)
{
    if (!topic || !*topic) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "pattern is empty; a Kafka pattern is a topic "
                         "name such as \"hero.kill.dragon\"");
    }
    /* One pass finds both the length and the first illegal byte: NUL is not a legal
     * byte, so the scan stops at the end or at the first byte Kafka refuses (this
     * runs on every send and emit; it was strlen and a second loop). */
    const unsigned char *u = (const unsigned char *)topic;
    while (ksfi_topic_byte[*u]) {
        u++;
    }
    size_t legal = (size_t)(u - (const unsigned char *)topic);
    size_t n = *u ? legal + strlen(topic + legal) : legal;
    size_t max = reserve < KSFI_TOPIC_MAX ? KSFI_TOPIC_MAX - reserve : 0;
    if (n > max) {
        return ksfi_fail(
            ei, KSF_EINVAL,
            "pattern \"%.60s...\" is %zu characters; at most %zu fit a Kafka "
            "topic%s",
            topic, n, max, reserve_for);
    }
    if (topic[0] == '.' && (n == 1 || (n == 2 && topic[1] == '.'))) { /* "." or ".." */
        return ksfi_fail(ei, KSF_EINVAL, "pattern \"%s\" is not a legal Kafka topic name",
                         topic);
    }
    if (*u) {
        char c = (char)*u;
        return ksfi_fail(ei, KSF_EINVAL,
                         "pattern \"%s\" has character '%c' (byte 0x%02x) at %zu; Kafka "
                         "topic names allow only A-Z a-z 0-9 . _ -",
                         topic, (c >= ' ' && c <= '~') ? c : '?', (unsigned char)c,
                         legal);
    }
    return KSF_OK;
}

ksf_err
ksfi_topic_list_each(const char *list, ksf_err (*f)(const char *, size_t, void *),
                     void *user)
{
    const char *p = list;
    for (;;) {
        while (*p == ' ') {
            p++;
        }
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n > 0 && p[n - 1] == ' ') {
            n--;
        }
        ksf_err e = f(p, n, user);
        if (e || !end) {
            return e;
        }
        p = end + 1;
    }
}

static ksf_err
check_entry(const char *s, size_t n, void *user)
{
    ksf_errinfo *ei = user;
    char name[KSFI_TOPIC_MAX + 2];
    if (n == 0) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "server.reply.topics: an empty entry; write a comma list of "
                         "topic names and prefix* globs, e.g. \"spring.replies,team-*\"");
    }
    if (n == 1 && s[0] == '*') {
        return KSF_OK;
    }
    if (n > KSFI_TOPIC_MAX + 1) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "server.reply.topics: entry \"%.40s...\" is longer than a "
                         "topic name",
                         s);
    }
    memcpy(name, s, n);
    name[n] = '\0';
    if (name[n - 1] == '*') {
        name[--n] = '\0';
    }
    if (strchr(name, '*')) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "server.reply.topics: entry \"%s\" has a '*' that is not "
                         "last; only prefix globs (\"prefix*\") are supported",
                         name);
    }
    ksf_errinfo sub = {0};
    if (ksfi_topic_check(name, 0, "", &sub)) {
        return ksfi_fail(ei, KSF_EINVAL, "server.reply.topics: %s", sub.text);
    }
    return KSF_OK;
}

ksf_err
ksfi_reply_topics_check(const char *list, ksf_errinfo *ei)
{
    if (!list) {
        return ksfi_fail(ei, KSF_EINVAL, "server.reply.topics: value is NULL");
    }
    if (!*list) {
        return KSF_OK; /* no entries: only <pattern>.reply */
    }
    return ksfi_topic_list_each(list, check_entry, ei);
}
