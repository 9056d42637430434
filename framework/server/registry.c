/*
 * The handler registry the KSF_*_PATTERN macros feed. Each macro defines a static
 * ksf_handler_def in the user's module and a constructor that links it here before
 * main() runs, so handlers in any number of translation units (and shared objects)
 * reach the library without a hand-maintained list and without allocating.
 */
#include "base/alloc.h"
#include "base/errinfo.h"
#include "server/pipeline.h"
#include "server/server.h"

#include <string.h>

/* Guards the list: constructors of dlopen'ed objects may run on any thread. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ksf_handler_def *registry_head;
static ksf_handler_def **registry_tail = &registry_head;

void
ksf_registry_add(ksf_handler_def *def)
{
    if (!def) {
        return;
    }
    pthread_mutex_lock(&registry_lock);
    bool present = false;
    for (ksf_handler_def *d = registry_head; d; d = d->next) {
        present = present || d == def;
    }
    if (!present) { /* keep definition order, so errors name the first one first */
        def->next = NULL;
        *registry_tail = def;
        registry_tail = &def->next;
    }
    pthread_mutex_unlock(&registry_lock);
}

static bool
selected(const ksf_handler_def *def, const char *controller)
{
    return !controller || (def->controller && !strcmp(def->controller, controller));
}

/* Check the selection before registering any of it: mount is all or nothing. */
static ksf_err
check_selection(ksf_server *srv, const char *controller, size_t *count, ksf_errinfo *ei)
{
    *count = 0;
    for (const ksf_handler_def *d = registry_head; d; d = d->next) {
        if (!selected(d, controller)) {
            continue;
        }
        ++*count;
        for (const ksf_handler_def *e = registry_head; e != d; e = e->next) {
            if (selected(e, controller) && !strcmp(e->pattern, d->pattern)) {
                return ksfi_fail(
                    ei, KSF_EEXIST,
                    "pattern \"%s\" has two handlers: %s:%d and %s:%d; remove "
                    "one, or put them in different controllers",
                    d->pattern, e->file, e->line, d->file, d->line);
            }
        }
        const ksfi_handler *h = ksfi_server_find(srv, d->pattern);
        if (h) {
            return ksfi_fail(
                ei, KSF_EEXIST,
                "pattern \"%s\" has two handlers: %s:%d and %s:%d; remove one",
                d->pattern, h->file ? h->file : "ksf_server_on_message/on_event", h->line,
                d->file, d->line);
        }
    }
    return KSF_OK;
}

/* pipeline: per-controller middlewares find a handler's controller here. */
static const char *
registry_controller(ksf_handler_fn fn)
{
    const char *name = NULL;
    pthread_mutex_lock(&registry_lock);
    for (const ksf_handler_def *d = registry_head; d && !name; d = d->next) {
        name = d->fn == fn ? d->controller : NULL;
    }
    pthread_mutex_unlock(&registry_lock);
    return name;
}

/* pipeline: @p state becomes the handlers' user pointer (ksf_ctx_controller). */
static ksf_err
mount(ksf_server *srv, const char *controller, void *state, ksf_errinfo *ei)
{
    if (!srv) {
        return ksfi_fail(ei, KSF_EINVAL, "ksf_server_mount: srv is NULL");
    }
    pthread_mutex_lock(&registry_lock);
    size_t count;
    size_t before = srv->nhandlers;
    ksf_err e = check_selection(srv, controller, &count, ei);
    if (!e && count == 0) {
        e = controller
                ? ksfi_fail(ei, KSF_ENOENT,
                            "controller \"%s\" has no handlers in this program; check "
                            "its name, and if its handlers live in a static "
                            "library, use KSF_CONTROLLER_ANCHOR/KSF_USE_CONTROLLER",
                            controller)
                : ksfi_fail(ei, KSF_ENOENT,
                            "no KSF_*_PATTERN handler is linked into this program");
    }
    for (const ksf_handler_def *d = registry_head; d && !e; d = d->next) {
        if (selected(d, controller)) {
            e = ksfi_server_add_handler(srv, d->pattern, d->kind, d->flags, d->fn, state,
                                        d->file, d->line, ei);
        }
    }
    while (e && srv->nhandlers > before) { /* roll back a partial mount */
        ksfi_free(srv->handlers[--srv->nhandlers].pattern);
    }
    pthread_mutex_unlock(&registry_lock);
    return e;
}

ksf_err
ksf_server_mount(ksf_server *srv, const char *controller, ksf_errinfo *ei)
{
    return mount(srv, controller, NULL, ei);
}

ksf_err
ksf_server_mount_controller(ksf_server *srv, const char *controller, void *state,
                            ksf_errinfo *ei)
{
    return mount(srv, controller, state, ei);
}

/* ---- pipeline: middleware registration and the chains (pipeline.h) ---------------- */

static ksf_err
use(ksf_server *srv, ksfi_use_scope scope, const char *name, const ksf_middleware *mw,
    void *user, ksf_errinfo *ei)
{
    static const char *const what[] = {"ksf_server_use", "ksf_server_use_controller",
                                       "ksf_server_use_pattern"};
    if (!srv) {
        return ksfi_fail(ei, KSF_EINVAL, "%s: srv is NULL", what[scope]);
    }
    bool open = atomic_load(&srv->state) == KSFI_SRV_NEW;
    return ksfi_pipeline_add(&srv->pipeline, open, scope, name, mw, user, what[scope],
                             ei);
}

ksf_err
ksf_server_use(ksf_server *srv, const ksf_middleware *mw, void *user, ksf_errinfo *ei)
{
    return use(srv, KSFI_USE_GLOBAL, NULL, mw, user, ei);
}

ksf_err
ksf_server_use_controller(ksf_server *srv, const char *controller,
                          const ksf_middleware *mw, void *user, ksf_errinfo *ei)
{
    return use(srv, KSFI_USE_CONTROLLER, controller, mw, user, ei);
}

ksf_err
ksf_server_use_pattern(ksf_server *srv, const char *pattern, const ksf_middleware *mw,
                       void *user, ksf_errinfo *ei)
{
    return use(srv, KSFI_USE_PATTERN, pattern, mw, user, ei);
}

ksf_err
ksfi_server_freeze_pipeline(ksf_server *srv, ksf_errinfo *ei)
{
    if (!srv->pipeline) {
        return KSF_OK; /* no middleware: every chain is empty */
    }
    const char **controllers = ksfi_calloc(srv->nhandlers + 1, sizeof *controllers);
    if (!controllers) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory building middleware chains");
    }
    for (size_t i = 0; i < srv->nhandlers; i++) {
        const ksfi_handler *h = &srv->handlers[i];
        /* Macro handlers (those with a file) belong to their controller. */
        controllers[i] = h->file ? registry_controller(h->fn) : NULL;
    }
    ksf_err e = ksfi_pipeline_freeze(srv->pipeline, srv->handlers, srv->nhandlers,
                                     controllers, ei);
    ksfi_free(controllers);
    return e;
}
