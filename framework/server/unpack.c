/*
 * ksf_ctx_unpack: payload validation in jansson's idiom (NestJS's ValidationPipe).
 * json_unpack_ex says what was expected and where in the format it failed, but not
 * which field of the payload that was: the format is walked again, with the same
 * arguments, up to that position to name it as a path (items[1].sku).
 */
#include "base/errinfo.h"
#include "server/ctx.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define KSFI_PATH_MAX 256
#define KSFI_DEPTH_MAX 32

typedef struct frame {
    bool object;
    size_t path_len; /* the path's length before this container's segment */
    const char *key; /* object: the key of the value being read */
    int index;       /* array: the index of the value being read */
} frame;

/* Append the segment of the value read next in @p top to @p path. */
static void
append(char *path, size_t size, const frame *top)
{
    size_t len = strlen(path);
    if (!top) {
        return; /* the root: "" (printed as "$") */
    }
    if (top->object) {
        snprintf(path + len, size - len, "%s%s", len ? "." : "",
                 top->key ? top->key : "?");
    } else {
        snprintf(path + len, size - len, "[%d]", top->index);
    }
}

/* Consume the value arguments of the unpack token at @p f (unless validating only);
 * returns the token's length. */
static size_t
skip_value_args(const char *f, size_t flags, va_list *ap)
{
    bool take = !(flags & JSON_VALIDATE_ONLY);
    switch (*f) {
    case 's':
        if (take) {
            (void)va_arg(*ap, const char **);
        }
        if (f[1] == '%') {
            if (take) {
                (void)va_arg(*ap, size_t *);
            }
            return 2;
        }
        return 1;
    case 'b':
    case 'i':
        if (take) {
            (void)va_arg(*ap, int *);
        }
        return 1;
    case 'I':
        if (take) {
            (void)va_arg(*ap, json_int_t *);
        }
        return 1;
    case 'f':
    case 'F':
        if (take) {
            (void)va_arg(*ap, double *);
        }
        return 1;
    case 'o':
    case 'O':
        if (take) {
            (void)va_arg(*ap, json_t **);
        }
        return 1;
    default: /* 'n' and what jansson already refused as a format error */
        return 1;
    }
}

/*
 * The payload path of the format token at 1-based @p pos: walk @p fmt with the
 * arguments @p ap. A closing brace or bracket names its container (strict mode's
 * "left unpacked"); any other token the value it reads.
 */
static void
path_at(const char *fmt, int pos, size_t flags, va_list *ap, char *path, size_t size)
{
    frame st[KSFI_DEPTH_MAX];
    int depth = 0;
    bool want_key = false;
    path[0] = '\0';
    for (size_t i = 0; fmt[i]; i++) {
        char c = fmt[i];
        frame *top = depth ? &st[depth - 1] : NULL;
        bool here = (int)i + 1 == pos;
        if (c == ' ' || c == '\t' || c == '\n' || c == ',' || c == ':' || c == '?' ||
            c == '*' || c == '!') {
            continue;
        }
        if ((c == '}' || c == ']') && top) {
            if (here) {
                return; /* the container itself: path is already its path */
            }
            path[top->path_len] = '\0';
            depth--;
            top = depth ? &st[depth - 1] : NULL;
            if (top) { /* the container was a value of its parent */
                top->index++;
                want_key = top->object;
            }
            continue;
        }
        if (top && top->object && want_key) {
            top->key = va_arg(*ap, const char *);
            want_key = false;
            if (here) {
                append(path, size, top);
                return;
            }
            continue;
        }
        if (here) {
            append(path, size, top);
            return;
        }
        if (c == '{' || c == '[') {
            if (depth == KSFI_DEPTH_MAX) {
                return;
            }
            size_t before = strlen(path);
            append(path, size, top);
            st[depth++] = (frame){c == '{', before, NULL, 0};
            want_key = c == '{';
            continue;
        }
        i += skip_value_args(fmt + i, flags, ap) - 1;
        if (top) {
            top->index++;
            want_key = top->object;
        }
    }
}

ksf_err
ksf_ctx_unpack(ksf_ctx *ctx, size_t flags, const char *fmt, ...)
{
    if (!ctx || !fmt || !ctx->in_call) {
        return KSF_ESTATE;
    }
    ksf_err d = ksfi_ctx_decode(ctx); /* a raw handler's payload, on first use */
    if (d) {
        return d;
    }
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    json_error_t jerr;
    memset(&jerr, 0, sizeof jerr);
    int r = -1;
    char path[KSFI_PATH_MAX] = "";
    char message[KSF_ERRINFO_TEXT_SIZE];
    if (!ctx->data) {
        snprintf(message, sizeof message,
                 "invalid payload: $: Expected JSON, got a binary value");
    } else if ((r = json_vunpack_ex((json_t *)ctx->data, &jerr, flags, fmt, ap))) {
        path_at(fmt, jerr.position, flags, &again, path, sizeof path);
        snprintf(message, sizeof message, "invalid payload: %s: %s", path[0] ? path : "$",
                 jerr.text);
    }
    va_end(again);
    va_end(ap);
    if (ctx->data && r == 0) {
        return KSF_OK;
    }
    if (ctx->data && strcmp(jerr.source, "<validation>") != 0) {
        /* The format or its arguments are wrong: the service's bug, not the caller's. */
        ksfi_log(ctx->log, KSF_LOG_ERROR, "server",
                 "ksf_ctx_unpack on %s: %s (%s, format position %d); fix the format",
                 ctx->topic, jerr.text, jerr.source, jerr.position);
        return KSF_EINVAL;
    }
    ksf_err e = ksf_ctx_reply_error(ctx, message);
    return e == KSF_ESTATE ? KSF_EREMOTE : e; /* already answered: still refused */
}
