#include "controller_class.h"

#include <string.h>

#include "dns_label.h"
#include "json_field.h"

/* What a class gives a request's spec, under the same names. */
static const char *const copied_fields[] = { "image", "resources", "nodeSelector",
	"tolerations", "affinity", "systems", "idleTimeoutSeconds", "slots",
	"maxBuildersPerIdentity" };

const char *controller_class_of(const json_t *obj)
{
	return json_field_str(json_object_get(obj, "spec"), "builderClass");
}

bool controller_class_name_valid(const char *name)
{
	return dns_label_valid(name, strlen(name));
}

static bool in_array(const json_t *a, const char *s)
{
	size_t i;
	json_t *v;

	json_array_foreach(a, i, v) {
		if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
			return true;
	}
	return false;
}

/* supportedFeatures with the mandatory ones added: a builder must support
 * what it insists on. NULL when the class names none. */
static json_t *class_features(const json_t *cspec)
{
	const json_t *lists[] = { json_object_get(cspec, "supportedFeatures"),
		json_object_get(cspec, "mandatoryFeatures") };
	json_t *out = json_array();
	size_t i;
	json_t *v;

	if (!out)
		return NULL;
	for (size_t l = 0; l < 2; l++) {
		json_array_foreach(lists[l], i, v) {
			if (!json_is_string(v) || in_array(out, json_string_value(v)))
				continue;
			if (json_array_append(out, v) < 0) {
				json_decref(out);
				return NULL;
			}
		}
	}
	return out;
}

json_t *controller_class_apply(const json_t *request, const json_t *cls)
{
	const json_t *cspec = json_object_get(cls, "spec");
	json_t *out = json_deep_copy(request);
	json_t *spec = json_object_get(out, "spec");
	json_t *features;

	if (!out || !json_is_object(spec)) {
		json_decref(out);
		return NULL;
	}
	for (size_t i = 0; i < sizeof(copied_fields) / sizeof(copied_fields[0]); i++) {
		const json_t *v = json_object_get(cspec, copied_fields[i]);

		if (v && !json_is_null(v) &&
		    json_object_set_new(spec, copied_fields[i], json_deep_copy(v)) < 0)
			goto fail;
	}
	features = class_features(cspec);
	if (!features)
		goto fail;
	if (json_array_size(features) == 0) {
		json_decref(features);
		return out;
	}
	if (json_object_set_new(spec, "supportedFeatures", features) < 0)
		goto fail;
	return out;
fail:
	json_decref(out);
	return NULL;
}

static long spec_long(const json_t *obj, const char *field, long def)
{
	const json_t *v = json_object_get(json_object_get(obj, "spec"), field);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (long)json_integer_value(v) :
	    def;
}

long controller_class_slots(const json_t *request, long def)
{
	return spec_long(request, "slots", def);
}

long controller_class_max_builders(const json_t *request, long def)
{
	return spec_long(request, "maxBuildersPerIdentity", def);
}

long controller_class_warm_pool_size(const json_t *cls)
{
	return spec_long(cls, "warmPoolSize", 0);
}

uint64_t controller_class_idle_timeout_ms(const json_t *builder, uint64_t def)
{
	long s = spec_long(builder, "idleTimeoutSeconds", 0);

	return s > 0 ? (uint64_t)s * 1000 : def;
}
