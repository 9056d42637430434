/*
 * All of libksf's own allocations go through these, so tests can make the Nth one fail
 * and check that every failure path returns KSF_ENOMEM cleanly (jansson's and
 * librdkafka's allocations are theirs).
 */
#ifndef KSF_ALLOC_H
#define KSF_ALLOC_H

#include <stddef.h>

void *ksfi_malloc(size_t size);
void *ksfi_calloc(size_t count, size_t size);
void *ksfi_realloc(void *ptr, size_t size);
char *ksfi_strdup(const char *s);
char *ksfi_strndup(const char *s, size_t len);
void *ksfi_memdup(const void *p, size_t len);
/*
 * For growable buffers, when @p need bytes are more than the capacity *cap: @p data
 * reallocated to *cap doubled (@p first when 0) until it holds @p need, *cap updated.
 * NULL when out of memory (or @p need is beyond doubling): then @p data and *cap stay
 * as they were, and the caller still owns and frees @p data.
 */
void *ksfi_grow(void *data, size_t *cap, size_t need, size_t first);
/* @p a followed by @p b in a new string (NULL when out of memory). */
char *ksfi_strcat2(const char *a, const char *b);
void ksfi_free(void *ptr);

/*
 * Test hook: make allocation number @p nth (1-based, counted from this call) and every
 * later one fail when @p sticky, or only that one otherwise. 0 disarms. Not thread-safe
 * against concurrent allocations; tests arm it around single-threaded calls.
 */
void ksfi_alloc_fail_after(unsigned long nth, int sticky);

/* Allocations attempted since the hook was last armed, while it stays armed (for
 * sweeping failure points; arm it with a large @p nth to count without failing). */
unsigned long ksfi_alloc_count(void);

#endif
