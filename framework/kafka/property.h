/*
 * Is this a librdkafka property, and is the value one librdkafka takes? Asked by the
 * configuration (base/config.c) when a pass-through property is set, so a typo fails
 * at ksf_config_set rather than when a handle is created. Depends on nothing of ksf,
 * so the configuration can ask without the adapter needing the configuration.
 */
#ifndef KSF_KAFKA_PROPERTY_H
#define KSF_KAFKA_PROPERTY_H

#include <stddef.h>

/** What librdkafka says of a property. */
typedef enum ksfi_kafka_prop {
    KSFI_KAFKA_PROP_OK,      /* known, and the value is accepted */
    KSFI_KAFKA_PROP_UNKNOWN, /* librdkafka has no such property */
    KSFI_KAFKA_PROP_INVALID, /* known, but the value is refused: @p why says why */
} ksfi_kafka_prop;

/** Check @p key = @p value against a scratch librdkafka configuration. */
ksfi_kafka_prop ksfi_kafka_property_check(const char *key, const char *value, char *why,
                                          size_t why_size);

#endif
