#include "controller_slim.h"

#include "controller_pod.h"
#include "json_field.h"

#include <stdbool.h>
#include <string.h>

/* Shares src[key] with dst when present (jansson values are reference
 * counted; nothing modifies cached objects). */
static int copy_key(json_t *dst, const json_t *src, const char *key)
{
	json_t *v = json_object_get(src, key);

	if (!v)
		return 0;
	return json_object_set(dst, key, v);
}

static int copy_keys(json_t *dst, const json_t *src, const char *const *keys)
{
	for (; *keys; keys++) {
		if (copy_key(dst, src, *keys) < 0)
			return -1;
	}
	return 0;
}

static json_t *slim_metadata(const json_t *meta, const char *const *keys)
{
	json_t *m = json_object();

	if (!m || copy_keys(m, meta, keys) < 0) {
		json_decref(m);
		return NULL;
	}
	return m;
}

static const char *const request_meta_keys[] = { "name", "namespace", "uid",
	"resourceVersion", "generation", "deletionTimestamp", NULL };
static const char *const request_top_keys[] = { "apiVersion", "kind", "spec", "status", NULL };

json_t *controller_slim_request(json_t *nbr)
{
	json_t *out = json_object();

	if (!out || copy_keys(out, nbr, request_top_keys) < 0 ||
	    json_object_set_new(out, "metadata", slim_metadata(json_object_get(nbr, "metadata"),
	        request_meta_keys)) < 0) {
		json_decref(out);
		return NULL;
	}
	return out;
}

static const char *const pod_meta_keys[] = { "name", "namespace", "uid", "resourceVersion",
	"deletionTimestamp", NULL };
static const char *const pod_top_keys[] = { "apiVersion", "kind", NULL };
static const char *const pod_status_keys[] = { "phase", "reason", "message", "podIP", NULL };
static const char *const condition_keys[] = { "type", "status", "reason", "message",
	"lastTransitionTime", NULL };
static const char *const container_keys[] = { "name", "ready", "state", NULL };

/* Keeps the elements of an array of objects, each cut to keys; when
 * types is non-NULL only elements whose "type" is listed. */
static json_t *slim_array(const json_t *arr, const char *const *keys,
    const char *const *types)
{
	json_t *out = json_array();
	size_t i;
	json_t *el;

	if (!out)
		return NULL;
	json_array_foreach(arr, i, el) {
		const char *type = json_string_value(json_object_get(el, "type"));
		bool wanted = !types;
		json_t *copy;

		for (const char *const *t = types; t && *t && type; t++)
			wanted |= strcmp(*t, type) == 0;
		if (!wanted)
			continue;
		copy = json_object();
		if (!copy || copy_keys(copy, el, keys) < 0 || json_array_append_new(out, copy) < 0) {
			json_decref(copy);
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

static json_t *slim_owner_refs(const json_t *refs)
{
	json_t *out = json_array();
	size_t i;
	json_t *ref;

	if (!out)
		return NULL;
	/* Only the controller reference matters to us. */
	json_array_foreach(refs, i, ref) {
		if (json_is_true(json_object_get(ref, "controller")) &&
		    json_array_append(out, ref) < 0) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

static json_t *slim_pod_status(const json_t *st)
{
	static const char *const types[] = { "PodScheduled", "Ready", "DisruptionTarget", NULL };
	json_t *out = json_object();

	if (!out || copy_keys(out, st, pod_status_keys) < 0)
		goto fail;
	if (json_object_get(st, "conditions") &&
	    json_object_set_new(out, "conditions", slim_array(json_object_get(st, "conditions"),
	        condition_keys, types)) < 0)
		goto fail;
	if (json_object_get(st, "containerStatuses") &&
	    json_object_set_new(out, "containerStatuses",
	        slim_array(json_object_get(st, "containerStatuses"), container_keys, NULL)) < 0)
		goto fail;
	return out;
fail:
	json_decref(out);
	return NULL;
}

static int slim_annotations(json_t *m, const json_t *pod)
{
	const char *evict = controller_pod_safe_to_evict(pod);
	const char *host_key = controller_pod_host_key(pod);
	json_t *ann;

	if (!*evict && !*host_key)
		return 0;
	ann = json_object();
	if (!ann || json_object_set_new(m, "annotations", ann) < 0)
		return -1;
	if (*evict && json_object_set_new(ann, CONTROLLER_POD_SAFE_TO_EVICT_ANNOTATION,
	    json_string(evict)) < 0)
		return -1;
	if (*host_key && json_object_set_new(ann, CONTROLLER_POD_HOST_KEY_ANNOTATION,
	    json_string(host_key)) < 0)
		return -1;
	return 0;
}

json_t *controller_slim_pod(json_t *pod)
{
	const json_t *meta = json_object_get(pod, "metadata");
	json_t *out = json_object();
	json_t *m = slim_metadata(meta, pod_meta_keys);

	if (!out || !m)
		goto fail;
	if (json_object_get(meta, "ownerReferences") &&
	    json_object_set_new(m, "ownerReferences",
	        slim_owner_refs(json_object_get(meta, "ownerReferences"))) < 0)
		goto fail;
	/* Of the annotations only the one the controller keeps up to date and
	 * the host key it published into the builder's status. */
	if (slim_annotations(m, pod) < 0)
		goto fail;
	if (copy_keys(out, pod, pod_top_keys) < 0 || json_object_set(out, "metadata", m) < 0)
		goto fail;
	if (json_object_get(pod, "status") &&
	    json_object_set_new(out, "status", slim_pod_status(json_object_get(pod, "status"))) < 0)
		goto fail;
	json_decref(m);
	return out;
fail:
	json_decref(m);
	json_decref(out);
	return NULL;
}

json_t *controller_slim_request_transform(json_t *obj, void *data)
{
	(void)data;
	return controller_slim_request(obj);
}

json_t *controller_slim_pod_transform(json_t *obj, void *data)
{
	(void)data;
	return controller_slim_pod(obj);
}
