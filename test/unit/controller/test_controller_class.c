/* Builder classes, their pure parts: names, a request as its class shapes
 * it (what wins, features, the passes' numbers), the class hash telling
 * classes apart, and the builder pod a class gives (tolerations, affinity,
 * the entrypoint's systems and features). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "controller/controller_builder.h"
#include "controller/controller_class.h"
#include "controller/controller_pod.h"
#include "controller_test_fixtures.h"
#include "json_field.h"

#define ID_A "0123456789abcdef0123456789abcdef"

static const char request_text[] =
    "{\"metadata\":{\"name\":\"r1\",\"namespace\":\"ns\"},"
    "\"spec\":{\"sessionId\":\"s\",\"identity\":\"" ID_A "\",\"builderClass\":\"big\","
    "\"image\":\"mine:1\",\"timeoutSeconds\":60}}";

static const char class_text[] =
    "{\"metadata\":{\"name\":\"big\",\"namespace\":\"ns\"},\"spec\":{"
    "\"systems\":[\"x86_64-linux\",\"aarch64-linux\"],"
    "\"supportedFeatures\":[\"big-parallel\",\"kvm\"],\"mandatoryFeatures\":[\"benchmark\","
    "\"kvm\"],\"speedFactor\":3,\"slots\":2,\"maxBuildersPerIdentity\":5,"
    "\"idleTimeoutSeconds\":30,\"resources\":{\"requests\":{\"cpu\":\"8\"}},"
    "\"nodeSelector\":{\"pool\":\"big\"},"
    "\"tolerations\":[{\"key\":\"pool\",\"value\":\"big\",\"effect\":\"NoSchedule\"}],"
    "\"affinity\":{\"nodeAffinity\":{\"preferredDuringSchedulingIgnoredDuringExecution\":"
    "[{\"weight\":1,\"preference\":{\"matchExpressions\":[{\"key\":\"spot\","
    "\"operator\":\"Exists\"}]}}]}}}}";

static void test_names(void **state)
{
	(void)state;
	assert_true(controller_class_name_valid("big"));
	assert_true(controller_class_name_valid("aarch64-big2"));
	assert_true(controller_class_name_valid("a"));
	assert_false(controller_class_name_valid(""));
	assert_false(controller_class_name_valid("-big"));
	assert_false(controller_class_name_valid("big-"));
	assert_false(controller_class_name_valid("Big"));
	assert_false(controller_class_name_valid("big.one"));
	assert_false(controller_class_name_valid("big/../x"));
	assert_false(controller_class_name_valid(
	    "a123456789012345678901234567890123456789012345678901234567890123"));
}

static void test_apply(void **state)
{
	json_t *req = test_load_json(request_text), *cls = test_load_json(class_text);
	json_t *shaped, *spec, *features;

	(void)state;
	shaped = controller_class_apply(req, cls);
	assert_non_null(shaped);
	spec = json_object_get(shaped, "spec");
	/* The request's own fields stay unless the class says otherwise. */
	assert_string_equal(json_field_str(spec, "image"), "mine:1");
	assert_int_equal(json_integer_value(json_object_get(spec, "timeoutSeconds")), 60);
	assert_string_equal(json_field_str(spec, "builderClass"), "big");
	assert_string_equal(json_field_str(json_object_get(spec, "nodeSelector"), "pool"), "big");
	assert_int_equal(json_array_size(json_object_get(spec, "tolerations")), 1);
	assert_int_equal(json_array_size(json_object_get(spec, "systems")), 2);
	/* Mandatory features are supported ones too, each once. */
	features = json_object_get(spec, "supportedFeatures");
	assert_int_equal(json_array_size(features), 3);
	assert_string_equal(json_string_value(json_array_get(features, 0)), "big-parallel");
	assert_string_equal(json_string_value(json_array_get(features, 2)), "benchmark");
	assert_int_equal(controller_class_slots(shaped, 4), 2);
	assert_int_equal(controller_class_max_builders(shaped, 4), 5);
	/* The request itself is untouched. */
	assert_null(json_object_get(json_object_get(req, "spec"), "tolerations"));
	assert_int_equal(controller_class_slots(req, 4), 4);
	assert_int_equal(controller_class_max_builders(req, 0), 0);
	/* The warm pool is the class's, not a request's: absent, none. */
	assert_int_equal(controller_class_warm_pool_size(cls), 0);
	json_object_set_new(json_object_get(cls, "spec"), "warmPoolSize", json_integer(3));
	assert_int_equal(controller_class_warm_pool_size(cls), 3);
	json_object_set_new(json_object_get(cls, "spec"), "warmPoolSize", json_string("3"));
	assert_int_equal(controller_class_warm_pool_size(cls), 0);
	json_object_del(json_object_get(cls, "spec"), "warmPoolSize");

	/* A class that sets the image wins over the request's. */
	json_object_set_new(json_object_get(cls, "spec"), "image", json_string("admin:2"));
	json_decref(shaped);
	shaped = controller_class_apply(req, cls);
	assert_string_equal(json_field_str(json_object_get(shaped, "spec"), "image"), "admin:2");
	json_decref(shaped);

	/* An empty class: the request as it was, but for being a copy. */
	json_decref(cls);
	cls = test_load_json("{\"spec\":{}}");
	shaped = controller_class_apply(req, cls);
	assert_true(json_equal(shaped, req));
	json_decref(shaped);
	json_decref(cls);
	json_decref(req);
}

static void hash_of(const json_t *r, char out[CONTROLLER_CLASS_LEN + 1])
{
	assert_int_equal(controller_builder_class(r, out), 0);
}

static void test_classes_hash_apart(void **state)
{
	json_t *req = test_load_json(request_text), *cls = test_load_json(class_text);
	json_t *plain = test_load_json("{\"spec\":{\"sessionId\":\"s\",\"image\":\"mine:1\"}}");
	json_t *shaped = controller_class_apply(req, cls), *other;
	char a[CONTROLLER_CLASS_LEN + 1], b[CONTROLLER_CLASS_LEN + 1], c[CONTROLLER_CLASS_LEN + 1];

	(void)state;
	hash_of(shaped, a);
	hash_of(plain, b);
	assert_string_not_equal(a, b);
	/* Two class names with the same fields are two kinds of builder. */
	json_object_set_new(json_object_get(req, "spec"), "builderClass", json_string("big2"));
	other = controller_class_apply(req, cls);
	hash_of(other, c);
	assert_string_not_equal(a, c);
	json_decref(other);
	/* Slots and the bound per identity shape no pod. */
	json_object_set_new(json_object_get(req, "spec"), "builderClass", json_string("big"));
	json_object_set_new(json_object_get(cls, "spec"), "slots", json_integer(9));
	json_object_set_new(json_object_get(cls, "spec"), "maxBuildersPerIdentity",
	    json_integer(1));
	other = controller_class_apply(req, cls);
	hash_of(other, c);
	assert_string_equal(a, c);
	/* Empty lists count as absent: an old request's hash is kept. */
	json_object_set_new(json_object_get(plain, "spec"), "tolerations", json_array());
	hash_of(plain, c);
	assert_string_equal(b, c);
	json_decref(other);
	json_decref(plain);
	json_decref(shaped);
	json_decref(cls);
	json_decref(req);
}

static const json_t *env_var(const json_t *container, const char *name)
{
	size_t i;
	json_t *e;

	json_array_foreach(json_object_get(container, "env"), i, e) {
		if (strcmp(json_field_str(e, "name"), name) == 0)
			return e;
	}
	return NULL;
}

static void test_builder_and_pod_of_a_class(void **state)
{
	json_t *req = test_load_json(request_text), *cls = test_load_json(class_text);
	json_t *shaped = controller_class_apply(req, cls), *b, *pod, *ps, *c;
	char class[CONTROLLER_CLASS_LEN + 1];
	char *err = NULL;

	(void)state;
	hash_of(shaped, class);
	b = controller_builder_build("ns", "nb-x", ID_A, class,
	    controller_class_slots(shaped, 4), shaped);
	assert_non_null(b);
	assert_int_equal(controller_builder_slots(b), 2);
	assert_string_equal(json_field_str(json_object_get(b, "spec"), "builderClass"), "big");
	assert_int_equal(controller_class_idle_timeout_ms(b, 300000), 30000);
	assert_null(json_object_get(json_object_get(b, "spec"), "maxBuildersPerIdentity"));
	json_object_set_new(json_object_get(b, "metadata"), "uid", json_string("u-1"));
	pod = controller_pod_build_for_builder(b, &test_pod_options, "hk", "ecdsa AAAA", &err);
	assert_non_null(pod);
	ps = json_object_get(pod, "spec");
	assert_string_equal(json_field_str(json_object_get(ps, "nodeSelector"), "pool"), "big");
	assert_string_equal(json_field_str(json_array_get(json_object_get(ps, "tolerations"), 0),
	    "effect"), "NoSchedule");
	assert_non_null(json_object_get(json_object_get(ps, "affinity"), "nodeAffinity"));
	c = json_array_get(json_object_get(ps, "containers"), 0);
	assert_string_equal(json_field_str(json_object_get(json_object_get(c, "resources"),
	    "requests"), "cpu"), "8");
	assert_string_equal(json_field_str(env_var(c, "NRBC_BUILDER_SYSTEMS"), "value"),
	    "x86_64-linux aarch64-linux");
	assert_string_equal(json_field_str(env_var(c, "NRBC_BUILDER_FEATURES"), "value"),
	    "big-parallel kvm benchmark");
	json_decref(pod);

	/* A feature the entrypoint could not quote is left out, not passed on. */
	json_array_append_new(json_object_get(json_object_get(b, "spec"), "supportedFeatures"),
	    json_string("x y"));
	pod = controller_pod_build_for_builder(b, &test_pod_options, "hk", "ecdsa AAAA", &err);
	c = json_array_get(json_object_get(json_object_get(pod, "spec"), "containers"), 0);
	assert_null(env_var(c, "NRBC_BUILDER_FEATURES"));
	assert_non_null(env_var(c, "NRBC_BUILDER_SYSTEMS"));
	json_decref(pod);
	json_decref(b);

	/* The default class: none of it. */
	b = controller_builder_build("ns", "nb-y", ID_A, class, 4, req);
	json_object_set_new(json_object_get(b, "metadata"), "uid", json_string("u-2"));
	json_object_del(json_object_get(b, "spec"), "builderClass");
	pod = controller_pod_build_for_builder(b, &test_pod_options, "hk", "ecdsa AAAA", &err);
	ps = json_object_get(pod, "spec");
	assert_null(json_object_get(ps, "tolerations"));
	assert_null(json_object_get(ps, "affinity"));
	c = json_array_get(json_object_get(ps, "containers"), 0);
	assert_null(env_var(c, "NRBC_BUILDER_SYSTEMS"));
	assert_null(env_var(c, "NRBC_BUILDER_FEATURES"));
	assert_int_equal(controller_class_idle_timeout_ms(b, 300000), 300000);
	json_decref(pod);
	json_decref(b);
	json_decref(shaped);
	json_decref(cls);
	json_decref(req);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_apply),
		cmocka_unit_test(test_classes_hash_apart),
		cmocka_unit_test(test_builder_and_pod_of_a_class),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
