/* The NixBuilderClass list as client-config reads it: what parses, what is
 * skipped with a warning (names, malformed fields, too many), the
 * defaults, and --classes picking from the classes there are. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "client/client_class.h"

static const struct client_class_defaults defaults = { "nixbld", 4, 2 };

/* Parses text (which must be JSON) and returns the warnings (heap or NULL). */
static char *parse(const char *text, struct client_class_list *l)
{
	json_t *j = json_loads(text, 0, NULL);
	char *warnings = NULL;

	assert_non_null(j);
	assert_int_equal(client_class_list_parse(j, &defaults, l, &warnings), 0);
	json_decref(j);
	return warnings;
}

/* A list with one class named name and the given spec (JSON text). */
static char *parse_one(const char *name, const char *spec, struct client_class_list *l)
{
	char text[1024];

	snprintf(text, sizeof(text), "{\"items\":[{\"metadata\":{\"name\":\"%s\"},\"spec\":%s}]}",
	    name, spec);
	return parse(text, l);
}

/* The class's fields, all but the name. */
static void assert_class(const struct client_class *c, const char *systems,
    const char *supported, const char *mandatory, long speed_factor, long slots, long per_key)
{
	assert_string_equal(c->systems, systems);
	assert_string_equal(c->supported, supported);
	assert_string_equal(c->mandatory, mandatory);
	assert_int_equal(c->speed_factor, speed_factor);
	assert_int_equal(c->slots, slots);
	assert_int_equal(c->per_key, per_key);
}

static void test_not_a_list(void **state)
{
	/* NULL is what the kube client hands over for a body that is not JSON. */
	const char *texts[] = { NULL, "{\"items\":{\"a\":1}}", "[1,2]", "{}" };
	struct client_class_list l;
	char *warnings = NULL;

	assert_null(json_loads("{\"items\":[", 0, NULL));
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		json_t *j = texts[i] ? json_loads(texts[i], 0, NULL) : NULL;

		assert_int_equal(client_class_list_parse(j, &defaults, &l, &warnings), 0);
		assert_int_equal(l.n, 0);
		assert_non_null(strstr(warnings, "not a list object"));
		free(warnings);
		json_decref(j);
	}
}

static void test_no_items(void **state)
{
	struct client_class_list l;

	assert_null(parse("{\"kind\":\"NixBuilderClassList\",\"items\":[]}", &l));
	assert_int_equal(l.n, 0);
	assert_null(l.items);
	client_class_list_finish(&l);
}

static void test_all_fields(void **state)
{
	struct client_class_list l;
	char *features;

	assert_null(parse_one("big", "{\"systems\":[\"x86_64-linux\",\"aarch64-linux\"],"
	    "\"supportedFeatures\":[\"big-parallel\",\"kvm\"],\"mandatoryFeatures\":"
	    "[\"big-parallel\"],\"speedFactor\":2,\"slots\":8,\"maxBuildersPerIdentity\":3,"
	    "\"image\":\"x\",\"idleTimeoutSeconds\":60}", &l));
	assert_int_equal(l.n, 1);
	assert_string_equal(l.items[0].name, "big");
	assert_class(&l.items[0], "x86_64-linux,aarch64-linux", "big-parallel,kvm",
	    "big-parallel", 2, 8, 3);
	assert_int_equal(client_class_max_jobs(&l.items[0]), 24);
	features = client_class_features(&l.items[0]);
	assert_string_equal(features, "big-parallel,kvm");
	free(features);
	client_class_list_finish(&l);
}

static void test_missing_fields_take_defaults(void **state)
{
	const char *specs[] = { "{}", "{\"maxBuildersPerIdentity\":0}", "{\"systems\":[]}" };
	struct client_class_list l;
	char *warnings;
	json_t *j;

	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		assert_null(parse_one("plain", specs[i], &l));
		assert_int_equal(l.n, 1);
		assert_class(&l.items[0], "x86_64-linux", "", "", 1, 4, 2);
		client_class_list_finish(&l);
	}
	/* No spec at all. */
	j = json_loads("{\"items\":[{\"metadata\":{\"name\":\"bare\"}}]}", 0, NULL);
	assert_int_equal(client_class_list_parse(j, &defaults, &l, &warnings), 0);
	assert_null(warnings);
	assert_int_equal(l.n, 1);
	assert_int_equal(client_class_max_jobs(&l.items[0]), 8);
	client_class_list_finish(&l);
	json_decref(j);
}

static void test_wrong_types_are_skipped(void **state)
{
	const char *specs[] = { "[]", "\"big\"", "{\"systems\":\"x86_64-linux\"}",
		"{\"systems\":[1]}", "{\"systems\":[\"x86_64 linux\"]}", "{\"systems\":[\"linux\"]}",
		"{\"systems\":[\"x86_64-linux;rm\"]}", "{\"supportedFeatures\":[\"a b\"]}",
		"{\"supportedFeatures\":[\"\"]}", "{\"mandatoryFeatures\":[\"k,v\"]}",
		"{\"mandatoryFeatures\":{}}", "{\"speedFactor\":\"2\"}", "{\"speedFactor\":0}",
		"{\"speedFactor\":1.5}", "{\"slots\":0}", "{\"slots\":257}", "{\"slots\":null}",
		"{\"maxBuildersPerIdentity\":-1}", "{\"maxBuildersPerIdentity\":1001}",
		"{\"supportedFeatures\":[\"$x\"]}" };
	struct client_class_list l;
	char *warnings;

	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		warnings = parse_one("odd", specs[i], &l);
		assert_int_equal(l.n, 0);
		assert_non_null(warnings);
		assert_non_null(strstr(warnings, "NixBuilderClass odd skipped: "));
		free(warnings);
		client_class_list_finish(&l);
	}
}

static void test_names(void **state)
{
	const char *bad[] = { "", "Big", "-big", "big-", "big.one", "b_g", "nixbld",
		"a123456789a123456789a123456789a123456789a123456789a123456789abcd" };
	const char *good[] = { "a", "0", "big-1",
		("a123456789a123456789a123456789a123456789a123456789a123456789abc") };
	struct client_class_list l;
	char *warnings;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		warnings = parse_one(bad[i], "{}", &l);
		assert_int_equal(l.n, 0);
		assert_non_null(warnings);
		free(warnings);
		client_class_list_finish(&l);
	}
	warnings = parse_one("nixbld", "{}", &l);
	assert_non_null(strstr(warnings, "default class"));
	free(warnings);
	client_class_list_finish(&l);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_null(parse_one(good[i], "{}", &l));
		assert_int_equal(l.n, 1);
		client_class_list_finish(&l);
	}
	/* A name with odd bytes is not quoted as it is. */
	warnings = parse("{\"items\":[{\"metadata\":{\"name\":\"a\\nb\\\"c\"}}]}", &l);
	assert_non_null(strstr(warnings, "\"a?b?c\""));
	free(warnings);
	client_class_list_finish(&l);
	warnings = parse("{\"items\":[{\"metadata\":{\"name\":\"x\"}},{\"metadata\":"
	    "{\"name\":\"x\"}},{\"metadata\":{\"name\":\"y\"}},{\"spec\":{}}]}", &l);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.items[1].name, "y");
	assert_non_null(strstr(warnings, "NixBuilderClass x skipped: listed twice"));
	assert_non_null(strstr(warnings, "NixBuilderClass 3 \"\" skipped"));
	free(warnings);
	client_class_list_finish(&l);
}

static void test_at_most_64(void **state)
{
	json_t *list = json_object(), *items = json_array();
	struct client_class_list l;
	char *warnings = NULL, name[16];

	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "c%d", i);
		json_array_append_new(items, json_pack("{s:{s:s},s:{s:i}}", "metadata", "name", name,
		    "spec", "slots", 1));
	}
	json_object_set_new(list, "items", items);
	assert_int_equal(client_class_list_parse(list, &defaults, &l, &warnings), 0);
	assert_int_equal(l.n, CLIENT_CLASS_MAX);
	assert_string_equal(l.items[0].name, "c0");
	assert_string_equal(l.items[63].name, "c63");
	assert_string_equal(warnings, "more than 64 NixBuilderClasses: only the first 64 are "
	    "used\n");
	assert_int_equal(client_class_list_max_jobs(&l), 64 * 2);
	free(warnings);
	client_class_list_finish(&l);
	json_decref(list);
}

static void test_features_add_the_mandatory(void **state)
{
	struct client_class c = { "x", "x86_64-linux", "kvm", "big-parallel,kvm,nixos-test", 1, 1,
		1 };
	char *s = client_class_features(&c);

	assert_string_equal(s, "kvm,big-parallel,nixos-test");
	free(s);
	c.supported = "";
	c.mandatory = "";
	s = client_class_features(&c);
	assert_string_equal(s, "");
	free(s);
	c.mandatory = "kvm";
	s = client_class_features(&c);
	assert_string_equal(s, "kvm");
	free(s);
}

/* The default class and big, arm from the cluster. */
static void three(struct client_class_list *l)
{
	char *w = parse("{\"items\":[{\"metadata\":{\"name\":\"big\"}},"
	    "{\"metadata\":{\"name\":\"arm\"},\"spec\":{\"slots\":1}}]}", l);

	assert_null(w);
	assert_int_equal(client_class_list_add_default(l, &defaults, "x86_64-linux", NULL), 0);
	assert_int_equal(l->n, 3);
	assert_string_equal(l->items[0].name, "nixbld");
	assert_string_equal(l->items[0].supported, "");
	assert_int_equal(l->items[0].speed_factor, 1);
}

static void test_select(void **state)
{
	struct client_class_list l;
	char *err = NULL;

	three(&l);
	assert_int_equal(client_class_list_select(&l, NULL, &err), 0);
	assert_int_equal(l.n, 3);
	assert_int_equal(client_class_list_max_jobs(&l), 8 + 8 + 2);
	client_class_list_finish(&l);

	three(&l);
	assert_int_equal(client_class_list_select(&l, "arm,nixbld", &err), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.items[0].name, "nixbld");
	assert_string_equal(l.items[1].name, "arm");
	client_class_list_finish(&l);

	three(&l);
	assert_int_equal(client_class_list_select(&l, "big,big", &err), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.items[0].name, "big");
	client_class_list_finish(&l);

	three(&l);
	assert_int_equal(client_class_list_select(&l, "big,gpu", &err), -1);
	assert_string_equal(err, "--classes: no class \"gpu\" (the classes are: nixbld, big, arm)");
	assert_int_equal(l.n, 3);
	free(err);
	assert_int_equal(client_class_list_select(&l, "", &err), -1);
	assert_non_null(strstr(err, "an empty class name"));
	free(err);
	assert_int_equal(client_class_list_select(&l, "big,", &err), -1);
	free(err);
	assert_int_equal(client_class_list_select(&l, "bi", &err), -1);
	free(err);
	assert_int_equal(l.n, 3);
	client_class_list_finish(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_not_a_list),
		cmocka_unit_test(test_no_items),
		cmocka_unit_test(test_all_fields),
		cmocka_unit_test(test_missing_fields_take_defaults),
		cmocka_unit_test(test_wrong_types_are_skipped),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_at_most_64),
		cmocka_unit_test(test_features_add_the_mandatory),
		cmocka_unit_test(test_select),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
