/* A static-library member nothing references: the linker leaves it out, constructor
 * and all, so its controller must not be found (the pitfall the anchor fixes). */
#include <ksf/ksf.h>

KSF_CONTROLLER_MESSAGE_PATTERN("orphans", "lib.orphan", lib_orphan)
{
    return KSF_OK;
}
