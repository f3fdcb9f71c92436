/* What the controller's informers keep of each object: only the fields the
 * reconciler reads. A whole pod is tens of KiB once parsed by jansson
 * (managedFields, the full spec); the slim copies are a few hundred bytes
 * of JSON, which is what lets 5,000 requests fit in a small process. */
#ifndef NRBC_CONTROLLER_SLIM_H
#define NRBC_CONTROLLER_SLIM_H

#include <jansson.h>

/* NixBuildRequest: apiVersion, kind, metadata (name, namespace, uid,
 * resourceVersion, generation, deletionTimestamp), the whole spec and
 * status. New reference, NULL when out of memory. */
json_t *controller_slim_request(json_t *nbr);

/* Builder pod: apiVersion, kind, metadata (name, namespace, uid,
 * resourceVersion, deletionTimestamp, the controller ownerReference;
 * not labels: the owner says which request a pod serves), status (phase, reason, message, podIP, the PodScheduled
 * and Ready conditions, each container's name, ready and state). */
json_t *controller_slim_pod(json_t *pod);

/* Informer transform adapters (data unused). */
json_t *controller_slim_request_transform(json_t *obj, void *data);
json_t *controller_slim_pod_transform(json_t *obj, void *data);

#endif
