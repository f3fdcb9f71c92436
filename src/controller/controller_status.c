#include "controller_status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "controller_pod.h"
#include "json_field.h"
#include "rfc3339.h"

static const char *const phase_names[CONTROLLER_PHASE_COUNT] = {
	[CONTROLLER_PHASE_PENDING] = "Pending",
	[CONTROLLER_PHASE_CREATING] = "Creating",
	[CONTROLLER_PHASE_RUNNING] = "Running",
	[CONTROLLER_PHASE_COMPLETED] = "Completed",
	[CONTROLLER_PHASE_FAILED] = "Failed",
};

/* Container waiting reasons after which the kubelet will not get the
 * builder running by itself: waiting longer only makes the user wait. */
static const struct waiting_failure {
	const char *waiting_reason;
	const char *reason;
} waiting_failures[] = {
	{ "ErrImagePull", CONTROLLER_REASON_IMAGE_PULL },
	{ "ImagePullBackOff", CONTROLLER_REASON_IMAGE_PULL },
	{ "InvalidImageName", CONTROLLER_REASON_IMAGE_PULL },
	{ "ErrImageNeverPull", CONTROLLER_REASON_IMAGE_PULL },
	{ "CreateContainerConfigError", CONTROLLER_REASON_CONFIG },
	{ "CreateContainerError", CONTROLLER_REASON_CONTAINER },
	{ "RunContainerError", CONTROLLER_REASON_CONTAINER },
};

const char *controller_phase_name(enum controller_phase p)
{
	return p < CONTROLLER_PHASE_COUNT ? phase_names[p] : "Unknown";
}

static enum controller_phase phase_parse(const char *s)
{
	for (int i = 0; i < CONTROLLER_PHASE_COUNT; i++) {
		if (strcmp(s, phase_names[i]) == 0)
			return (enum controller_phase)i;
	}
	return CONTROLLER_PHASE_PENDING;
}

enum controller_phase controller_phase_of(const json_t *request)
{
	return phase_parse(json_field_str(json_object_get(request, "status"), "phase"));
}

bool controller_phase_terminal(enum controller_phase p)
{
	return p == CONTROLLER_PHASE_COMPLETED || p == CONTROLLER_PHASE_FAILED;
}

int64_t controller_status_parse_time(const char *s)
{
	return rfc3339_parse_ms(s);
}

void controller_status_format_time(int64_t ms, char out[32])
{
	rfc3339_format_ms(ms, out);
}

static const json_t *find_condition(const json_t *conditions, const char *type)
{
	size_t i;
	json_t *c;

	json_array_foreach(conditions, i, c) {
		if (strcmp(json_field_str(c, "type"), type) == 0)
			return c;
	}
	return NULL;
}

/* Kubernetes' SetStatusCondition: lastTransitionTime moves only when the
 * status value changes; reason and message are updated in place. */
static int set_condition(json_t *conditions, const char *type, const char *status,
    const char *reason, const char *message, json_int_t generation, int64_t now_ms)
{
	char now[32];
	size_t i;
	json_t *c = NULL;
	json_t *fresh;

	json_array_foreach(conditions, i, c) {
		if (strcmp(json_field_str(c, "type"), type) == 0)
			break;
	}
	if (i < json_array_size(conditions) && strcmp(json_field_str(c, "status"), status) == 0 &&
	    json_is_string(json_object_get(c, "lastTransitionTime")))
		snprintf(now, sizeof(now), "%s", json_field_str(c, "lastTransitionTime"));
	else
		controller_status_format_time(now_ms, now);
	fresh = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "type", type, "status", status,
	    "reason", reason, "message", message, "lastTransitionTime", now,
	    "observedGeneration", generation);
	if (!fresh)
		return -1;
	if (i < json_array_size(conditions))
		return json_array_set_new(conditions, i, fresh);
	return json_array_append_new(conditions, fresh);
}

/* What the pod says about the request: a phase, a reason and a message. */
struct verdict {
	enum controller_phase phase;
	const char *reason;
	char *message;
	uint64_t recheck_ms;
};

static const json_t *builder_container_status(const json_t *pod)
{
	const json_t *statuses = json_object_get(json_object_get(pod, "status"),
	    "containerStatuses");
	size_t i;
	json_t *cs;

	json_array_foreach(statuses, i, cs) {
		if (strcmp(json_field_str(cs, "name"), "builder") == 0)
			return cs;
	}
	return json_array_get(statuses, 0);
}

static char *terminated_message(const char *pod_name, const json_t *pod_status,
    const json_t *cs)
{
	const json_t *term = json_object_get(json_object_get(cs, "state"), "terminated");
	const char *pod_message = json_field_str(pod_status, "message");

	if (*pod_message)
		return str_printf("builder pod %s failed: %s", pod_name, pod_message);
	if (term)
		return str_printf("builder pod %s failed: container exited with code %lld%s%s%s%s%s",
		    pod_name, (long long)json_integer_value(json_object_get(term, "exitCode")),
		    *json_field_str(term, "reason") ? " (" : "", json_field_str(term, "reason"),
		    *json_field_str(term, "reason") ? ")" : "",
		    *json_field_str(term, "message") ? ": " : "", json_field_str(term, "message"));
	return str_printf("builder pod %s failed", pod_name);
}

static int judge_failed_pod(const char *pod_name, const json_t *pod_status,
    const json_t *cs, struct verdict *v)
{
	v->phase = CONTROLLER_PHASE_FAILED;
	if (strcmp(json_field_str(pod_status, "reason"), "DeadlineExceeded") == 0) {
		v->reason = CONTROLLER_REASON_DEADLINE;
		v->message = str_printf("builder pod %s ran longer than its timeoutSeconds: %s",
		    pod_name, json_field_str(pod_status, "message"));
	} else {
		v->reason = CONTROLLER_REASON_POD_FAILED;
		v->message = terminated_message(pod_name, pod_status, cs);
	}
	return v->message ? 0 : -1;
}

static int judge_unschedulable(const struct controller_status_input *in,
    const json_t *cond, struct verdict *v)
{
	const char *since_text = json_field_str(cond, "lastTransitionTime");
	int64_t since = controller_status_parse_time(since_text);
	int64_t elapsed;

	if (since < 0)
		since = controller_status_parse_time(json_field_str(json_object_get(in->request,
		    "status"), "startTime"));
	if (since < 0)
		since = in->now_ms;
	elapsed = in->now_ms - since;
	v->reason = CONTROLLER_REASON_UNSCHEDULABLE;
	if (elapsed >= 0 && (uint64_t)elapsed >= in->unschedulable_timeout_ms) {
		v->phase = CONTROLLER_PHASE_FAILED;
		v->message = str_printf("builder pod %s could not be scheduled: %s",
		    in->pod_name, json_field_str(cond, "message"));
	} else {
		v->phase = CONTROLLER_PHASE_CREATING;
		v->message = str_printf("Unschedulable: %s", json_field_str(cond, "message"));
		v->recheck_ms = in->unschedulable_timeout_ms - (elapsed > 0 ? (uint64_t)elapsed : 0);
	}
	return v->message ? 0 : -1;
}

static bool pod_ready(const json_t *pod_status)
{
	const json_t *ready = find_condition(json_object_get(pod_status, "conditions"), "Ready");

	return strcmp(json_field_str(pod_status, "phase"), "Running") == 0 &&
	    strcmp(json_field_str(ready, "status"), "True") == 0 && *json_field_str(pod_status, "podIP");
}

char *controller_pod_stop_reason(const json_t *pod)
{
	const json_t *cond = find_condition(json_object_get(json_object_get(pod, "status"),
	    "conditions"), "DisruptionTarget");
	const char *reason = json_field_str(cond, "reason");
	const char *message = json_field_str(cond, "message");

	if (!cond || strcmp(json_field_str(cond, "status"), "True") != 0)
		return strdup("deleted");
	return str_printf("%s: %s%s%s", strcmp(reason, "EvictionByEvictionAPI") == 0 ? "evicted" :
	    strcmp(reason, "PreemptionByScheduler") == 0 ? "preempted" : "stopped",
	    *reason ? reason : "DisruptionTarget", *message ? ": " : "", message);
}

/* The runtime's words for a Localhost profile that is not on the node name
 * a path only the node's admin knows: say where it comes from. */
static const char *seccomp_hint(const char *runtime_message)
{
	return strstr(runtime_message, "seccomp") ? " (is the builders' seccomp profile on this "
	    "node? kubectl apply -k manifests/seccomp; docs/operations.md, Installing)" : "";
}

static int judge_pod(const struct controller_status_input *in, enum controller_phase current,
    struct verdict *v)
{
	const json_t *pod_status = json_object_get(in->pod, "status");
	const char *pod_phase = json_field_str(pod_status, "phase");
	const json_t *cs = builder_container_status(in->pod);
	const json_t *waiting = json_object_get(json_object_get(cs, "state"), "waiting");
	const json_t *scheduled = find_condition(json_object_get(pod_status, "conditions"),
	    "PodScheduled");

	if (strcmp(pod_phase, "Failed") == 0)
		return judge_failed_pod(in->pod_name, pod_status, cs, v);
	if (strcmp(pod_phase, "Succeeded") == 0 ||
	    json_object_get(json_object_get(cs, "state"), "terminated")) {
		v->phase = CONTROLLER_PHASE_FAILED;
		v->reason = CONTROLLER_REASON_POD_FAILED;
		v->message = terminated_message(in->pod_name, pod_status, cs);
		return v->message ? 0 : -1;
	}
	if (json_object_get(json_object_get(in->pod, "metadata"), "deletionTimestamp")) {
		char *why = controller_pod_stop_reason(in->pod);

		/* A builder that served drains: its sessions go on (its pod's
		 * grace period is the drain timeout); one that never did is over. */
		if (current == CONTROLLER_PHASE_RUNNING || pod_ready(pod_status)) {
			v->phase = CONTROLLER_PHASE_RUNNING;
			v->reason = CONTROLLER_REASON_DRAINING;
			v->message = str_printf("builder pod %s is draining (%s): its sessions go on, "
			    "new ones go to another builder", in->pod_name, why ? why : "deleted");
		} else {
			v->phase = CONTROLLER_PHASE_FAILED;
			v->reason = CONTROLLER_REASON_POD_DELETED;
			v->message = str_printf("builder pod %s was %s before it was ready",
			    in->pod_name, why ? why : "deleted");
		}
		free(why);
		return v->message ? 0 : -1;
	}
	for (size_t i = 0; waiting && i < sizeof(waiting_failures) / sizeof(waiting_failures[0]); i++) {
		if (strcmp(json_field_str(waiting, "reason"), waiting_failures[i].waiting_reason) == 0) {
			const char *msg = json_field_str(waiting, "message");

			v->phase = CONTROLLER_PHASE_FAILED;
			v->reason = waiting_failures[i].reason;
			v->message = str_printf("builder pod %s: %s: %s%s", in->pod_name,
			    waiting_failures[i].waiting_reason, msg, seccomp_hint(msg));
			return v->message ? 0 : -1;
		}
	}
	if (strcmp(json_field_str(scheduled, "status"), "False") == 0 &&
	    strcmp(json_field_str(scheduled, "reason"), "Unschedulable") == 0)
		return judge_unschedulable(in, scheduled, v);
	/* Running is kept through a readiness flap: the proxy may already be
	 * bridging to it, and only a real failure ends a builder. */
	if (pod_ready(pod_status) || current == CONTROLLER_PHASE_RUNNING) {
		v->phase = CONTROLLER_PHASE_RUNNING;
		v->reason = CONTROLLER_REASON_RUNNING;
		v->message = str_printf("builder pod %s is ready at %s", in->pod_name,
		    *json_field_str(pod_status, "podIP") ? json_field_str(pod_status, "podIP") :
		    json_field_str(json_object_get(in->request, "status"), "podIP"));
		return v->message ? 0 : -1;
	}
	v->phase = CONTROLLER_PHASE_CREATING;
	v->reason = CONTROLLER_REASON_POD_CREATED;
	v->message = str_printf("waiting for builder pod %s to become ready", in->pod_name);
	return v->message ? 0 : -1;
}

/* The next status: the stored one with phase, reason, message, pod fields,
 * times and conditions brought up to date. */
static json_t *next_status(const json_t *request, const json_t *pod, const char *pod_name,
    const char *builder, const struct verdict *v, int64_t now_ms)
{
	const json_t *old = json_object_get(request, "status");
	json_int_t generation = json_integer_value(json_object_get(json_object_get(request,
	    "metadata"), "generation"));
	const json_t *pod_status = json_object_get(pod, "status");
	const json_t *scheduled = find_condition(json_object_get(pod_status, "conditions"),
	    "PodScheduled");
	json_t *st = json_is_object(old) ? json_deep_copy(old) : json_object();
	json_t *conditions;
	char now[32];

	if (!st)
		return NULL;
	controller_status_format_time(now_ms, now);
	conditions = json_object_get(st, "conditions");
	if (!json_is_array(conditions)) {
		if (json_object_set_new(st, "conditions", json_array()) < 0)
			goto fail;
		conditions = json_object_get(st, "conditions");
	}
	if (json_object_set_new(st, "phase", json_string(controller_phase_name(v->phase))) < 0 ||
	    json_object_set_new(st, "reason", json_string(v->reason)) < 0 ||
	    json_object_set_new(st, "message", json_string(v->message)) < 0 ||
	    json_object_set_new(st, "observedGeneration", json_integer(generation)) < 0)
		goto fail;
	if (pod_name && *pod_name &&
	    json_object_set_new(st, "podName", json_string(pod_name)) < 0)
		goto fail;
	if (builder && *builder &&
	    json_object_set_new(st, "builder", json_string(builder)) < 0)
		goto fail;
	if (*json_field_str(pod_status, "podIP") &&
	    json_object_set_new(st, "podIP", json_string(json_field_str(pod_status, "podIP"))) < 0)
		goto fail;
	if (!*json_field_str(st, "startTime") && v->phase != CONTROLLER_PHASE_PENDING &&
	    json_object_set_new(st, "startTime", json_string(now)) < 0)
		goto fail;
	if (controller_phase_terminal(v->phase) && !*json_field_str(st, "completionTime") &&
	    json_object_set_new(st, "completionTime", json_string(now)) < 0)
		goto fail;
	if (scheduled) {
		bool ok = strcmp(json_field_str(scheduled, "status"), "True") == 0;

		if (set_condition(conditions, "BuilderScheduled", ok ? "True" : "False",
		        ok ? "Scheduled" : *json_field_str(scheduled, "reason") ?
		        json_field_str(scheduled, "reason") : "NotScheduled",
		        ok ? "" : json_field_str(scheduled, "message"), generation, now_ms) < 0)
			goto fail;
	}
	if (v->phase != CONTROLLER_PHASE_PENDING &&
	    set_condition(conditions, "Ready", v->phase == CONTROLLER_PHASE_RUNNING ? "True" :
	        "False", v->reason, v->message, generation, now_ms) < 0)
		goto fail;
	return st;
fail:
	json_decref(st);
	return NULL;
}

static int finish_result(const json_t *request, json_t *status,
    struct controller_status_result *out)
{
	const json_t *old = json_object_get(request, "status");
	const char *new_phase = json_field_str(status, "phase");
	const char *new_reason = json_field_str(status, "reason");

	out->status = status;
	out->changed = !json_is_object(old) || !json_equal((json_t *)old, status);
	out->transition = strcmp(json_field_str(old, "phase"), new_phase) != 0 ||
	    strcmp(json_field_str(old, "reason"), new_reason) != 0;
	out->warning = strcmp(new_phase, "Failed") == 0 ||
	    strcmp(new_reason, CONTROLLER_REASON_UNSCHEDULABLE) == 0;
	return 0;
}

static int unchanged(const json_t *request, struct controller_status_result *out)
{
	const json_t *old = json_object_get(request, "status");

	out->status = json_is_object(old) ? json_deep_copy(old) : json_object();
	return out->status ? 0 : -1;
}

/* The pod's own host key, as its annotation says, under field; a pod
 * without one (made before builders had keys of their own) serves the
 * shared key, and the proxy then verifies that one: no field. */
static int set_host_key(json_t *st, const char *field, const json_t *pod)
{
	const char *key = controller_pod_host_key(pod);

	if (!*key) {
		json_object_del(st, field);
		return 0;
	}
	return json_object_set_new(st, field, json_string(key));
}

int controller_status_compute(const struct controller_status_input *in,
    struct controller_status_result *out)
{
	const json_t *old = json_object_get(in->request, "status");
	enum controller_phase current = controller_phase_of(in->request);
	struct verdict v = { 0 };
	json_t *st;

	memset(out, 0, sizeof(*out));
	/* Completed and Failed are final, whoever set them. */
	if (controller_phase_terminal(current))
		return unchanged(in->request, out);
	if (!in->pod) {
		/* A pod that was seen and is now gone was deleted under us; with
		 * no pod ever seen, the reconciler is about to make one. */
		if (current == CONTROLLER_PHASE_PENDING || !*json_field_str(old, "podName"))
			return unchanged(in->request, out);
		v.phase = CONTROLLER_PHASE_FAILED;
		v.reason = CONTROLLER_REASON_POD_DELETED;
		v.message = str_printf("builder pod %s was deleted", json_field_str(old, "podName"));
		if (!v.message)
			return -1;
	} else if (judge_pod(in, current, &v) < 0) {
		return -1;
	}
	st = next_status(in->request, in->pod, in->pod_name, in->builder, &v, in->now_ms);
	free(v.message);
	if (!st)
		return -1;
	if (in->host_key_field && set_host_key(st, in->host_key_field, in->pod) < 0) {
		json_decref(st);
		return -1;
	}
	out->recheck_ms = v.phase == CONTROLLER_PHASE_CREATING ? v.recheck_ms : 0;
	return finish_result(in->request, st, out);
}

int controller_status_set(const json_t *request, enum controller_phase phase,
    const char *reason, const char *message, int64_t now_ms,
    struct controller_status_result *out)
{
	struct verdict v = { .phase = phase, .reason = reason, .message = (char *)message };
	json_t *st;

	memset(out, 0, sizeof(*out));
	if (controller_phase_terminal(controller_phase_of(request)))
		return unchanged(request, out);
	st = next_status(request, NULL, NULL, NULL, &v, now_ms);
	if (!st)
		return -1;
	return finish_result(request, st, out);
}

void controller_status_result_finish(struct controller_status_result *r)
{
	json_decref(r->status);
	r->status = NULL;
}
