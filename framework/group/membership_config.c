/* Checking and copying a membership's configuration (the broker list, timeouts). */
#include "group/membership_config.h"

#include "base/alloc.h"
#include "base/errinfo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* See membership_config.h. */
ksf_err
ksfi_membership_parse_brokers(const char *list, ksfi_hostport **out, size_t *count,
                              ksf_errinfo *ei)
{
    size_t n = 1;
    for (const char *c = list; *c; c++) {
        n += *c == ',';
    }
    if (!(*out = ksfi_calloc(n, sizeof **out))) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory copying the broker list");
    }
    for (const char *s = list; *s;) {
        size_t len = strcspn(s, ",");
        const char *colon = s + len;
        while (colon > s && *colon != ':') {
            colon--;
        }
        const char *host = s, *host_end = colon;
        if (len > 1 && *s == '[' && colon > s && colon[-1] == ']') {
            host++;
            host_end--;
        }
        char *end = NULL;
        long port = colon > s ? strtol(colon + 1, &end, 10) : 0;
        if (colon == s || host_end <= host || end != s + len || port < 1 ||
            port > 65535) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "brokers \"%s\": \"%.*s\" is not host:port; expected "
                             "host:port[,host:port...]",
                             list, (int)len, s);
        }
        ksfi_hostport *hp = &(*out)[(*count)++];
        snprintf(hp->port, sizeof hp->port, "%ld", port);
        if (!(hp->host = ksfi_strndup(host, (size_t)(host_end - host)))) {
            return ksfi_fail(ei, KSF_ENOMEM, "out of memory copying the broker list");
        }
        s += len + (s[len] == ',');
    }
    return KSF_OK;
}

ksf_err
ksfi_membership_validate(const ksfi_membership_config *c, ksf_errinfo *ei)
{
    if (!c->brokers || !*c->brokers) {
        return ksfi_fail(ei, KSF_EINVAL, "brokers is empty; expected host:port[,...]");
    }
    if (!c->group_id || !*c->group_id || strlen(c->group_id) > 32767) {
        return ksfi_fail(ei, KSF_EINVAL, "group id must be 1..32767 bytes");
    }
    if (c->client_id && strlen(c->client_id) > 32767) {
        return ksfi_fail(ei, KSF_EINVAL, "client id must be at most 32767 bytes");
    }
    if (c->group_instance_id &&
        (!*c->group_instance_id || strlen(c->group_instance_id) > 249)) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "group %s: group.instance.id must be 1..249 bytes", c->group_id);
    }
    if (!c->topics || c->topic_count == 0) {
        return ksfi_fail(ei, KSF_EINVAL, "group %s: no topics to subscribe to",
                         c->group_id);
    }
    for (size_t i = 0; i < c->topic_count; i++) {
        if (!c->topics[i].name || !*c->topics[i].name ||
            strlen(c->topics[i].name) > 249 || c->topics[i].partitions < 0) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "group %s: topic %zu needs a 1..249-byte name and a "
                             "partition count >= 0",
                             c->group_id, i);
        }
    }
    if (c->session_timeout_ms < 1000 || c->session_timeout_ms > 3600000 ||
        c->rebalance_timeout_ms < c->session_timeout_ms ||
        c->rebalance_timeout_ms > INT32_MAX - 5000 || c->heartbeat_interval_ms < 10 ||
        c->heartbeat_interval_ms > c->session_timeout_ms / 3) {
        return ksfi_fail(
            ei, KSF_EINVAL,
            "group %s: timeouts session %d ms, rebalance %d ms, heartbeat %d "
            "ms; expected session 1000..3600000, rebalance >= session, "
            "heartbeat 10..session/3",
            c->group_id, (int)c->session_timeout_ms, (int)c->rebalance_timeout_ms,
            (int)c->heartbeat_interval_ms);
    }
    return KSF_OK;
}
