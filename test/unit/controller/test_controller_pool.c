/* The warm pool's pure parts: which requests a pool pod may serve, the
 * pool pod template, idle/ready judgements, the claim patch, and that the
 * pod cache keeps the pool label. */
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

static const struct controller_pod_options opts = {
	.builder_image = "registry.example/nrbc-builder:1",
	.remote_port = 22,
	.nix_config = "nix-config",
	.ssh_key_secret = "nix-builder-ssh-keys",
	.default_cpu_request = "500m",
	.default_memory_request = "1Gi",
	.default_cpu_limit = "",
	.default_memory_limit = "4Gi",
	.termination_grace_seconds = 5,
};

static json_t *load(const char *s)
{
	json_error_t e;
	json_t *v = json_loads(s, 0, &e);

	if (!v)
		fail_msg("bad JSON in test: %s: %s", e.text, s);
	return v;
}

static bool poolable_spec(const char *spec)
{
	char text[512];
	json_t *req;
	bool r;

	snprintf(text, sizeof(text), "{\"metadata\":{\"name\":\"b\",\"namespace\":\"ns\","
	    "\"uid\":\"u\"},\"spec\":%s}", spec);
	req = load(text);
	r = controller_pod_request_poolable(req);
	json_decref(req);
	return r;
}

static void test_poolable(void **state)
{
	json_t *no_spec = load("{\"metadata\":{\"name\":\"b\"}}");

	(void)state;
	assert_true(controller_pod_request_poolable(no_spec));
	json_decref(no_spec);
	assert_true(poolable_spec("{\"sessionId\":\"s-1\"}"));
	assert_true(poolable_spec("{}"));
	assert_true(poolable_spec("{\"sessionId\":\"s\",\"image\":\"\",\"resources\":{},"
	    "\"nodeSelector\":{},\"timeoutSeconds\":0}"));
	assert_true(poolable_spec("{\"resources\":{\"requests\":{},\"limits\":{}}}"));
	assert_true(poolable_spec("{\"image\":null}"));
	assert_false(poolable_spec("{\"sessionId\":\"s\",\"image\":\"other:1\"}"));
	assert_false(poolable_spec("{\"resources\":{\"requests\":{\"cpu\":\"2\"}}}"));
	assert_false(poolable_spec("{\"resources\":{\"limits\":{\"memory\":\"1Gi\"}}}"));
	assert_false(poolable_spec("{\"resources\":{\"claims\":[{\"name\":\"gpu\"}]}}"));
	assert_false(poolable_spec("{\"nodeSelector\":{\"arch\":\"arm64\"}}"));
	assert_false(poolable_spec("{\"timeoutSeconds\":60}"));
	/* Anything the controller does not know could mean a different pod. */
	assert_false(poolable_spec("{\"somethingNew\":\"x\"}"));
	assert_false(poolable_spec("[]"));
}

static void test_pool_pod_template(void **state)
{
	char *err = NULL;
	json_t *pod = controller_pod_build_pool("builds", &opts, &err);
	json_t *meta = json_object_get(pod, "metadata");
	json_t *labels = json_object_get(meta, "labels");
	json_t *c = json_array_get(json_object_get(json_object_get(pod, "spec"), "containers"), 0);
	json_t *res = json_object_get(c, "resources");

	(void)state;
	assert_non_null(pod);
	assert_null(err);
	assert_null(json_object_get(meta, "name"));
	assert_string_equal(json_string_value(json_object_get(meta, "generateName")),
	    CONTROLLER_POD_POOL_PREFIX);
	assert_string_equal(json_string_value(json_object_get(meta, "namespace")), "builds");
	assert_null(json_object_get(meta, "ownerReferences"));
	assert_null(json_object_get(meta, "annotations"));
	assert_null(json_object_get(labels, CONTROLLER_POD_REQUEST_LABEL));
	assert_string_equal(json_string_value(json_object_get(labels, CONTROLLER_POD_POOL_LABEL)),
	    CONTROLLER_POD_POOL_IDLE);
	assert_string_equal(json_string_value(json_object_get(labels, CONTROLLER_POD_APP_LABEL)),
	    CONTROLLER_POD_APP);
	assert_string_equal(json_string_value(json_object_get(c, "image")), opts.builder_image);
	assert_string_equal(json_string_value(json_object_get(json_object_get(res, "requests"),
	    "cpu")), "500m");
	assert_string_equal(json_string_value(json_object_get(json_object_get(res, "limits"),
	    "memory")), "4Gi");
	assert_null(json_object_get(json_object_get(pod, "spec"), "activeDeadlineSeconds"));
	assert_true(controller_pod_is_idle_pool(pod));
	json_decref(pod);
}

static void test_pool_pod_bad_options(void **state)
{
	struct controller_pod_options o = opts;
	char *err = NULL;

	(void)state;
	o.builder_image = "";
	assert_null(controller_pod_build_pool("builds", &o, &err));
	assert_non_null(err);
	free(err);
	err = NULL;
	assert_null(controller_pod_build_pool("", &opts, &err));
	assert_non_null(err);
	free(err);
}

#define READY_STATUS "\"status\":{\"phase\":\"Running\",\"podIP\":\"127.0.1.2\"," \
	"\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}"

static void test_idle_and_ready(void **state)
{
	json_t *idle_ready = load("{\"metadata\":{\"name\":\"p\",\"resourceVersion\":\"7\","
	    "\"labels\":{\"nix.io/pool\":\"idle\"}}," READY_STATUS "}");
	json_t *idle_pending = load("{\"metadata\":{\"name\":\"p\",\"labels\":{\"nix.io/pool\":"
	    "\"idle\"}},\"status\":{\"phase\":\"Pending\"}}");
	json_t *idle_unready = load("{\"metadata\":{\"name\":\"p\",\"labels\":{\"nix.io/pool\":"
	    "\"idle\"}},\"status\":{\"phase\":\"Running\",\"podIP\":\"127.0.1.2\","
	    "\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\"}]}}");
	json_t *idle_failed = load("{\"metadata\":{\"name\":\"p\",\"labels\":{\"nix.io/pool\":"
	    "\"idle\"}},\"status\":{\"phase\":\"Failed\"}}");
	json_t *idle_deleting = load("{\"metadata\":{\"name\":\"p\",\"deletionTimestamp\":"
	    "\"2025-01-01T00:00:00Z\",\"labels\":{\"nix.io/pool\":\"idle\"}}," READY_STATUS "}");
	json_t *owned = load("{\"metadata\":{\"name\":\"p\",\"labels\":{\"nix.io/pool\":\"idle\"},"
	    "\"ownerReferences\":[{\"apiVersion\":\"nix.io/v1alpha1\",\"kind\":\"NixBuildRequest\","
	    "\"name\":\"b\",\"uid\":\"u\",\"controller\":true}]}," READY_STATUS "}");
	json_t *plain = load("{\"metadata\":{\"name\":\"p\"}," READY_STATUS "}");

	(void)state;
	assert_true(controller_pod_pool_usable(idle_ready));
	assert_true(controller_pod_ready(idle_ready));
	assert_true(controller_pod_pool_usable(idle_pending));
	assert_false(controller_pod_ready(idle_pending));
	assert_true(controller_pod_pool_usable(idle_unready));
	assert_false(controller_pod_ready(idle_unready));
	assert_true(controller_pod_is_idle_pool(idle_failed));
	assert_false(controller_pod_pool_usable(idle_failed));
	assert_false(controller_pod_pool_usable(idle_deleting));
	/* A pod with an owner is claimed, whatever a stale label says. */
	assert_false(controller_pod_is_idle_pool(owned));
	assert_false(controller_pod_is_idle_pool(plain));
	assert_true(controller_pod_ready(plain));
	json_decref(idle_ready);
	json_decref(idle_pending);
	json_decref(idle_unready);
	json_decref(idle_failed);
	json_decref(idle_deleting);
	json_decref(owned);
	json_decref(plain);
}

static void test_claim_patch(void **state)
{
	json_t *pod = load("{\"metadata\":{\"name\":\"nix-builder-pool-x1\",\"resourceVersion\":"
	    "\"42\",\"labels\":{\"nix.io/pool\":\"idle\"}}," READY_STATUS "}");
	json_t *no_rv = load("{\"metadata\":{\"name\":\"nix-builder-pool-x1\"}}");
	json_t *req = load("{\"metadata\":{\"name\":\"build-abc\",\"namespace\":\"ns\","
	    "\"uid\":\"req-uid\"},\"spec\":{\"sessionId\":\"s-9\"}}");
	json_t *no_uid = load("{\"metadata\":{\"name\":\"build-abc\"}}");
	json_t *patch = controller_pod_claim_patch(pod, req);
	json_t *meta = json_object_get(patch, "metadata");
	json_t *labels = json_object_get(meta, "labels");
	json_t *ref = json_array_get(json_object_get(meta, "ownerReferences"), 0);
	json_t *merged;

	(void)state;
	assert_non_null(patch);
	assert_string_equal(json_string_value(json_object_get(meta, "resourceVersion")), "42");
	assert_string_equal(json_string_value(json_object_get(labels,
	    CONTROLLER_POD_REQUEST_LABEL)), "build-abc");
	/* Merge patch: null removes the key. */
	assert_true(json_is_null(json_object_get(labels, CONTROLLER_POD_POOL_LABEL)));
	assert_string_equal(json_string_value(json_object_get(json_object_get(meta, "annotations"),
	    CONTROLLER_POD_SESSION_ANNOTATION)), "s-9");
	assert_int_equal(json_array_size(json_object_get(meta, "ownerReferences")), 1);
	assert_string_equal(json_string_value(json_object_get(ref, "uid")), "req-uid");
	assert_string_equal(json_string_value(json_object_get(ref, "kind")), "NixBuildRequest");
	assert_true(json_is_true(json_object_get(ref, "controller")));
	/* Applied, the pod belongs to the request and is no longer idle. */
	merged = json_deep_copy(pod);
	assert_non_null(merged);
	json_object_set(json_object_get(merged, "metadata"), "ownerReferences",
	    json_object_get(meta, "ownerReferences"));
	json_object_del(json_object_get(json_object_get(merged, "metadata"), "labels"),
	    CONTROLLER_POD_POOL_LABEL);
	assert_true(controller_pod_owned_by(merged, "req-uid"));
	assert_false(controller_pod_is_idle_pool(merged));
	assert_null(controller_pod_claim_patch(no_rv, req));
	assert_null(controller_pod_claim_patch(pod, no_uid));
	json_decref(merged);
	json_decref(patch);
	json_decref(pod);
	json_decref(no_rv);
	json_decref(req);
	json_decref(no_uid);
}

static void test_slim_keeps_pool_label(void **state)
{
	json_t *pod = load("{\"metadata\":{\"name\":\"p\",\"labels\":{\"nix.io/pool\":\"idle\","
	    "\"app.kubernetes.io/name\":\"nrbc-builder\"}}," READY_STATUS "}");
	json_t *slim = controller_slim_pod(pod);
	json_t *labels = json_object_get(json_object_get(slim, "metadata"), "labels");

	(void)state;
	assert_non_null(slim);
	assert_int_equal(json_object_size(labels), 1);
	assert_true(controller_pod_is_idle_pool(slim));
	assert_true(controller_pod_ready(slim));
	json_decref(slim);
	json_decref(pod);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_poolable),
		cmocka_unit_test(test_pool_pod_template),
		cmocka_unit_test(test_pool_pod_bad_options),
		cmocka_unit_test(test_idle_and_ready),
		cmocka_unit_test(test_claim_patch),
		cmocka_unit_test(test_slim_keeps_pool_label),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
