#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "controller/controller_status.h"
#include "controller_test_fixtures.h"

/* 2025-01-15T10:30:00Z */
#define T0 1736937000000LL
#define POD "nix-builder-build-abc"


static json_t *request_with_status(const char *status_json)
{
	json_t *r = test_load_json("{\"metadata\":{\"name\":\"build-abc\",\"namespace\":\"ns\","
	                 "\"uid\":\"u-1\",\"generation\":3},\"spec\":{\"sessionId\":\"s\"}}");

	if (status_json)
		json_object_set_new(r, "status", test_load_json(status_json));
	return r;
}

static const char *str(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? s : "";
}

static const json_t *condition(const json_t *status, const char *type)
{
	size_t i;
	json_t *c;

	json_array_foreach(json_object_get(status, "conditions"), i, c) {
		if (strcmp(str(c, "type"), type) == 0)
			return c;
	}
	return NULL;
}

static struct controller_status_result compute(const json_t *req, const char *pod_json,
    int64_t now)
{
	json_t *pod = pod_json ? test_load_json(pod_json) : NULL;
	struct controller_status_input in = {
		.request = req,
		.pod = pod,
		.pod_name = POD,
		.now_ms = now,
		.unschedulable_timeout_ms = 120000,
	};
	struct controller_status_result r;

	assert_int_equal(controller_status_compute(&in, &r), 0);
	assert_non_null(r.status);
	json_decref(pod);
	return r;
}

/* Stores the result as the request's status, as the API server would. */
static void store(json_t *req, struct controller_status_result *r)
{
	json_object_set(req, "status", r->status);
	controller_status_result_finish(r);
}

static const char *pod_pending =
    "{\"metadata\":{\"name\":\"" POD "\"},\"status\":{\"phase\":\"Pending\"}}";
static const char *pod_scheduled =
    "{\"metadata\":{\"name\":\"" POD "\"},\"status\":{\"phase\":\"Pending\",\"conditions\":["
    "{\"type\":\"PodScheduled\",\"status\":\"True\",\"lastTransitionTime\":\"2025-01-15T10:30:00Z\"}],"
    "\"containerStatuses\":[{\"name\":\"builder\",\"ready\":false,\"state\":{\"waiting\":"
    "{\"reason\":\"ContainerCreating\"}}}]}}";
static const char *pod_ready =
    "{\"metadata\":{\"name\":\"" POD "\"},\"status\":{\"phase\":\"Running\",\"podIP\":\"127.0.1.5\","
    "\"conditions\":[{\"type\":\"PodScheduled\",\"status\":\"True\","
    "\"lastTransitionTime\":\"2025-01-15T10:30:00Z\"},{\"type\":\"Ready\",\"status\":\"True\"}],"
    "\"containerStatuses\":[{\"name\":\"builder\",\"ready\":true,\"state\":{\"running\":{}}}]}}";
static const char *pod_not_ready =
    "{\"metadata\":{\"name\":\"" POD "\"},\"status\":{\"phase\":\"Running\",\"podIP\":\"127.0.1.5\","
    "\"conditions\":[{\"type\":\"PodScheduled\",\"status\":\"True\","
    "\"lastTransitionTime\":\"2025-01-15T10:30:00Z\"},{\"type\":\"Ready\",\"status\":\"False\"}]}}";
static const char *pod_unschedulable =
    "{\"metadata\":{\"name\":\"" POD "\"},\"status\":{\"phase\":\"Pending\",\"conditions\":["
    "{\"type\":\"PodScheduled\",\"status\":\"False\",\"reason\":\"Unschedulable\","
    "\"message\":\"0/1 nodes are available: node(s) didn't match selector\","
    "\"lastTransitionTime\":\"2025-01-15T10:30:00Z\"}]}}";

static void test_phase_names(void **state)
{
	json_t *r = request_with_status(NULL);

	assert_string_equal(controller_phase_name(CONTROLLER_PHASE_PENDING), "Pending");
	assert_string_equal(controller_phase_name(CONTROLLER_PHASE_FAILED), "Failed");
	assert_string_equal(controller_phase_name(CONTROLLER_PHASE_COUNT), "Unknown");
	assert_int_equal(controller_phase_of(r), CONTROLLER_PHASE_PENDING);
	json_object_set_new(r, "status", test_load_json("{\"phase\":\"Completed\"}"));
	assert_int_equal(controller_phase_of(r), CONTROLLER_PHASE_COMPLETED);
	json_object_set_new(r, "status", test_load_json("{\"phase\":\"Bogus\"}"));
	assert_int_equal(controller_phase_of(r), CONTROLLER_PHASE_PENDING);
	assert_true(controller_phase_terminal(CONTROLLER_PHASE_COMPLETED));
	assert_true(controller_phase_terminal(CONTROLLER_PHASE_FAILED));
	assert_false(controller_phase_terminal(CONTROLLER_PHASE_RUNNING));
	json_decref(r);
}

static void test_no_pod_no_status_is_left_alone(void **state)
{
	json_t *req = request_with_status(NULL);
	struct controller_status_result r = compute(req, NULL, T0);

	assert_false(r.changed);
	assert_false(r.transition);
	assert_int_equal(r.recheck_ms, 0);
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_created_pod_gives_creating(void **state)
{
	json_t *req = request_with_status(NULL);
	struct controller_status_result r = compute(req, pod_pending, T0);

	assert_true(r.changed);
	assert_true(r.transition);
	assert_false(r.warning);
	assert_string_equal(str(r.status, "phase"), "Creating");
	assert_string_equal(str(r.status, "reason"), "PodCreated");
	assert_string_equal(str(r.status, "podName"), POD);
	assert_string_equal(str(r.status, "startTime"), "2025-01-15T10:30:00Z");
	assert_null(json_object_get(r.status, "completionTime"));
	assert_null(json_object_get(r.status, "podIP"));
	assert_int_equal(json_integer_value(json_object_get(r.status, "observedGeneration")), 3);
	assert_string_equal(str(condition(r.status, "Ready"), "status"), "False");
	assert_string_equal(str(condition(r.status, "Ready"), "reason"), "PodCreated");
	assert_int_equal(json_integer_value(json_object_get(condition(r.status, "Ready"),
	    "observedGeneration")), 3);
	/* No PodScheduled condition on the pod yet: none on the request. */
	assert_null(condition(r.status, "BuilderScheduled"));
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_idempotent_through_the_lifecycle(void **state)
{
	static const char **const pods[] = { &pod_pending, &pod_scheduled, &pod_ready };
	json_t *req = request_with_status(NULL);

	for (size_t i = 0; i < sizeof(pods) / sizeof(pods[0]); i++) {
		struct controller_status_result r = compute(req, *pods[i], T0 + 1000 * (int64_t)i);
		struct controller_status_result again;

		store(req, &r);
		/* Later, same inputs: nothing to write, no event. */
		again = compute(req, *pods[i], T0 + 60000 + 1000 * (int64_t)i);
		assert_false(again.changed);
		assert_false(again.transition);
		assert_true(json_equal(again.status, json_object_get(req, "status")));
		controller_status_result_finish(&again);
	}
	json_decref(req);
}

static void test_running_with_ip(void **state)
{
	json_t *req = request_with_status(NULL);
	struct controller_status_result r = compute(req, pod_scheduled, T0);
	const json_t *sched;
	char ltt[32];

	store(req, &r);
	sched = condition(json_object_get(req, "status"), "BuilderScheduled");
	assert_string_equal(str(sched, "status"), "True");
	snprintf(ltt, sizeof(ltt), "%s", str(sched, "lastTransitionTime"));
	assert_string_equal(ltt, "2025-01-15T10:30:00Z");

	r = compute(req, pod_ready, T0 + 5000);
	assert_true(r.changed);
	assert_true(r.transition);
	assert_false(r.warning);
	assert_string_equal(str(r.status, "phase"), "Running");
	assert_string_equal(str(r.status, "reason"), "BuilderReady");
	assert_string_equal(str(r.status, "podIP"), "127.0.1.5");
	assert_string_equal(str(r.status, "podName"), POD);
	/* startTime is when the pod was made, not when it got ready. */
	assert_string_equal(str(r.status, "startTime"), "2025-01-15T10:30:00Z");
	assert_string_equal(str(condition(r.status, "Ready"), "status"), "True");
	assert_string_equal(str(condition(r.status, "Ready"), "lastTransitionTime"),
	    "2025-01-15T10:30:05Z");
	/* Unchanged condition status keeps its transition time. */
	assert_string_equal(str(condition(r.status, "BuilderScheduled"), "lastTransitionTime"), ltt);
	assert_int_equal(json_array_size(json_object_get(r.status, "conditions")), 2);
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_running_survives_readiness_flap(void **state)
{
	json_t *req = request_with_status(NULL);
	struct controller_status_result r = compute(req, pod_ready, T0);

	store(req, &r);
	r = compute(req, pod_not_ready, T0 + 3000);
	assert_false(r.changed);
	assert_string_equal(str(r.status, "phase"), "Running");
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_ready_needs_ip(void **state)
{
	json_t *req = request_with_status(NULL);
	struct controller_status_result r = compute(req,
	    "{\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\","
	    "\"status\":\"True\"}]}}", T0);

	assert_string_equal(str(r.status, "phase"), "Creating");
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_unschedulable_waits_then_fails(void **state)
{
	json_t *req = request_with_status(NULL);
	struct controller_status_result r = compute(req, pod_unschedulable, T0 + 30000);

	assert_string_equal(str(r.status, "phase"), "Creating");
	assert_string_equal(str(r.status, "reason"), "Unschedulable");
	assert_string_equal(str(r.status, "message"),
	    "Unschedulable: 0/1 nodes are available: node(s) didn't match selector");
	assert_true(r.transition);
	assert_true(r.warning);
	assert_int_equal(r.recheck_ms, 90000);
	assert_string_equal(str(condition(r.status, "BuilderScheduled"), "status"), "False");
	assert_string_equal(str(condition(r.status, "BuilderScheduled"), "reason"),
	    "Unschedulable");
	store(req, &r);

	/* Still inside the timeout: the same status, so nothing is written. */
	r = compute(req, pod_unschedulable, T0 + 100000);
	assert_false(r.changed);
	assert_int_equal(r.recheck_ms, 20000);
	controller_status_result_finish(&r);

	r = compute(req, pod_unschedulable, T0 + 120000);
	assert_true(r.changed);
	assert_true(r.transition);
	assert_true(r.warning);
	assert_string_equal(str(r.status, "phase"), "Failed");
	assert_string_equal(str(r.status, "reason"), "Unschedulable");
	assert_non_null(strstr(str(r.status, "message"), "didn't match selector"));
	assert_string_equal(str(r.status, "completionTime"), "2025-01-15T10:32:00Z");
	assert_int_equal(r.recheck_ms, 0);
	assert_string_equal(str(condition(r.status, "Ready"), "reason"), "Unschedulable");
	controller_status_result_finish(&r);
	json_decref(req);
}

/* A node without the builders' seccomp profile: the status says where the
 * profile comes from. */
static void test_missing_seccomp_profile(void **state)
{
	json_t *req = request_with_status("{\"phase\":\"Creating\",\"podName\":\"" POD "\","
	                                  "\"reason\":\"PodCreated\"}");
	struct controller_status_result r = compute(req, "{\"status\":{\"phase\":\"Pending\","
	    "\"containerStatuses\":[{\"name\":\"builder\",\"state\":{\"waiting\":"
	    "{\"reason\":\"CreateContainerError\",\"message\":\"failed to generate seccomp "
	    "spec opts: cannot load seccomp profile \\\"/var/lib/kubelet/seccomp/nrbc/"
	    "builder-sandbox.json\\\": no such file or directory\"}}}]}}", T0);

	assert_string_equal(str(r.status, "phase"), "Failed");
	assert_string_equal(str(r.status, "reason"), "ContainerError");
	assert_non_null(strstr(str(r.status, "message"), "builder-sandbox.json"));
	assert_non_null(strstr(str(r.status, "message"), "kubectl apply -k manifests/seccomp"));
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_waiting_failures(void **state)
{
	static const struct {
		const char *waiting;
		const char *reason;
	} cases[] = {
		{ "ErrImagePull", "ImagePullFailed" },
		{ "ImagePullBackOff", "ImagePullFailed" },
		{ "InvalidImageName", "ImagePullFailed" },
		{ "CreateContainerConfigError", "ConfigError" },
		{ "CreateContainerError", "ContainerError" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *req = request_with_status("{\"phase\":\"Creating\",\"podName\":\"" POD "\","
		                                  "\"reason\":\"PodCreated\"}");
		char pod[512];
		struct controller_status_result r;

		snprintf(pod, sizeof(pod), "{\"status\":{\"phase\":\"Pending\","
		    "\"containerStatuses\":[{\"name\":\"builder\",\"state\":{\"waiting\":"
		    "{\"reason\":\"%s\",\"message\":\"it went wrong\"}}}]}}", cases[i].waiting);
		r = compute(req, pod, T0);
		assert_string_equal(str(r.status, "phase"), "Failed");
		assert_string_equal(str(r.status, "reason"), cases[i].reason);
		assert_non_null(strstr(str(r.status, "message"), "it went wrong"));
		assert_non_null(strstr(str(r.status, "message"), cases[i].waiting));
		assert_null(strstr(str(r.status, "message"), "manifests/seccomp"));
		assert_true(r.transition);
		assert_true(r.warning);
		assert_string_equal(str(r.status, "completionTime"), "2025-01-15T10:30:00Z");
		controller_status_result_finish(&r);
		json_decref(req);
	}
}

static void test_ordinary_waiting_is_creating(void **state)
{
	json_t *req = request_with_status(NULL);
	struct controller_status_result r = compute(req, pod_scheduled, T0);

	assert_string_equal(str(r.status, "phase"), "Creating");
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_pod_failed(void **state)
{
	json_t *req = request_with_status("{\"phase\":\"Running\",\"podName\":\"" POD "\","
	                                  "\"podIP\":\"127.0.1.5\",\"reason\":\"BuilderReady\"}");
	struct controller_status_result r = compute(req,
	    "{\"status\":{\"phase\":\"Failed\",\"containerStatuses\":[{\"name\":\"builder\","
	    "\"state\":{\"terminated\":{\"exitCode\":137,\"reason\":\"OOMKilled\"}}}]}}", T0);

	assert_string_equal(str(r.status, "phase"), "Failed");
	assert_string_equal(str(r.status, "reason"), "PodFailed");
	assert_non_null(strstr(str(r.status, "message"), "137"));
	assert_non_null(strstr(str(r.status, "message"), "OOMKilled"));
	assert_string_equal(str(r.status, "podIP"), "127.0.1.5");
	assert_true(r.warning);
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_pod_succeeded_is_a_failure(void **state)
{
	json_t *req = request_with_status(NULL);
	struct controller_status_result r = compute(req,
	    "{\"status\":{\"phase\":\"Succeeded\"}}", T0);

	assert_string_equal(str(r.status, "phase"), "Failed");
	assert_string_equal(str(r.status, "reason"), "PodFailed");
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_deadline_exceeded(void **state)
{
	json_t *req = request_with_status("{\"phase\":\"Running\",\"podName\":\"" POD "\"}");
	struct controller_status_result r = compute(req,
	    "{\"status\":{\"phase\":\"Failed\",\"reason\":\"DeadlineExceeded\","
	    "\"message\":\"Pod was active on the node longer than the specified deadline\"}}", T0);

	assert_string_equal(str(r.status, "phase"), "Failed");
	assert_string_equal(str(r.status, "reason"), "DeadlineExceeded");
	assert_non_null(strstr(str(r.status, "message"), "longer than"));
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_pod_deleted_while_running(void **state)
{
	json_t *req = request_with_status("{\"phase\":\"Running\",\"podName\":\"" POD "\","
	                                  "\"reason\":\"BuilderReady\",\"startTime\":\"2025-01-15T10:29:00Z\"}");
	struct controller_status_result r = compute(req, NULL, T0);

	assert_true(r.changed);
	assert_true(r.transition);
	assert_true(r.warning);
	assert_string_equal(str(r.status, "phase"), "Failed");
	assert_string_equal(str(r.status, "reason"), "PodDeleted");
	assert_string_equal(str(r.status, "startTime"), "2025-01-15T10:29:00Z");
	assert_string_equal(str(r.status, "completionTime"), "2025-01-15T10:30:00Z");
	store(req, &r);
	/* Terminal now: the same inputs later change nothing. */
	r = compute(req, NULL, T0 + 10000);
	assert_false(r.changed);
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_pod_being_deleted(void **state)
{
	json_t *req = request_with_status("{\"phase\":\"Creating\",\"podName\":\"" POD "\"}");
	struct controller_status_result r = compute(req,
	    "{\"metadata\":{\"deletionTimestamp\":\"2025-01-15T10:29:59Z\"},"
	    "\"status\":{\"phase\":\"Pending\"}}", T0);

	assert_string_equal(str(r.status, "phase"), "Failed");
	assert_string_equal(str(r.status, "reason"), "PodDeleted");
	controller_status_result_finish(&r);
	json_decref(req);
}

/* An evicted pod of a builder that serves: its sessions go on (Running),
 * the message says why; the pod gone later is the controller's business. */
static void test_evicted_serving_pod_drains(void **state)
{
	json_t *req = request_with_status("{\"phase\":\"Running\",\"podName\":\"" POD "\"}");
	struct controller_status_result r = compute(req,
	    "{\"metadata\":{\"deletionTimestamp\":\"2025-01-15T10:29:59Z\"},"
	    "\"status\":{\"phase\":\"Running\",\"podIP\":\"10.0.0.7\",\"conditions\":["
	    "{\"type\":\"Ready\",\"status\":\"False\"},"
	    "{\"type\":\"DisruptionTarget\",\"status\":\"True\","
	    "\"reason\":\"EvictionByEvictionAPI\",\"message\":\"Eviction API: evicting\"}]}}", T0);

	assert_string_equal(str(r.status, "phase"), "Running");
	assert_string_equal(str(r.status, "reason"), "BuilderDraining");
	assert_non_null(strstr(str(r.status, "message"),
	    "draining (evicted: EvictionByEvictionAPI: Eviction API: evicting)"));
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_stop_reason(void **state)
{
	json_t *pod = json_loads("{\"status\":{\"conditions\":[{\"type\":\"DisruptionTarget\","
	    "\"status\":\"True\",\"reason\":\"PreemptionByScheduler\",\"message\":\"m\"}]}}",
	    0, NULL);
	char *why = controller_pod_stop_reason(pod);

	assert_string_equal(why, "preempted: PreemptionByScheduler: m");
	free(why);
	json_decref(pod);
	pod = json_loads("{\"status\":{}}", 0, NULL);
	why = controller_pod_stop_reason(pod);
	assert_string_equal(why, "deleted");
	free(why);
	json_decref(pod);
}

static void test_terminal_is_final(void **state)
{
	static const char *const terminal[] = {
		"{\"phase\":\"Completed\",\"message\":\"session ended\"}",
		"{\"phase\":\"Failed\",\"reason\":\"ImagePullFailed\"}",
	};
	static const char **const pods[] = { &pod_ready, &pod_pending, &pod_unschedulable };

	for (size_t i = 0; i < 2; i++) {
		json_t *req = request_with_status(terminal[i]);
		struct controller_status_result r = compute(req, NULL, T0);

		assert_false(r.changed);
		assert_true(json_equal(r.status, json_object_get(req, "status")));
		controller_status_result_finish(&r);
		for (size_t j = 0; j < sizeof(pods) / sizeof(pods[0]); j++) {
			r = compute(req, *pods[j], T0 + 500000);
			assert_false(r.changed);
			assert_false(r.transition);
			controller_status_result_finish(&r);
		}
		assert_int_equal(controller_status_set(req, CONTROLLER_PHASE_RUNNING, "X", "y", T0,
		    &r), 0);
		assert_false(r.changed);
		controller_status_result_finish(&r);
		json_decref(req);
	}
}

static void test_status_set(void **state)
{
	json_t *req = request_with_status(NULL);
	struct controller_status_result r;

	assert_int_equal(controller_status_set(req, CONTROLLER_PHASE_FAILED, "InvalidSpec",
	    "pods \"x\" is invalid", T0, &r), 0);
	assert_true(r.changed);
	assert_true(r.transition);
	assert_true(r.warning);
	assert_string_equal(str(r.status, "phase"), "Failed");
	assert_string_equal(str(r.status, "reason"), "InvalidSpec");
	assert_string_equal(str(r.status, "message"), "pods \"x\" is invalid");
	assert_string_equal(str(r.status, "completionTime"), "2025-01-15T10:30:00Z");
	store(req, &r);
	assert_int_equal(controller_status_set(req, CONTROLLER_PHASE_FAILED, "InvalidSpec",
	    "again", T0, &r), 0);
	assert_false(r.changed);
	controller_status_result_finish(&r);
	json_decref(req);

	req = request_with_status(NULL);
	assert_int_equal(controller_status_set(req, CONTROLLER_PHASE_PENDING, "PodCreateFailed",
	    "forbidden", T0, &r), 0);
	assert_string_equal(str(r.status, "phase"), "Pending");
	/* Pending has no start yet. */
	assert_null(json_object_get(r.status, "startTime"));
	assert_false(r.warning);
	store(req, &r);
	assert_int_equal(controller_status_set(req, CONTROLLER_PHASE_PENDING, "PodCreateFailed",
	    "forbidden", T0 + 5000, &r), 0);
	assert_false(r.changed);
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_generation_change_is_written(void **state)
{
	json_t *req = request_with_status(NULL);
	struct controller_status_result r = compute(req, pod_ready, T0);

	store(req, &r);
	json_object_set_new(json_object_get(req, "metadata"), "generation", json_integer(4));
	r = compute(req, pod_ready, T0 + 1000);
	assert_true(r.changed);
	assert_false(r.transition);
	assert_int_equal(json_integer_value(json_object_get(r.status, "observedGeneration")), 4);
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_unknown_fields_kept(void **state)
{
	json_t *req = request_with_status("{\"phase\":\"Creating\",\"podName\":\"" POD "\","
	                                  "\"sessionNote\":\"from the proxy\"}");
	struct controller_status_result r = compute(req, pod_ready, T0);

	assert_string_equal(str(r.status, "sessionNote"), "from the proxy");
	controller_status_result_finish(&r);
	json_decref(req);
}

static void test_time_parse_format(void **state)
{
	char out[32];

	assert_int_equal(controller_status_parse_time("2025-01-15T10:30:00Z"), T0);
	assert_int_equal(controller_status_parse_time("2025-01-15T10:30:00.250Z"), T0 + 250);
	assert_int_equal(controller_status_parse_time("2025-01-15T10:30:00.123456Z"), T0 + 123);
	assert_int_equal(controller_status_parse_time("2025-01-15T11:30:00+01:00"), T0);
	assert_int_equal(controller_status_parse_time("2025-01-15T09:30:00-01:00"), T0);
	assert_int_equal(controller_status_parse_time(""), -1);
	assert_int_equal(controller_status_parse_time(NULL), -1);
	assert_int_equal(controller_status_parse_time("2025-01-15T10:30:00"), -1);
	assert_int_equal(controller_status_parse_time("2025-01-15T10:30:00Zjunk"), -1);
	assert_int_equal(controller_status_parse_time("2025-13-15T10:30:00Z"), -1);
	assert_int_equal(controller_status_parse_time("2025-01-15T10:30:00.Z"), -1);
	assert_int_equal(controller_status_parse_time("yesterday"), -1);
	controller_status_format_time(T0 + 999, out);
	assert_string_equal(out, "2025-01-15T10:30:00Z");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_phase_names),
		cmocka_unit_test(test_no_pod_no_status_is_left_alone),
		cmocka_unit_test(test_created_pod_gives_creating),
		cmocka_unit_test(test_idempotent_through_the_lifecycle),
		cmocka_unit_test(test_running_with_ip),
		cmocka_unit_test(test_running_survives_readiness_flap),
		cmocka_unit_test(test_ready_needs_ip),
		cmocka_unit_test(test_unschedulable_waits_then_fails),
		cmocka_unit_test(test_waiting_failures),
		cmocka_unit_test(test_missing_seccomp_profile),
		cmocka_unit_test(test_ordinary_waiting_is_creating),
		cmocka_unit_test(test_pod_failed),
		cmocka_unit_test(test_pod_succeeded_is_a_failure),
		cmocka_unit_test(test_deadline_exceeded),
		cmocka_unit_test(test_pod_deleted_while_running),
		cmocka_unit_test(test_pod_being_deleted),
		cmocka_unit_test(test_evicted_serving_pod_drains),
		cmocka_unit_test(test_stop_reason),
		cmocka_unit_test(test_terminal_is_final),
		cmocka_unit_test(test_status_set),
		cmocka_unit_test(test_generation_change_is_written),
		cmocka_unit_test(test_unknown_fields_kept),
		cmocka_unit_test(test_time_parse_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
