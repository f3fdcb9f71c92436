#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "kube/kube_event.h"

#define T0 1736937000000LL

static json_t *nbr(const char *name)
{
	json_t *o = json_pack("{s:s,s:s,s:{s:s,s:s,s:s,s:s}}", "apiVersion", "nix.io/v1alpha1",
	    "kind", "NixBuildRequest", "metadata", "name", name, "namespace", "builds",
	    "uid", "u-1", "resourceVersion", "77");

	assert_non_null(o);
	return o;
}

static const char *str(const json_t *o, const char *a, const char *b)
{
	const json_t *v = b ? json_object_get(json_object_get(o, a), b) : json_object_get(o, a);

	assert_true(json_is_string(v));
	return json_string_value(v);
}

static void test_event_shape(void **state)
{
	json_t *o = nbr("build-abc");
	json_t *ev = kube_event_build(o, &kube_resource_nixbuildrequests, KUBE_EVENT_WARNING,
	    "ImagePullFailed", "builder pod x: ErrImagePull", "nrbc-controller", "ctl-1_ab", T0, 1);

	assert_non_null(ev);
	assert_string_equal(str(ev, "apiVersion", NULL), "v1");
	assert_string_equal(str(ev, "kind", NULL), "Event");
	assert_string_equal(str(ev, "metadata", "namespace"), "builds");
	assert_int_equal(strncmp(str(ev, "metadata", "name"), "build-abc.", 10), 0);
	assert_string_equal(str(ev, "involvedObject", "apiVersion"), "nix.io/v1alpha1");
	assert_string_equal(str(ev, "involvedObject", "kind"), "NixBuildRequest");
	assert_string_equal(str(ev, "involvedObject", "name"), "build-abc");
	assert_string_equal(str(ev, "involvedObject", "namespace"), "builds");
	assert_string_equal(str(ev, "involvedObject", "uid"), "u-1");
	assert_string_equal(str(ev, "involvedObject", "resourceVersion"), "77");
	assert_string_equal(str(ev, "type", NULL), "Warning");
	assert_string_equal(str(ev, "reason", NULL), "ImagePullFailed");
	assert_string_equal(str(ev, "message", NULL), "builder pod x: ErrImagePull");
	assert_string_equal(str(ev, "source", "component"), "nrbc-controller");
	assert_string_equal(str(ev, "source", "host"), "ctl-1_ab");
	assert_string_equal(str(ev, "firstTimestamp", NULL), "2025-01-15T10:30:00Z");
	assert_string_equal(str(ev, "lastTimestamp", NULL), "2025-01-15T10:30:00Z");
	assert_string_equal(str(ev, "reportingComponent", NULL), "nrbc-controller");
	assert_int_equal(json_integer_value(json_object_get(ev, "count")), 1);
	json_decref(ev);
	json_decref(o);
}

static void test_event_names_unique(void **state)
{
	json_t *o = nbr("build-abc");
	json_t *a = kube_event_build(o, &kube_resource_nixbuildrequests, "Normal", "R", "m", "c",
	    "i", T0, 1);
	json_t *b = kube_event_build(o, &kube_resource_nixbuildrequests, "Normal", "R", "m", "c",
	    "i", T0, 2);

	assert_string_not_equal(str(a, "metadata", "name"), str(b, "metadata", "name"));
	json_decref(a);
	json_decref(b);
	json_decref(o);
}

static void test_core_resource_api_version(void **state)
{
	json_t *o = nbr("p");
	json_t *ev = kube_event_build(o, &kube_resource_pods, "Normal", "R", "m", "c", "i", T0, 1);

	assert_string_equal(str(ev, "involvedObject", "apiVersion"), "v1");
	assert_string_equal(str(ev, "involvedObject", "kind"), "Pod");
	json_decref(ev);
	json_decref(o);
}

static void test_long_name_and_message_cut(void **state)
{
	char name[254];
	char msg[3000];
	json_t *o, *ev;
	size_t n;

	memset(name, 'a', 253);
	name[253] = '\0';
	/* Multi-byte characters straddling the cut must not be split. */
	for (n = 0; n + 2 < sizeof(msg); n += 2)
		memcpy(msg + n, "\xc3\xa9", 2);
	msg[n] = '\0';
	o = nbr(name);
	ev = kube_event_build(o, &kube_resource_nixbuildrequests, "Normal", "R", msg, "c", "i",
	    T0, 1);
	assert_non_null(ev);
	assert_true(strlen(str(ev, "metadata", "name")) <= 253);
	assert_string_equal(str(ev, "involvedObject", "name"), name);
	assert_true(strlen(str(ev, "message", NULL)) <= KUBE_EVENT_MAX_MESSAGE);
	assert_true(strlen(str(ev, "message", NULL)) >= KUBE_EVENT_MAX_MESSAGE - 1);
	json_decref(ev);
	json_decref(o);
}

static void test_nameless_object(void **state)
{
	json_t *o = json_object();

	assert_null(kube_event_build(o, &kube_resource_pods, "Normal", "R", "m", "c", "i", T0, 1));
	json_decref(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_event_shape),
		cmocka_unit_test(test_event_names_unique),
		cmocka_unit_test(test_core_resource_api_version),
		cmocka_unit_test(test_long_name_and_message_cut),
		cmocka_unit_test(test_nameless_object),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
