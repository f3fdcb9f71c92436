/* The status a NixBuildRequest should have, as a pure function of the
 * request, its builder pod and the time. The reconciler writes it only when
 * it differs from the stored one, so computing it twice from the same
 * inputs must give the same object (timestamps only move on transitions). */
#ifndef NRBC_CONTROLLER_STATUS_H
#define NRBC_CONTROLLER_STATUS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum controller_phase {
	CONTROLLER_PHASE_PENDING,   /* no pod yet (also: no status at all) */
	CONTROLLER_PHASE_CREATING,  /* pod made, not ready */
	CONTROLLER_PHASE_RUNNING,   /* pod ready, podIP set */
	CONTROLLER_PHASE_COMPLETED, /* terminal: the session ended well (proxy) */
	CONTROLLER_PHASE_FAILED,    /* terminal */
	CONTROLLER_PHASE_COUNT,
};

const char *controller_phase_name(enum controller_phase p);
/* Unknown or missing phases read as Pending. */
enum controller_phase controller_phase_of(const json_t *request);
bool controller_phase_terminal(enum controller_phase p);

/* Machine-readable reasons (status.reason, condition and Event reasons). */
#define CONTROLLER_REASON_POD_CREATED "PodCreated"
#define CONTROLLER_REASON_RUNNING "BuilderReady"
#define CONTROLLER_REASON_UNSCHEDULABLE "Unschedulable"
#define CONTROLLER_REASON_IMAGE_PULL "ImagePullFailed"
#define CONTROLLER_REASON_CONFIG "ConfigError"
#define CONTROLLER_REASON_CONTAINER "ContainerError"
#define CONTROLLER_REASON_POD_FAILED "PodFailed"
#define CONTROLLER_REASON_DEADLINE "DeadlineExceeded"
#define CONTROLLER_REASON_POD_DELETED "PodDeleted"
#define CONTROLLER_REASON_INVALID "InvalidSpec"
#define CONTROLLER_REASON_CREATE_FAILED "PodCreateFailed"
#define CONTROLLER_REASON_DRAINING "BuilderDraining"
#define CONTROLLER_REASON_QUOTA "QuotaExceeded"

struct controller_status_input {
	const json_t *request;   /* the NixBuildRequest as cached */
	const json_t *pod;       /* its builder pod; NULL when there is none */
	const char *pod_name;    /* the name its pod has or will have */
	const char *builder;     /* the NixBuilder serving it, or NULL */
	/* Where the pod's own host key goes: "hostKey" in a NixBuilder's
	 * status, "builderHostKey" in a request's it serves; NULL: nowhere. */
	const char *host_key_field;
	int64_t now_ms;          /* wall clock, ms since the epoch */
	uint64_t unschedulable_timeout_ms;
};

struct controller_status_result {
	json_t *status;        /* the desired status; owned by the result */
	bool changed;          /* differs from the stored status: write it */
	bool transition;       /* phase or reason changed: record an Event */
	bool warning;          /* the Event is a Warning (failures) */
	uint64_t recheck_ms;   /* compute again after this long; 0: on events only */
};

/* Why a terminating pod was asked to stop, for people: its DisruptionTarget
 * condition ("evicted: EvictionByEvictionAPI: Eviction API: evicting") or
 * "deleted". Heap string; NULL when out of memory. */
char *controller_pod_stop_reason(const json_t *pod);

/* Fills out; returns 0, or -1 when out of memory. */
int controller_status_compute(const struct controller_status_input *in,
    struct controller_status_result *out);

/* The request moved to a phase the reconciler decided without a pod (an
 * invalid spec, a pod create that keeps failing). Same result shape. */
int controller_status_set(const json_t *request, enum controller_phase phase,
    const char *reason, const char *message, int64_t now_ms,
    struct controller_status_result *out);

void controller_status_result_finish(struct controller_status_result *r);

/* RFC 3339 "2006-01-02T15:04:05Z" (fraction and offset accepted) to ms
 * since the epoch; -1 when malformed. */
int64_t controller_status_parse_time(const char *s);
/* Seconds-precision RFC 3339 in UTC into out. */
void controller_status_format_time(int64_t ms, char out[32]);

#endif
