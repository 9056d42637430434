/*
 * NestJS's id suffixes and default settings (constants.ts: postfixId, brokers,
 * clientId, groupId), the wire names the configuration needs. They live below codec/
 * so that base/config.c need not include upwards; codec/wire.h includes this file, so
 * every wire name is still reached through wire.h.
 */
#ifndef KSF_NEST_DEFAULTS_H
#define KSF_NEST_DEFAULTS_H

/* Id suffixes (postfixId defaults) and defaults (constants.ts). */
#define KSFI_SERVER_POSTFIX "-server"
#define KSFI_CLIENT_POSTFIX "-client"
#define KSFI_DEFAULT_BROKERS "localhost:9092"
#define KSFI_DEFAULT_CLIENT_ID "nestjs-consumer"
#define KSFI_DEFAULT_GROUP_ID "nestjs-group"

#endif
