/* Handlers of test_registry in a second translation unit. */
#include <ksf/ksf.h>

KSF_MESSAGE_PATTERN("reg.a1", reg_a1)
{
    *reply = json_string("a1");
    return KSF_OK;
}

KSF_EVENT_PATTERN("reg.a2", reg_a2)
{
    return KSF_OK;
}

KSF_CONTROLLER_MESSAGE_PATTERN("ctl.x", "reg.x1", reg_x1)
{
    *reply = json_string("x1");
    return KSF_OK;
}

/* The same pattern as in registry_b.c, in the same controller: mount must refuse it. */
const char *const registry_a_file = __FILE__;
const int registry_a_dup_line = __LINE__ + 1;
KSF_CONTROLLER_MESSAGE_PATTERN("dup", "reg.dup", reg_dup_a)
{
    return KSF_OK;
}
