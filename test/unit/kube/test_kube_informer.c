/* The informer's object helpers. The informer itself runs against a fake
 * API server and a real one in test/integration/test_kube.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kube/kube_informer.h"

static void test_object_helpers(void **state)
{
	json_t *pod = json_pack("{s:{s:s, s:s, s:s, s:s}}", "metadata", "name", "web-1",
	    "namespace", "prod", "uid", "u-1", "resourceVersion", "42");
	json_t *node = json_pack("{s:{s:s}}", "metadata", "name", "node-a");
	json_t *odd = json_pack("{s:{s:i, s:n}}", "metadata", "name", 7, "namespace");
	char *key;

	key = kube_object_key(pod);
	assert_string_equal(key, "prod/web-1");
	free(key);
	assert_string_equal(kube_object_name(pod), "web-1");
	assert_string_equal(kube_object_namespace(pod), "prod");
	assert_string_equal(kube_object_uid(pod), "u-1");
	assert_string_equal(kube_object_resource_version(pod), "42");

	/* Cluster-scoped objects are keyed by name alone. */
	key = kube_object_key(node);
	assert_string_equal(key, "node-a");
	free(key);
	assert_string_equal(kube_object_namespace(node), "");

	/* Wrong types and missing metadata read as "". */
	assert_string_equal(kube_object_name(odd), "");
	assert_string_equal(kube_object_namespace(odd), "");
	assert_string_equal(kube_object_uid(NULL), "");
	assert_string_equal(kube_object_resource_version(json_null()), "");
	json_decref(pod);
	json_decref(node);
	json_decref(odd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_object_helpers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
