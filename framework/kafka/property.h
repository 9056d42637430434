/*
 * Is this a librdkafka property, and is the value one librdkafka takes? The
 * configuration (base/config.c) asks when a pass-through property is set, so a typo
 * fails at ksf_config_set rather than when a handle is created. It asks through the
 * hook ksfi_config_set_prop_check, which this module fills in when the library is
 * loaded, so that base/ never includes the layer above it.
 */
#ifndef KSF_KAFKA_PROPERTY_H
#define KSF_KAFKA_PROPERTY_H

#include "base/config.h"

#include <stddef.h>

/** Check @p key = @p value against a scratch librdkafka configuration. */
ksfi_prop_verdict ksfi_kafka_property_check(const char *key, const char *value, char *why,
                                            size_t why_size);

#endif
