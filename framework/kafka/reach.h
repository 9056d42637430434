/*
 * Are the brokers there? A new user's most common first mistake is a wrong address or
 * a broker that is not running; librdkafka retries quietly forever. Servers and
 * clients ask here before they wait for anything else, and report within
 * broker.unreachable.timeout.ms, naming the addresses and what each one did.
 */
#ifndef KSF_REACH_H
#define KSF_REACH_H

#include "base/config.h"

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

/*
 * Wait until a broker of @p rk answers a Metadata request, for at most @p timeout_ms
 * (0: no limit). @p stop (optional) is checked about every 200 ms; when it becomes
 * true the wait ends with KSF_ECLOSED. Errors: KSF_EKAFKA with a sentence naming
 * cfg->brokers, what connecting to each address did (refused, timed out, unknown
 * host) and the remedy; KSF_ECLOSED.
 */
ksf_err ksfi_reach_brokers(rd_kafka_t *rk, const ksf_config *cfg, int timeout_ms,
                           atomic_bool *stop, ksf_errinfo *ei);

/*
 * What a TCP connection to each address of @p brokers does now, as text such as
 * "127.0.0.1:1 refused the connection" (at most 3 addresses, 1 s each), into @p buf.
 */
void ksfi_reach_probe(const char *brokers, char *buf, size_t size);

#endif
