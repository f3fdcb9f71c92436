#include "controller_builder.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json_field.h"

/* The request fields that shape a builder pod, with the builder class that
 * set them (controller_class.h). timeoutSeconds is not one: it bounds a
 * request, not the builder that outlives it. */
static const char *const class_fields[] = { "image", "resources", "nodeSelector",
	"builderClass", "tolerations", "affinity", "systems", "supportedFeatures",
	"idleTimeoutSeconds" };

const char *controller_builder_identity(const json_t *obj)
{
	return json_field_str(json_object_get(obj, "spec"), "identity");
}

bool controller_builder_identity_valid(const char *identity)
{
	size_t n = strlen(identity);

	if (n == 0 || n > CONTROLLER_IDENTITY_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = identity[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return true;
}

static bool field_empty(const json_t *v)
{
	if (!v || json_is_null(v))
		return true;
	if (json_is_string(v))
		return !*json_string_value(v);
	if (json_is_array(v))
		return json_array_size(v) == 0;
	if (json_is_object(v)) {
		const char *k;
		json_t *sub;

		json_object_foreach((json_t *)v, k, sub) {
			if (!field_empty(sub))
				return false;
		}
		return true;
	}
	return false;
}

/* The fields of spec that shape the pod, without empty ones. */
static json_t *class_spec(const json_t *spec)
{
	json_t *out = json_object();

	if (!out)
		return NULL;
	for (size_t i = 0; i < sizeof(class_fields) / sizeof(class_fields[0]); i++) {
		const json_t *v = json_object_get(spec, class_fields[i]);

		if (field_empty(v))
			continue;
		if (json_object_set_new(out, class_fields[i], json_deep_copy(v)) < 0) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

int controller_builder_class(const json_t *request, char out[CONTROLLER_CLASS_LEN + 1])
{
	json_t *fields = class_spec(json_object_get(request, "spec"));
	char *text = fields ? json_dumps(fields, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	int rc = -1;

	if (text && EVP_Digest(text, strlen(text), md, &md_len, EVP_sha256(), NULL) &&
	    md_len * 2 >= CONTROLLER_CLASS_LEN) {
		for (int i = 0; i < CONTROLLER_CLASS_LEN / 2; i++)
			snprintf(out + 2 * i, 3, "%02x", md[i]);
		out[CONTROLLER_CLASS_LEN] = '\0';
		rc = 0;
	}
	free(text);
	json_decref(fields);
	return rc;
}

char *controller_builder_make_name(const char *identity, const char *class, unsigned index)
{
	return str_printf("%s%.*s-%s-%u", CONTROLLER_BUILDER_PREFIX,
	    CONTROLLER_BUILDER_NAME_IDENTITY_LEN, identity, class, index);
}

json_t *controller_builder_build(const char *ns, const char *name, const char *identity,
    const char *class, long slots, const json_t *request)
{
	json_t *spec = class_spec(json_object_get(request, "spec"));
	json_t *labels = json_pack("{s:s,s:s}", CONTROLLER_CLASS_LABEL, class,
	    CONTROLLER_IDENTITY_LABEL, identity);
	json_t *meta = json_pack("{s:s,s:o}", "namespace", ns, "labels", labels);
	json_t *b = NULL;

	if (!spec || !meta)
		goto fail;
	if (name ? json_object_set_new(meta, "name", json_string(name)) < 0 :
	    json_object_set_new(meta, "generateName",
	        json_string(CONTROLLER_BUILDER_POOL_PREFIX)) < 0)
		goto fail;
	if (json_object_set_new(spec, "identity", json_string(name ? identity : "")) < 0 ||
	    json_object_set_new(spec, "class", json_string(class)) < 0 ||
	    json_object_set_new(spec, "slots", json_integer(slots > 0 ? slots : 1)) < 0)
		goto fail;
	b = json_pack("{s:s,s:s,s:o,s:o}", "apiVersion", "nix.io/v1alpha1", "kind", "NixBuilder",
	    "metadata", meta, "spec", spec);
	return b;
fail:
	json_decref(spec);
	json_decref(meta);
	return NULL;
}

json_t *controller_builder_claim_patch(const json_t *builder, const char *identity)
{
	const char *rv = json_field_str(json_object_get(builder, "metadata"), "resourceVersion");

	if (!*rv || !controller_builder_identity_valid(identity))
		return NULL;
	return json_pack("{s:{s:s,s:{s:s}},s:{s:s}}",
	    "metadata", "resourceVersion", rv, "labels", CONTROLLER_IDENTITY_LABEL, identity,
	    "spec", "identity", identity);
}

long controller_builder_slots(const json_t *builder)
{
	json_int_t n = json_integer_value(json_object_get(json_object_get(builder, "spec"),
	    "slots"));

	return n > 0 ? (long)n : 1;
}
