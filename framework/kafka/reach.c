#include "kafka/reach.h"

#include "base/clock.h"
#include "base/errinfo.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROBE_MS 1000
#define PROBE_MAX 3
#define SLICE_MS 200

/* What connecting to @p host:@p port does: NULL when it connects. */
static const char *
probe_one(const char *host, const char *port, char *why, size_t size)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc) {
        snprintf(why, size, "cannot be resolved (%s)", gai_strerror(rc));
        return why;
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    int err = fd < 0 ? errno : 0;
    if (fd >= 0) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        if (connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS) {
            err = errno;
        } else {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, PROBE_MS) <= 0) {
                err = ETIMEDOUT;
            } else {
                socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            }
        }
        close(fd);
    }
    freeaddrinfo(res);
    if (!err) {
        return NULL;
    }
    if (err == ECONNREFUSED) {
        snprintf(why, size, "refused the connection (nothing listens there)");
    } else if (err == ETIMEDOUT) {
        snprintf(why, size, "did not accept a connection within %d ms", PROBE_MS);
    } else {
        snprintf(why, size, "cannot be connected to (%s)", strerror(err));
    }
    return why;
}

void
ksfi_reach_probe(const char *brokers, char *buf, size_t size)
{
    size_t o = 0;
    const char *s = brokers;
    buf[0] = '\0';
    for (int n = 0; *s && n < PROBE_MAX && o < size; n++) {
        size_t len = strcspn(s, ",");
        char addr[256], why[160];
        snprintf(addr, sizeof addr, "%.*s", (int)len, s);
        s += len + (s[len] == ',');
        char *colon = strrchr(addr, ':');
        if (!colon) {
            continue; /* the configuration refuses these; nothing to probe */
        }
        *colon = '\0';
        const char *host = addr[0] == '[' ? addr + 1 : addr; /* [v6]:port */
        if (addr[0] == '[' && colon > addr && colon[-1] == ']') {
            colon[-1] = '\0';
        }
        const char *r = probe_one(host, colon + 1, why, sizeof why);
        *colon = ':';
        if (addr[0] == '[') {
            colon[-1] = ']';
        }
        int w = snprintf(buf + o, size - o, "%s%s %s", o ? "; " : "", addr,
                         r ? r
                           : "accepts connections but gave no Kafka answer "
                             "(a TLS/SASL listener, or not Kafka?)");
        o += w > 0 ? (size_t)w : 0;
    }
}

ksf_err
ksfi_reach_brokers(rd_kafka_t *rk, const ksf_config *cfg, int timeout_ms,
                   atomic_bool *stop, ksf_errinfo *ei)
{
    int64_t deadline = timeout_ms > 0 ? ksfi_clock_ms() + timeout_ms : INT64_MAX;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        int64_t left = deadline - ksfi_clock_ms();
        int slice = left < SLICE_MS ? (int)(left > 0 ? left : 0) : SLICE_MS;
        int64_t began = ksfi_clock_ms();
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, slice);
        if (!err) {
            rd_kafka_metadata_destroy(md);
            return KSF_OK;
        }
        bool transient = err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
                         err == RD_KAFKA_RESP_ERR__TRANSPORT ||
                         err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
                         err == RD_KAFKA_RESP_ERR__RESOLVE;
        if (!transient) {
            return ksfi_fail_kafka(ei, (int)err, "brokers \"%s\": %s", cfg->brokers,
                                   rd_kafka_err2str(err));
        }
        if (stop && atomic_load(stop)) {
            return ksfi_fail(ei, KSF_ECLOSED, "stopped while waiting for the brokers");
        }
        if (ksfi_clock_ms() >= deadline) {
            char why[600];
            ksfi_reach_probe(cfg->brokers, why, sizeof why);
            return ksfi_fail_kafka(
                ei, (int)err,
                "no broker of \"%s\" answered within %d ms (%s); check the address "
                "(--brokers, KSF_BROKERS) and that the brokers are up "
                "(broker.unreachable.timeout.ms sets this wait)",
                cfg->brokers, timeout_ms, why[0] ? why : rd_kafka_err2str(err));
        }
        /* An answer that came at once (all brokers down) must not spin. */
        int64_t spent = ksfi_clock_ms() - began;
        if (spent < 50) {
            nanosleep(&(struct timespec){0, (long)(50 - spent) * 1000000}, NULL);
        }
    }
}
