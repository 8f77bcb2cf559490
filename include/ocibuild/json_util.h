/*
 * Small jansson helpers shared by the JSON codecs: a cleanup attribute for json_t locals and
 * typed getters whose errors name the key.
 */
#ifndef OCIBUILD_JSON_UTIL_H
#define OCIBUILD_JSON_UTIL_H

#include <jansson.h>

static inline void obi_json_decrefp(json_t **j)
{
    if (*j)
        json_decref(*j);
}
#define cleanup_json __attribute__((cleanup(obi_json_decrefp)))

#endif
