/*
 * A guard (NestJS's CanActivate + @UseGuards): every request must carry the header
 * x-api-key with the service's key; any other gets NestJS's guard refusal,
 * {"status":"error","message":"Forbidden resource"}, and never reaches a handler.
 *
 * Usage: pipeline_guard [KEY]   (brokers from KSF_BROKERS; KEY defaults to s3cret)
 */
#include "example.h"

#include <string.h>

static ksf_err
api_key_guard(ksf_ctx *ctx, json_t **data, void *key)
{
    (void)data;
    size_t len = 0;
    const char *got = ksf_ctx_header(ctx, "x-api-key", &len);
    if (!got || len != strlen(key) || memcmp(got, key, len)) {
        return ksf_ctx_forbid(ctx);
    }
    return KSF_OK;
}

static const ksf_middleware api_key = {"api_key", api_key_guard, NULL};
static const char *key = "s3cret";

KSF_MESSAGE_PATTERN("orders.get", get_order)
{
    *reply = json_pack("{s:i, s:s}", "id", 1, "status", "shipped");
    return *reply ? KSF_OK : KSF_ENOMEM;
}

static ksf_err
setup(ksf_server *srv, ksf_errinfo *ei)
{
    return ksf_server_use(srv, &api_key, (void *)key, ei); /* every pattern */
}

int
main(int argc, char **argv)
{
    if (argc > 1) {
        key = argv[1];
    }
    return example_run("pipeline_guard", true, setup);
}
