/* A static-library member the program pulls in with KSF_USE_CONTROLLER(heroes). */
#include <ksf/ksf.h>

KSF_CONTROLLER_ANCHOR(heroes);

KSF_CONTROLLER_MESSAGE_PATTERN("heroes", "lib.hero", lib_hero)
{
    *reply = json_string("hero");
    return KSF_OK;
}
