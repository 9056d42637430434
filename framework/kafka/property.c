#include "kafka/property.h"

#include <librdkafka/rdkafka.h>

ksfi_kafka_prop
ksfi_kafka_property_check(const char *key, const char *value, char *why, size_t why_size)
{
    rd_kafka_conf_t *scratch = rd_kafka_conf_new();
    rd_kafka_conf_res_t res = rd_kafka_conf_set(scratch, key, value, why, why_size);
    rd_kafka_conf_destroy(scratch);
    return res == RD_KAFKA_CONF_UNKNOWN ? KSFI_KAFKA_PROP_UNKNOWN
           : res != RD_KAFKA_CONF_OK    ? KSFI_KAFKA_PROP_INVALID
                                        : KSFI_KAFKA_PROP_OK;
}
