/*
 * Kafka topic names and comma lists of them, checked without anything of Kafka: what
 * the configuration validates when a setting names topics (dead-letter templates,
 * server.reply.topics), and what codec/ builds its pattern check on. Pure.
 */
#ifndef KSF_TOPIC_H
#define KSF_TOPIC_H

#include <ksf/ksf.h>

#include <stdbool.h>
#include <stddef.h>

/* Kafka's longest topic name. */
#define KSFI_TOPIC_MAX 249

/* The bytes a Kafka topic name may hold (A-Z a-z 0-9 . _ -) are true: a lookup per
 * byte, for checks on every request's pattern and reply topic. */
extern const bool ksfi_topic_byte[256];

/**
 * Is @p topic a legal Kafka topic name with @p reserve characters to spare (for a
 * suffix the caller appends; @p reserve_for names it in the error, "" when none)?
 * Errors: KSF_EINVAL naming the pattern and what is wrong with it.
 */
ksf_err ksfi_topic_check(const char *topic, size_t reserve, const char *reserve_for,
                         ksf_errinfo *ei);

/**
 * Call @p f (entry, its length, @p user) for each comma-separated entry of @p list,
 * spaces around entries ignored; stops at and returns the first non-OK result.
 */
ksf_err ksfi_topic_list_each(const char *list, ksf_err (*f)(const char *, size_t, void *),
                             void *user);

/**
 * Check a server.reply.topics value: a comma list of topic names and "prefix*" globs
 * ("*" alone: any name). Errors: KSF_EINVAL naming the bad entry.
 */
ksf_err ksfi_reply_topics_check(const char *list, ksf_errinfo *ei);

#endif
