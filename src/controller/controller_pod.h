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
/* "false" while the builder holds sessions, "true" when idle: the cluster
 * autoscaler's scale-down then leaves busy builders alone. */
#define CONTROLLER_POD_SAFE_TO_EVICT_ANNOTATION "cluster-autoscaler.kubernetes.io/safe-to-evict"
/* The public half of the pod's own host key, "ecdsa-sha2-nistp256 AAAA...".
 * Written with the pod, so a pod that exists always says which key it was
 * given (the controller cannot read Secrets back); only API clients that
 * may update pods can change it, which a tenant root in the pod is not. */
#define CONTROLLER_POD_HOST_KEY_ANNOTATION "nix.io/host-key"
/* The pod informer's selector: every pod this controller makes carries it. */
#define CONTROLLER_POD_SELECTOR CONTROLLER_POD_APP_LABEL "=" CONTROLLER_POD_APP
#define CONTROLLER_POD_CONTAINER "builder"
#define CONTROLLER_POD_SSH_DIR "/etc/nrbc/ssh"
#define CONTROLLER_POD_NIX_DIR "/etc/nix"
/* Pods of NixBuilders (reusable builders) carry this instead of the
 * request label. Not the identity: a pool builder's pod is made before
 * anyone claims it, and `kubectl get nixbuilders` shows whose it is. */
#define CONTROLLER_POD_BUILDER_LABEL "nix.io/builder"

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
	/* Builds in Nix's sandbox: the pod gets its own user namespace
	 * (hostUsers false), an unmasked /proc (Nix mounts a fresh one per
	 * build, which the kernel refuses over a masked one) and the Localhost
	 * seccomp profile sandbox_seccomp_profile (RuntimeDefault refuses the
	 * namespaces a build is cloned into), and the entrypoint is told to
	 * turn the sandbox on and to fail at start if it cannot. */
	bool sandbox;
	const char *sandbox_seccomp_profile;
	/* "host:port" of the proxy for builders of a key to substitute from
	 * each other (controller_pod_add_siblings), and the ConfigMap with the
	 * proxy's public host key; NULL or "": they do not. */
	const char *sibling_proxy;
	const char *proxy_host_key_config_map;
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

/* Builds the builder Pod for a NixBuildRequest (a request's own pod). Its
 * host key comes from the Secret host_key_secret (key "host-key"), and
 * host_key_public (may be NULL) goes into its host-key annotation. Returns
 * a new reference, or NULL with *err (heap string) when the request lacks
 * a name, namespace or uid, or the options or the host key Secret are
 * missing. */
json_t *controller_pod_build(const json_t *request, const struct controller_pod_options *opts,
    const char *host_key_secret, const char *host_key_public, char **err);

/* Running, Ready and with an IP. */
bool controller_pod_ready(const json_t *pod);
/* Sets the safe-to-evict annotation of pod (a pod object being built). 0,
 * or -1 when out of memory. */
int controller_pod_set_safe_to_evict(json_t *pod, bool safe);
/* The annotation's value on a (cached) pod: "true", "false" or "". */
const char *controller_pod_safe_to_evict(const json_t *pod);

/* The pod of a NixBuilder: the request template built from the builder's
 * spec (image, resources, nodeSelector), controlled by the builder (so it
 * lives as long as the builder, not as long as one request), labelled with
 * the builder's name. Its host key comes from the Secret host_key_secret
 * (key "host-key") and host_key_public goes into its host-key annotation.
 * NULL with *err (heap) on failure. */
json_t *controller_pod_build_for_builder(const json_t *builder,
    const struct controller_pod_options *opts, const char *host_key_secret,
    const char *host_key_public, char **err);
/* Where a builder's nix-daemon substitutes from the other builders of its
 * client key: through the proxy at proxy_address ("host:port"), logging in
 * with its own host key, the proxy's public host key read from the
 * ConfigMap host_key_config_map (key "host-key.pub", optional: without it
 * the builder does without). Adds the env and the volume to a builder's
 * pod. 0, or -1 when out of memory. */
#define CONTROLLER_POD_PROXY_DIR "/etc/nrbc/proxy"
int controller_pod_add_siblings(json_t *pod, const char *proxy_address,
    const char *host_key_config_map);
/* The pod's host-key annotation, or "". */
const char *controller_pod_host_key(const json_t *pod);

/* The name of the NixBuildRequest named as the pod's controller owner, or
 * NULL when there is none. Borrowed from pod. */
const char *controller_pod_owner_name(const json_t *pod);
/* True when the pod's controller ownerReference is the request with uid. */
bool controller_pod_owned_by(const json_t *pod, const char *uid);
/* The same for a NixBuilder owner. */
const char *controller_pod_builder_name(const json_t *pod);
bool controller_pod_owned_by_builder(const json_t *pod, const char *uid);

#endif
