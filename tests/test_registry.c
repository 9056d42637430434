/*
 * The handler registry: macro handlers in three translation units (this one,
 * registry_a.c, registry_b.c) and in a static library (registry_lib_*.c), mounted by
 * controller. No broker: mounting only fills the server's handler table.
 */
#include "server/server.h"

#include "suite.h"

#include <check.h>
#include <ksf/ksf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

KSF_USE_CONTROLLER(heroes);

extern const int registry_a_dup_line, registry_b_dup_line;
extern const char *const registry_a_file, *const registry_b_file;

KSF_MESSAGE_PATTERN("reg.main", reg_main)
{
    *reply = json_string("main");
    return KSF_OK;
}

static ksf_server *
server(void)
{
    ksf_config *cfg = NULL;
    ksf_server *srv = NULL;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ck_assert_int_eq(ksf_server_new(&srv, cfg, NULL), KSF_OK);
    ksf_config_destroy(cfg);
    return srv;
}

/* A new server with @p controller's handlers mounted (KSF_OK, or the test fails). */
static ksf_server *
mounted(const char *controller)
{
    ksf_server *srv = server();
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_server_mount(srv, controller, &ei) == KSF_OK, "%s", ei.text);
    return srv;
}

/* Call the mounted handler of @p pattern and compare its string reply. */
static void
assert_handler(ksf_server *srv, const char *pattern, ksf_handler_kind kind,
               const char *reply_text)
{
    const ksfi_handler *h = ksfi_server_find(srv, pattern);
    ck_assert_msg(h != NULL, "%s not mounted", pattern);
    ck_assert_int_eq(h->kind, kind);
    json_t *reply = NULL;
    ck_assert_int_eq(h->fn(NULL, NULL, &reply), KSF_OK);
    if (reply_text) {
        ck_assert_str_eq(json_string_value(reply), reply_text);
    }
    json_decref(reply);
}

KSFT_TEST(test_registry_default_controller_spans_translation_units, 10)
{
    ksf_server *srv = mounted(KSF_DEFAULT_CONTROLLER);
    ksf_errinfo ei = {0};
    ck_assert_uint_eq(srv->nhandlers, 4);
    assert_handler(srv, "reg.main", KSF_HANDLER_MESSAGE, "main");
    assert_handler(srv, "reg.a1", KSF_HANDLER_MESSAGE, "a1");
    assert_handler(srv, "reg.a2", KSF_HANDLER_EVENT, NULL);
    assert_handler(srv, "reg.b1", KSF_HANDLER_MESSAGE, "b1");
    ck_assert_ptr_null(ksfi_server_find(srv, "reg.x1"));
    /* Mounting it again would give every pattern two handlers. */
    ck_assert_int_eq(ksf_server_mount(srv, KSF_DEFAULT_CONTROLLER, &ei), KSF_EEXIST);
    ck_assert_uint_eq(srv->nhandlers, 4); /* all or nothing */
    ksf_server_destroy(srv);
}
END_TEST

KSFT_TEST(test_registry_named_controller, 10)
{
    ksf_server *srv = mounted("ctl.x");
    ksf_errinfo ei = {0};
    ck_assert_uint_eq(srv->nhandlers, 2);
    assert_handler(srv, "reg.x1", KSF_HANDLER_MESSAGE, "x1");
    assert_handler(srv, "reg.x2", KSF_HANDLER_EVENT, NULL);
    ck_assert_int_eq(ksf_server_mount(srv, "no.such", &ei), KSF_ENOENT);
    ck_assert_ptr_nonnull(strstr(ei.text, "controller \"no.such\" has no handlers"));
    ksf_server_destroy(srv);
}
END_TEST

KSFT_TEST(test_registry_duplicate_pattern, 10)
{
    ksf_server *srv = server();
    ksf_errinfo ei = {0};
    char want[KSF_ERRINFO_TEXT_SIZE];
    snprintf(want, sizeof want,
             "pattern \"reg.dup\" has two handlers: %s:%d and %s:%d; remove one, or put "
             "them in different controllers",
             registry_a_file, registry_a_dup_line, registry_b_file, registry_b_dup_line);
    ck_assert_int_eq(ksf_server_mount(srv, "dup", &ei), KSF_EEXIST);
    ck_assert_int_eq(ei.code, KSF_EEXIST);
    ck_assert_str_eq(ei.text, want);
    ck_assert_uint_eq(srv->nhandlers, 0);
    ck_assert_int_eq(ksf_server_mount(srv, NULL, &ei), KSF_EEXIST); /* all controllers */
    ck_assert_str_eq(ei.text, want);
    /* A by-call registration clashing with a macro one is named too. */
    ck_assert_int_eq(ksf_server_on_message(srv, "reg.b1", reg_main, NULL, NULL), KSF_OK);
    ck_assert_int_eq(ksf_server_mount(srv, KSF_DEFAULT_CONTROLLER, &ei), KSF_EEXIST);
    ck_assert_ptr_nonnull(strstr(ei.text, "pattern \"reg.b1\" has two handlers"));
    ck_assert_ptr_nonnull(strstr(ei.text, "registry_b.c:"));
    ksf_server_destroy(srv);
}
END_TEST

KSFT_TEST(test_registry_static_library, 10)
{
    ksf_server *srv = mounted("heroes");
    ksf_errinfo ei = {0};
    assert_handler(srv, "lib.hero", KSF_HANDLER_MESSAGE, "hero");
    /* The un-anchored member was never linked: its constructor never ran. */
    ck_assert_int_eq(ksf_server_mount(srv, "orphans", &ei), KSF_ENOENT);
    ck_assert_ptr_nonnull(strstr(ei.text, "KSF_CONTROLLER_ANCHOR"));
    ksf_server_destroy(srv);
}
END_TEST

KSFT_TEST(test_registry_add_is_idempotent, 10)
{
    static ksf_handler_def def = {"idem", "reg.idem", KSF_HANDLER_EVENT, NULL, "f.c",
                                  1,      NULL};
    ksf_registry_add(&def);
    ksf_registry_add(&def);
    ksf_registry_add(NULL);
    ksf_server *srv = server();
    ksf_errinfo ei = {0};
    /* fn NULL is refused at mount rather than crashing a worker later. */
    ck_assert_int_eq(ksf_server_mount(srv, "idem", &ei), KSF_EINVAL);
    ck_assert_uint_eq(srv->nhandlers, 0);
    ksf_server_destroy(srv);
}
END_TEST

KSFT_MAIN("registry")
