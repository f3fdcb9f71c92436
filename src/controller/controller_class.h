/* NixBuilderClass objects as pure functions. An admin's class names a kind
 * of builder (systems, features, pod shape, slots, how many one key may
 * hold); a NixBuildRequest names its class in spec.builderClass (the SSH
 * user name its client logged in with), and the passes work on the request
 * as its class shapes it. Which class object a name means is the
 * reconciler's business (it reads the class informer). */
#ifndef NRBC_CONTROLLER_CLASS_H
#define NRBC_CONTROLLER_CLASS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define CONTROLLER_REASON_UNKNOWN_CLASS "UnknownBuilderClass"

/* spec.builderClass of a request or builder; "" for the default class. */
const char *controller_class_of(const json_t *obj);
/* A DNS label: 1..63 of [a-z0-9-], not starting or ending with '-'. */
bool controller_class_name_valid(const char *name);

/* The request as class cls shapes it: a copy whose spec takes the class's
 * pod fields (image, resources, nodeSelector, tolerations, affinity), its
 * systems, its features (supported and mandatory: the builder's
 * system-features), its idle timeout, and, for the passes only, its slots
 * and the builders one identity may hold. A field the class leaves out
 * keeps the request's own. New reference, NULL when out of memory. */
json_t *controller_class_apply(const json_t *request, const json_t *cls);

/* Of a request as controller_class_apply made it: sessions per builder and
 * the builders one identity may hold (0: no bound), def when the class
 * does not say. */
long controller_class_slots(const json_t *request, long def);
long controller_class_max_builders(const json_t *request, long def);
/* Of a NixBuilderClass: how many unclaimed builders of it the warm pool
 * keeps (spec.warmPoolSize; 0 when it does not say). */
long controller_class_warm_pool_size(const json_t *cls);
/* Of a NixBuilder: its idle timeout, def when it has none of its own. */
uint64_t controller_class_idle_timeout_ms(const json_t *builder, uint64_t def);

#endif
