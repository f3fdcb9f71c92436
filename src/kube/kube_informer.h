/* List + watch with a local cache keyed by "namespace/name": relists on 410
 * Gone and emits the difference, resumes on disconnect with backoff, never
 * loses an event. Objects handed to handlers are borrowed for the call;
 * json_incref to keep one. The cache holds objects as compact text
 * (kube_store.h): what kube_informer_get returns is parsed on demand and
 * lives until the current event-loop turn ends. */
#ifndef NRBC_KUBE_INFORMER_H
#define NRBC_KUBE_INFORMER_H

#include <jansson.h>
#include <stdbool.h>

#include "kube_client.h"

struct kube_informer_handlers {
	void (*on_add)(json_t *obj, void *data);
	void (*on_update)(json_t *old_obj, json_t *new_obj, void *data);
	void (*on_delete)(json_t *obj, void *data);
	void (*on_synced)(void *data); /* once, after the first full list */
	/* Optional: what to cache (and hand to the handlers above) for an
	 * object as received: a new reference, e.g. a copy with only the
	 * fields the user reads, since whole objects cost tens of KiB each in
	 * jansson. It must keep metadata.name, namespace and resourceVersion.
	 * NULL (out of memory) caches the object whole. */
	json_t *(*transform)(json_t *obj, void *data);
};

struct kube_informer;

/* ns NULL: all namespaces. label_selector may be NULL. Handlers may be NULL.
 * Handlers see the cache already updated; they may start requests and may
 * destroy the informer (nothing more is called after that). Listed
 * objects get kind and apiVersion filled in. */
struct kube_informer *kube_informer_create(struct kube_client *c,
    const struct kube_resource *r, const char *ns, const char *label_selector,
    const struct kube_informer_handlers *handlers, void *data);
int kube_informer_start(struct kube_informer *inf);
void kube_informer_destroy(struct kube_informer *inf);

bool kube_informer_synced(const struct kube_informer *inf);
/* Lent until the current loop turn ends (json_incref to keep it); NULL when
 * absent. Each call parses anew: two calls give two objects. */
json_t *kube_informer_get(const struct kube_informer *inf, const char *ns, const char *name);
size_t kube_informer_size(const struct kube_informer *inf);
/* Bytes of object text the cache holds. */
size_t kube_informer_cached_bytes(const struct kube_informer *inf);
/* Calls fn for each cached object, borrowed for the call only (json_incref
 * to keep it); fn must not modify the informer. */
void kube_informer_foreach(const struct kube_informer *inf,
    void (*fn)(json_t *obj, void *data), void *data);

/* "ns/name" (or "name" for cluster-scoped) of an object, heap string. */
char *kube_object_key(const json_t *obj);
/* Shortcuts into metadata; "" when absent. */
const char *kube_object_name(const json_t *obj);
const char *kube_object_namespace(const json_t *obj);
const char *kube_object_uid(const json_t *obj);
const char *kube_object_resource_version(const json_t *obj);

#endif
