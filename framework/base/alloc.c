#include "base/alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Failure injection state: 0 = disarmed. */
static atomic_ulong fail_at;
static atomic_ulong alloc_count;
static atomic_int fail_sticky;

void
ksfi_alloc_fail_after(unsigned long nth, int sticky)
{
    atomic_store(&alloc_count, 0);
    atomic_store(&fail_sticky, sticky);
    atomic_store(&fail_at, nth);
}

unsigned long
ksfi_alloc_count(void)
{
    return atomic_load(&alloc_count);
}

/* True when the allocation being attempted now must fail. Disarmed (always, outside
 * tests) it is one relaxed load: counting every allocation was an atomic increment of
 * one shared cache line by every thread that allocates, several times per request. */
static int
should_fail(void)
{
    unsigned long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
    if (at == 0) {
        return 0;
    }
    unsigned long n = atomic_fetch_add(&alloc_count, 1) + 1;
    return atomic_load(&fail_sticky) ? n >= at : n == at;
}

void *
ksfi_malloc(size_t size)
{
    return should_fail() ? NULL : malloc(size ? size : 1);
}

void *
ksfi_calloc(size_t count, size_t size)
{
    return should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1);
}

void *
ksfi_realloc(void *ptr, size_t size)
{
    return should_fail() ? NULL : realloc(ptr, size ? size : 1);
}

void *
ksfi_memdup(const void *p, size_t len)
{
    char *copy = ksfi_malloc(len + 1);
    if (copy) {
        if (len) {
            memcpy(copy, p, len);
        }
        copy[len] = '\0';
    }
    return copy;
}

char *
ksfi_strndup(const char *s, size_t len)
{
    return ksfi_memdup(s, len);
}

char *
ksfi_strdup(const char *s)
{
    return ksfi_memdup(s, strlen(s));
}

void *
ksfi_grow(void *data, size_t *cap, size_t need, size_t first)
{
    size_t c = *cap ? *cap : first;
    while (c < need) {
        if (c > SIZE_MAX / 2) {
            return NULL;
        }
        c *= 2;
    }
    void *grown = ksfi_realloc(data, c);
    if (grown) {
        *cap = c;
    }
    return grown;
}

char *
ksfi_strcat2(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = ksfi_malloc(na + nb + 1);
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb + 1);
    }
    return s;
}

void
ksfi_free(void *ptr)
{
    free(ptr);
}
