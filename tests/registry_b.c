/* Handlers of test_registry in a third translation unit. */
#include <ksf/ksf.h>

KSF_MESSAGE_PATTERN("reg.b1", reg_b1)
{
    *reply = json_string("b1");
    return KSF_OK;
}

KSF_CONTROLLER_EVENT_PATTERN("ctl.x", "reg.x2", reg_x2)
{
    return KSF_OK;
}

const char *const registry_b_file = __FILE__;
const int registry_b_dup_line = __LINE__ + 1;
KSF_CONTROLLER_MESSAGE_PATTERN("dup", "reg.dup", reg_dup_b)
{
    return KSF_OK;
}
