/* The builder pod of a NixBuildRequest, as a pure function of the request
 * and the controller's options. Only "make a builder pod" lives here;
 * binding a pod to a request is the reconciler's business, so a pool of
 * pods made ahead of any request can reuse this template later. */
#ifndef NRBC_CONTROLLER_POD_H
#define NRBC_CONTROLLER_POD_H

#include <jansson.h>
#include <stdbool.h>

#define CONTROLLER_POD_PREFIX "nix-builder-"
#define CONTROLLER_POD_APP_LABEL "app.kubernetes.io/name"
#define CONTROLLER_POD_APP "nrbc-builder"
#define CONTROLLER_POD_MANAGED_BY_LABEL "app.kubernetes.io/managed-by"
#define CONTROLLER_POD_MANAGED_BY "nrbc-controller"
#define CONTROLLER_POD_REQUEST_LABEL "nix.io/build-request"
#define CONTROLLER_POD_SESSION_ANNOTATION "nix.io/session-id"
/* The pod informer's selector: every pod this controller makes carries it. */
#define CONTROLLER_POD_SELECTOR CONTROLLER_POD_APP_LABEL "=" CONTROLLER_POD_APP
#define CONTROLLER_POD_CONTAINER "builder"
#define CONTROLLER_POD_SSH_DIR "/etc/nrbc/ssh"
#define CONTROLLER_POD_NIX_DIR "/etc/nix"
/* Warm pool: idle pods made ahead of any request carry this label (and no
 * owner, no request label) until a request claims one. */
#define CONTROLLER_POD_POOL_LABEL "nix.io/pool"
#define CONTROLLER_POD_POOL_IDLE "idle"
#define CONTROLLER_POD_POOL_PREFIX "nix-builder-pool-"

struct controller_pod_options {
	const char *builder_image;  /* when spec.image is empty */
	long remote_port;           /* sshd's port in the pod */
	const char *nix_config;     /* ConfigMap with nix.conf */
	const char *ssh_key_secret; /* Secret with "public" and "host-key" */
	/* Used for cpu / memory when the spec names neither a request nor a
	 * limit for that resource; NULL or "" leaves it unset. */
	const char *default_cpu_request;
	const char *default_memory_request;
	const char *default_cpu_limit;
	const char *default_memory_limit;
	long termination_grace_seconds;
};

/* The pod name for a request: "nix-builder-<name>" when that is a valid
 * DNS label (at most 63 characters, no dots), else a shortened prefix plus
 * a hash of the full name, so distinct requests never share a pod name and
 * the same request always gets the same one (which is what makes a create
 * after a crash answer 409 instead of making a second pod). Heap string. */
char *controller_pod_name(const char *request_name);

/* The value of the nix.io/build-request label: the request name when it is
 * a valid label value, else a shortened name plus hash. Heap string. */
char *controller_pod_request_label(const char *request_name);

/* Builds the builder Pod for a NixBuildRequest. Returns a new reference,
 * or NULL with *err (heap string) when the request lacks a name, namespace
 * or uid, or the options are incomplete. */
json_t *controller_pod_build(const json_t *request, const struct controller_pod_options *opts,
    char **err);

/* True when the request asks for nothing beyond a sessionId (no image,
 * resources, nodeSelector or timeoutSeconds), so a pool pod built from
 * an empty spec serves it exactly like its own pod would. */
bool controller_pod_request_poolable(const json_t *request);

/* An idle pool pod for namespace ns: the template of a request with an
 * empty spec, named by the API server (generateName), labelled idle, no
 * owner. NULL with *err (heap) when the options are incomplete. */
json_t *controller_pod_build_pool(const char *ns, const struct controller_pod_options *opts,
    char **err);

/* An idle pool pod: the pool label says idle and nothing controls it. */
bool controller_pod_is_idle_pool(const json_t *pod);
/* An idle pool pod that can still serve: not being deleted, not ended. */
bool controller_pod_pool_usable(const json_t *pod);
/* Running, Ready and with an IP: what a claim needs. */
bool controller_pod_ready(const json_t *pod);

/* The merge patch that hands the idle pool pod to request: labels
 * (request label set, pool label removed), the request as controlling
 * owner, its session annotation, and the pod's resourceVersion so a
 * concurrent change answers 409. New reference or NULL. */
json_t *controller_pod_claim_patch(const json_t *pod, const json_t *request);

/* The name of the NixBuildRequest named as the pod's controller owner, or
 * NULL when there is none. Borrowed from pod. */
const char *controller_pod_owner_name(const json_t *pod);
/* True when the pod's controller ownerReference is the request with uid. */
bool controller_pod_owned_by(const json_t *pod, const char *uid);

#endif
