#include "kafka/property.h"

#include <librdkafka/rdkafka.h>

ksfi_prop_verdict
ksfi_kafka_property_check(const char *key, const char *value, char *why, size_t why_size)
{
    rd_kafka_conf_t *scratch = rd_kafka_conf_new();
    rd_kafka_conf_res_t res = rd_kafka_conf_set(scratch, key, value, why, why_size);
    rd_kafka_conf_destroy(scratch);
    return res == RD_KAFKA_CONF_UNKNOWN ? KSFI_PROP_UNKNOWN
           : res != RD_KAFKA_CONF_OK    ? KSFI_PROP_INVALID
                                        : KSFI_PROP_OK;
}

/* Installed when libksf is loaded (before main, before any ksf_config_set). Every
 * object of ksf_core is linked in whole (libksf.so, and the tests through
 * ksf_internal_dep), so this runs although nothing calls into this file. */
__attribute__((constructor)) static void
install_property_check(void)
{
    ksfi_config_set_prop_check(ksfi_kafka_property_check);
}
