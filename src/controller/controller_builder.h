/* NixBuilder objects as pure functions: a reusable builder pod bound to one
 * client identity and one builder class. Only templates and judgements
 * live here; which request a builder serves is the builder table's
 * business (controller_builders.h), the API calls the reconciler's. */
#ifndef NRBC_CONTROLLER_BUILDER_H
#define NRBC_CONTROLLER_BUILDER_H

#include <jansson.h>
#include <stdbool.h>

#define CONTROLLER_BUILDER_PREFIX "nb-"
#define CONTROLLER_BUILDER_POOL_PREFIX "nb-pool-"
#define CONTROLLER_BUILDER_LABEL "nix.io/builder"
#define CONTROLLER_IDENTITY_LABEL "nix.io/identity"
#define CONTROLLER_CLASS_LABEL "nix.io/class"
/* Hex digits of the class hash and of the identity in builder names. */
#define CONTROLLER_CLASS_LEN 10
#define CONTROLLER_BUILDER_NAME_IDENTITY_LEN 16
#define CONTROLLER_IDENTITY_MAX 63

/* spec.identity of a request or builder; "" when it has none. */
const char *controller_builder_identity(const json_t *obj);
/* True when identity is 1..63 lower-case hex digits (what the proxy
 * writes and the CRD admits). */
bool controller_builder_identity_valid(const char *identity);

/* The class hash of a request: of what shapes its pod (image, resources,
 * nodeSelector, tolerations, affinity, systems, features, idle timeout)
 * and the NixBuilderClass that set them, so requests asking for the same pod share a
 * class whatever their field order. Empty fields count as absent. 0, or -1
 * when out of memory. */
int controller_builder_class(const json_t *request, char out[CONTROLLER_CLASS_LEN + 1]);

/* "nb-<identity prefix>-<class>-<index>": the same identity, class and index
 * always give the same name, so two passes (or two controllers) that both
 * decide to make the first builder of an identity make one, and the second
 * create answers 409. Heap string. */
char *controller_builder_make_name(const char *identity, const char *class, unsigned index);

/* A NixBuilder for identity in namespace ns with the pod-shaping fields of
 * request (NULL: an empty spec) and slots sessions at once. name NULL
 * makes a warm-pool builder: generateName, empty identity. New reference,
 * NULL when out of memory. */
json_t *controller_builder_build(const char *ns, const char *name, const char *identity,
    const char *class, long slots, const json_t *request);

/* The merge patch that gives the unclaimed pool builder to identity, with
 * the builder's resourceVersion so a concurrent claim answers 409. */
json_t *controller_builder_claim_patch(const json_t *builder, const char *identity);

/* spec.slots, at least 1. */
long controller_builder_slots(const json_t *builder);

#endif
