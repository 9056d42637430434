/*
 * TCP_NODELAY on the embedded broker's connections.
 *
 * A Kafka broker disables Nagle's algorithm on every connection it accepts, and every
 * Kafka client (librdkafka's socket.nagle.disable, which ksf sets) does the same on its
 * side. librdkafka 2.0.2's mock cluster does not: it accepts with plain accept(2) and
 * writes each response as it is ready. When a client has several requests in flight on
 * one connection (an idempotent producer keeps up to 5, a consumer pipelines fetches),
 * a small response written while the previous one is still unacknowledged waits for the
 * client's delayed ACK, which Linux holds for up to 40 ms. Measured with `ksf bench` at
 * 64 requests in flight: the server's replies reached the client after 3 ms at p50 but
 * 44 ms at p90, and disabling delayed ACKs on loopback (ip route ... quickack 1) doubled
 * the requests per second of both ksf and the hand-written librdkafka floor.
 *
 * The mock offers no hook for its sockets, so the ksf executable supplies accept(2)
 * itself: librdkafka's reference to accept binds to this definition (a symbol that a
 * shared library uses and the executable defines is exported by the linker and wins
 * the lookup), which accepts with accept4(2) and switches Nagle off. The only callers
 * of accept in this process are the mock cluster and the broker's own front door
 * (broker_relay.c), both of which want exactly that.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* glibc's, declared by <sys/socket.h> only under _GNU_SOURCE (which would also change
 * accept's own prototype there). */
int accept4(int fd, struct sockaddr *restrict addr, socklen_t *restrict addrlen,
            int flags);

__attribute__((visibility("default"))) int
accept(int fd, struct sockaddr *restrict addr, socklen_t *restrict addrlen)
{
    int conn = accept4(fd, addr, addrlen, 0);
    if (conn >= 0) {
        /* Best effort: a connection that keeps Nagle on still works, only slower. */
        int one = 1;
        (void)setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return conn;
}
