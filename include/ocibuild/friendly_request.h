/*
 * Loading a BuildRequest from a JSON file in either form:
 *  - the protobuf JSON mapping of tvix.build.v1.BuildRequest (inputs as Node objects), or
 *  - the friendlier form for people: "inputs" as an object {name: "/host/path"} whose paths are
 *    imported into the store first, and "env" as an object {KEY: "plain string"} (merged into
 *    environment_vars). Inputs and env are sorted for you; every other field is as in the
 *    protobuf form. See README.md ("Build requests").
 */
#ifndef OCIBUILD_FRIENDLY_REQUEST_H
#define OCIBUILD_FRIENDLY_REQUEST_H

#include <jansson.h>

#include "ocibuild/error.h"
#include "ocibuild/ingest.h"
#include "ocibuild/request.h"
#include "ocibuild/store.h"

/* path "-" reads standard input. Host paths are imported into store; relative ones are
 * relative to the directory of path (to the current directory for "-"). progress (NULL: none)
 * hears about each import. */
int obi_friendly_request_load(const char *path, obi_store *store, const obi_progress *progress,
                              obi_build_request **out, obi_error **err);
/* The same from parsed JSON (json is not modified), relative host paths relative to base_dir
 * (NULL: the current directory). */
int obi_friendly_request_from_json_at(const json_t *json, const char *base_dir, obi_store *store,
                                      obi_build_request **out, obi_error **err);
/* obi_friendly_request_from_json_at with base_dir NULL. */
int obi_friendly_request_from_json(const json_t *json, obi_store *store, obi_build_request **out,
                                   obi_error **err);

#endif
