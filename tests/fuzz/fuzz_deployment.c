/*
 * Fuzz target: deployment YAML (deployment.h), parsed from the memory buffer, then the start
 * order (which must hold every service once) and the service lookup.
 */
#include "fuzz_common.h"

#include "ocibuild/deployment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cleanup_deployment obi_deployment *deployment = NULL;
    cleanup_error obi_error *err = NULL;
    int r = obi_deployment_parse((const char *)data, size, "fuzz.yaml", &deployment, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r < 0) {
        FUZZ_ASSERT(deployment == NULL);
        return 0;
    }
    cleanup_free const obi_service **order = NULL;
    r = obi_deployment_start_order(deployment, &order, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r < 0)
        return 0;
    for (size_t i = 0; i < deployment->service_count; i++) {
        FUZZ_ASSERT(obi_deployment_find(deployment, order[i]->name) == order[i]);
        for (size_t j = 0; j < i; j++)
            FUZZ_ASSERT(order[j] != order[i]);
    }
    return 0;
}
