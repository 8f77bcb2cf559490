/*
 * What the two halves of the service spec code share and nobody else needs: the warnings list
 * that spec generation (service_spec.c) and bundle writing (service_bundle.c) both append to.
 */
#ifndef OCIBUILD_SERVICE_INTERNAL_H
#define OCIBUILD_SERVICE_INTERNAL_H

/* Appends a formatted line to a NULL-terminated warnings list (*warnings NULL: a new list),
 * which the caller frees with obi_strv_free. -ENOMEM leaves the list as it was. */
int obi_service_warnf(char ***warnings, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
