/* Reading fields of parsed JSON (Kubernetes objects) without NULL checks at
 * every step: absent or mistyped fields read as empty. */
#ifndef NRBC_JSON_FIELD_H
#define NRBC_JSON_FIELD_H

#include <jansson.h>

/* obj[key] as a string; "" when obj is NULL, the key is absent or not a string. */
const char *json_field_str(const json_t *obj, const char *key);

#endif
