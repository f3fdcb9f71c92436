#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "controller/controller_pod.h"
#include "controller/controller_slim.h"
#include "controller/controller_status.h"

#define T0 1736937000000LL

/* A pod as the API server returns it, trimmed only slightly. */
static const char *full_pod =
    "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"nix-builder-b\","
    "\"namespace\":\"ns\",\"uid\":\"pod-uid\",\"resourceVersion\":\"99\","
    "\"creationTimestamp\":\"2025-01-15T10:29:59Z\","
    "\"labels\":{\"app.kubernetes.io/name\":\"nrbc-builder\",\"nix.io/build-request\":\"b\"},"
    "\"annotations\":{\"nix.io/session-id\":\"s\"},"
    "\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"Thing\",\"name\":\"t\",\"uid\":\"t\"},"
    "{\"apiVersion\":\"nix.io/v1alpha1\",\"kind\":\"NixBuildRequest\",\"name\":\"b\","
    "\"uid\":\"req-uid\",\"controller\":true,\"blockOwnerDeletion\":true}],"
    "\"managedFields\":[{\"manager\":\"nrbc\",\"operation\":\"Update\",\"fieldsV1\":"
    "{\"f:metadata\":{\"f:labels\":{\".\":{}}}}}]},"
    "\"spec\":{\"containers\":[{\"name\":\"builder\",\"image\":\"x\"}],\"nodeName\":\"n\"},"
    "\"status\":{\"phase\":\"Running\",\"podIP\":\"127.0.1.9\",\"hostIP\":\"127.0.0.1\","
    "\"qosClass\":\"BestEffort\",\"startTime\":\"2025-01-15T10:30:00Z\","
    "\"conditions\":[{\"type\":\"Initialized\",\"status\":\"True\"},"
    "{\"type\":\"PodScheduled\",\"status\":\"True\",\"lastTransitionTime\":\"2025-01-15T10:30:00Z\","
    "\"lastProbeTime\":null},"
    "{\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":\"2025-01-15T10:30:01Z\"},"
    "{\"type\":\"ContainersReady\",\"status\":\"True\"}],"
    "\"containerStatuses\":[{\"name\":\"builder\",\"ready\":true,\"restartCount\":0,"
    "\"image\":\"x\",\"imageID\":\"\",\"containerID\":\"nrbc-test://1\","
    "\"state\":{\"running\":{\"startedAt\":\"2025-01-15T10:30:00Z\"}}}]}}";

static const char *full_request =
    "{\"apiVersion\":\"nix.io/v1alpha1\",\"kind\":\"NixBuildRequest\",\"metadata\":{"
    "\"name\":\"b\",\"namespace\":\"ns\",\"uid\":\"req-uid\",\"resourceVersion\":\"98\","
    "\"generation\":2,\"creationTimestamp\":\"2025-01-15T10:29:59Z\","
    "\"labels\":{\"a\":\"b\"},\"ownerReferences\":[{\"kind\":\"Pod\",\"name\":\"proxy\"}],"
    "\"managedFields\":[{\"manager\":\"proxy\",\"fieldsV1\":{\"f:spec\":{}}}]},"
    "\"spec\":{\"sessionId\":\"s\",\"timeoutSeconds\":60,\"image\":\"i\"},"
    "\"status\":{\"phase\":\"Creating\",\"podName\":\"nix-builder-b\"}}";

static json_t *load(const char *s)
{
	json_t *v = json_loads(s, 0, NULL);

	assert_non_null(v);
	return v;
}

static void test_pod_keeps_what_is_read(void **state)
{
	json_t *full = load(full_pod);
	json_t *slim = controller_slim_pod(full);
	json_t *meta = json_object_get(slim, "metadata");
	json_t *st = json_object_get(slim, "status");

	assert_non_null(slim);
	assert_string_equal(json_string_value(json_object_get(meta, "name")), "nix-builder-b");
	assert_string_equal(json_string_value(json_object_get(meta, "resourceVersion")), "99");
	assert_string_equal(json_string_value(json_object_get(meta, "uid")), "pod-uid");
	assert_null(json_object_get(meta, "labels"));
	assert_null(json_object_get(meta, "managedFields"));
	assert_null(json_object_get(meta, "annotations"));
	assert_null(json_object_get(slim, "spec"));
	assert_int_equal(json_array_size(json_object_get(meta, "ownerReferences")), 1);
	assert_string_equal(controller_pod_owner_name(slim), "b");
	assert_true(controller_pod_owned_by(slim, "req-uid"));
	assert_string_equal(json_string_value(json_object_get(st, "podIP")), "127.0.1.9");
	assert_null(json_object_get(st, "qosClass"));
	assert_int_equal(json_array_size(json_object_get(st, "conditions")), 2);
	assert_null(json_object_get(json_array_get(json_object_get(st, "conditions"), 0),
	    "lastProbeTime"));
	assert_null(json_object_get(json_array_get(json_object_get(st, "containerStatuses"), 0),
	    "imageID"));
	/* Far smaller. */
	char *a = json_dumps(full, JSON_COMPACT);
	char *b = json_dumps(slim, JSON_COMPACT);
	assert_true(strlen(b) * 3 < strlen(a) * 2);
	free(a);
	free(b);
	json_decref(slim);
	json_decref(full);
}

/* The status computed from a slim pod and request equals the one from the
 * full objects, for every kind of pod the status module distinguishes. */
static void test_status_same_on_slim(void **state)
{
	static const char *const pods[] = {
		NULL, /* filled with full_pod */
		"{\"metadata\":{\"name\":\"p\",\"deletionTimestamp\":\"2025-01-15T10:29:00Z\"},"
		"\"status\":{\"phase\":\"Pending\"}}",
		"{\"status\":{\"phase\":\"Failed\",\"reason\":\"DeadlineExceeded\",\"message\":\"m\"}}",
		"{\"status\":{\"phase\":\"Pending\",\"conditions\":[{\"type\":\"PodScheduled\","
		"\"status\":\"False\",\"reason\":\"Unschedulable\",\"message\":\"no\","
		"\"lastTransitionTime\":\"2025-01-15T10:29:00Z\"}]}}",
		"{\"status\":{\"phase\":\"Pending\",\"containerStatuses\":[{\"name\":\"builder\","
		"\"state\":{\"waiting\":{\"reason\":\"ErrImagePull\",\"message\":\"nope\"}}}]}}",
		"{\"status\":{\"phase\":\"Failed\",\"containerStatuses\":[{\"name\":\"builder\","
		"\"state\":{\"terminated\":{\"exitCode\":1,\"reason\":\"Error\"}}}]}}",
	};
	json_t *req = load(full_request);
	json_t *slim_req = controller_slim_request(req);

	assert_null(json_object_get(json_object_get(slim_req, "metadata"), "managedFields"));
	assert_non_null(json_object_get(slim_req, "spec"));
	for (size_t i = 0; i < sizeof(pods) / sizeof(pods[0]); i++) {
		json_t *pod = load(pods[i] ? pods[i] : full_pod);
		json_t *slim_pod = controller_slim_pod(pod);
		struct controller_status_input in = { .request = req, .pod = pod,
			.pod_name = "nix-builder-b", .now_ms = T0, .unschedulable_timeout_ms = 30000 };
		struct controller_status_input in_slim = in;
		struct controller_status_result a, b;

		in_slim.request = slim_req;
		in_slim.pod = slim_pod;
		assert_int_equal(controller_status_compute(&in, &a), 0);
		assert_int_equal(controller_status_compute(&in_slim, &b), 0);
		assert_true(json_equal(a.status, b.status));
		assert_int_equal(a.changed, b.changed);
		assert_int_equal(a.recheck_ms, b.recheck_ms);
		controller_status_result_finish(&a);
		controller_status_result_finish(&b);
		json_decref(slim_pod);
		json_decref(pod);
	}
	json_decref(slim_req);
	json_decref(req);
}

static void test_pod_template_from_slim_request(void **state)
{
	static const struct controller_pod_options o = { .builder_image = "b", .remote_port = 22,
		.nix_config = "c", .ssh_key_secret = "s", .termination_grace_seconds = 5 };
	json_t *req = load(full_request);
	json_t *slim = controller_slim_request(req);
	char *err = NULL;
	json_t *a = controller_pod_build(req, &o, "hk", NULL, &err);
	json_t *b = controller_pod_build(slim, &o, "hk", NULL, &err);

	assert_non_null(a);
	assert_non_null(b);
	assert_true(json_equal(a, b));
	json_decref(a);
	json_decref(b);
	json_decref(slim);
	json_decref(req);
}

static void test_minimal_objects(void **state)
{
	json_t *empty = json_object();
	json_t *p = controller_slim_pod(empty);
	json_t *r = controller_slim_request(empty);

	assert_non_null(p);
	assert_non_null(r);
	json_decref(p);
	json_decref(r);
	json_decref(empty);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pod_keeps_what_is_read),
		cmocka_unit_test(test_status_same_on_slim),
		cmocka_unit_test(test_pod_template_from_slim_request),
		cmocka_unit_test(test_minimal_objects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
