#include "controller_pod.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json_field.h"

/* DNS label limit: pod names become hostnames, label values share it. */
#define NAME_MAX_LEN 63
#define HASH_HEX_LEN 16

static bool str_empty(const char *s)
{
	return !s || !*s;
}

static int name_hash(const char *name, char out[HASH_HEX_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (!EVP_Digest(name, strlen(name), md, &md_len, EVP_sha256(), NULL) ||
	    md_len * 2 < HASH_HEX_LEN)
		return -1;
	for (int i = 0; i < HASH_HEX_LEN / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* prefix + the first bytes of name (dots turned into dashes, so the result
 * is a DNS label) + "-" + hash of the whole name, max NAME_MAX_LEN. */
static char *shortened(const char *prefix, const char *name)
{
	char hash[HASH_HEX_LEN + 1];
	char head[NAME_MAX_LEN + 1];
	size_t room = NAME_MAX_LEN - strlen(prefix) - 1 - HASH_HEX_LEN;
	size_t n = 0;

	if (name_hash(name, hash) < 0)
		return NULL;
	for (; n < room && name[n]; n++)
		head[n] = name[n] == '.' ? '-' : name[n];
	/* The hash follows a dash; a run of dashes before it is legal but ugly. */
	while (n > 0 && head[n - 1] == '-')
		n--;
	head[n] = '\0';
	if (n == 0)
		return str_printf("%s%s", prefix, hash);
	return str_printf("%s%s-%s", prefix, head, hash);
}

char *controller_pod_name(const char *request_name)
{
	if (strlen(CONTROLLER_POD_PREFIX) + strlen(request_name) <= NAME_MAX_LEN &&
	    !strchr(request_name, '.'))
		return str_printf("%s%s", CONTROLLER_POD_PREFIX, request_name);
	return shortened(CONTROLLER_POD_PREFIX, request_name);
}

char *controller_pod_request_label(const char *request_name)
{
	/* Object names are DNS subdomains, whose characters and ends are also
	 * valid in label values; only the length can be wrong. */
	if (strlen(request_name) <= NAME_MAX_LEN)
		return strdup(request_name);
	return shortened("", request_name);
}

/* A quantity from the spec as a string: the CRD allows integers. */
static json_t *quantity(const json_t *v)
{
	if (json_is_string(v))
		return json_string(json_string_value(v));
	if (json_is_integer(v))
		return json_sprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
	if (json_is_real(v))
		return json_sprintf("%g", json_real_value(v));
	return NULL;
}

static int copy_quantities(json_t *dst, const json_t *src)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)src, k, v) {
		json_t *q = quantity(v);

		if (!q || json_object_set_new(dst, k, q) < 0)
			return -1;
	}
	return 0;
}

static bool spec_names_resource(const json_t *spec_res, const char *name)
{
	return json_object_get(json_object_get(spec_res, "requests"), name) ||
	    json_object_get(json_object_get(spec_res, "limits"), name);
}

static int set_default(json_t *dst, const json_t *spec_res, const char *name, const char *def)
{
	if (str_empty(def) || spec_names_resource(spec_res, name))
		return 0;
	return json_object_set_new(dst, name, json_string(def));
}

/* The spec's requests and limits as given; the flag defaults fill in cpu
 * and memory only where the spec names neither a request nor a limit, so
 * a default can never contradict the spec (e.g. a default request above a
 * spec limit, which the API server would reject). */
static json_t *pod_resources(const json_t *spec, const struct controller_pod_options *o)
{
	const json_t *spec_res = json_object_get(spec, "resources");
	json_t *res = json_object();
	json_t *requests = json_object();
	json_t *limits = json_object();

	if (!res || !requests || !limits)
		goto fail;
	if (copy_quantities(requests, json_object_get(spec_res, "requests")) < 0 ||
	    copy_quantities(limits, json_object_get(spec_res, "limits")) < 0 ||
	    set_default(requests, spec_res, "cpu", o->default_cpu_request) < 0 ||
	    set_default(requests, spec_res, "memory", o->default_memory_request) < 0 ||
	    set_default(limits, spec_res, "cpu", o->default_cpu_limit) < 0 ||
	    set_default(limits, spec_res, "memory", o->default_memory_limit) < 0)
		goto fail;
	if (json_object_size(requests) && json_object_set(res, "requests", requests) < 0)
		goto fail;
	if (json_object_size(limits) && json_object_set(res, "limits", limits) < 0)
		goto fail;
	json_decref(requests);
	json_decref(limits);
	return res;
fail:
	json_decref(res);
	json_decref(requests);
	json_decref(limits);
	return NULL;
}

/* The builder runs sshd and nix-daemon as root: sshd has to become the
 * connecting user, and nix-daemon runs builds as the nixbld users. All
 * capabilities are dropped, then only these come back:
 *   SETUID, SETGID  sshd switches to the login user (and its privsep
 *                   user); nix-daemon switches to build users;
 *   SYS_CHROOT      sshd's privilege-separated pre-auth child chroots
 *                   into /run/sshd;
 *   CHOWN, FOWNER   nix-daemon hands build directories to build users and
 *                   canonicalises owner and mode of store paths it did not
 *                   create; sshd checks and fixes ownership of its files;
 *   DAC_OVERRIDE    root reads and deletes build users' files and the
 *                   store's read-only paths;
 *   KILL            nix-daemon kills build users' processes when a build
 *                   ends or times out; sshd signals session children;
 *   NET_BIND_SERVICE only when the port is below 1024.
 * No NET_RAW, SYS_ADMIN, MKNOD, SETFCAP, AUDIT_WRITE (sshd runs without PAM).
 * allowPrivilegeEscalation false (no_new_privs) still lets root setuid()
 * down; it only stops execve from gaining privileges. */
static json_t *container_capabilities(long port)
{
	json_t *add = json_pack("[sssssss]", "CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL",
	    "SETGID", "SETUID", "SYS_CHROOT");

	if (!add)
		return NULL;
	if (port < 1024 && json_array_append_new(add, json_string("NET_BIND_SERVICE")) < 0) {
		json_decref(add);
		return NULL;
	}
	return json_pack("{s:[s],s:o}", "drop", "ALL", "add", add);
}

static json_t *pod_labels(const char *request_label)
{
	return json_pack("{s:s,s:s,s:s}", CONTROLLER_POD_APP_LABEL, CONTROLLER_POD_APP,
	    CONTROLLER_POD_MANAGED_BY_LABEL, CONTROLLER_POD_MANAGED_BY,
	    CONTROLLER_POD_REQUEST_LABEL, request_label);
}

static json_t *pod_metadata(const json_t *request, const char *pod_name,
    const char *request_label)
{
	const json_t *meta = json_object_get(request, "metadata");
	const json_t *spec = json_object_get(request, "spec");

	return json_pack("{s:s,s:s,s:o,s:{s:s},s:[{s:s,s:s,s:s,s:s,s:b,s:b}]}",
	    "name", pod_name,
	    "namespace", json_field_str(meta, "namespace"),
	    "labels", pod_labels(request_label),
	    "annotations", CONTROLLER_POD_SESSION_ANNOTATION, json_field_str(spec, "sessionId"),
	    "ownerReferences",
	    "apiVersion", "nix.io/v1alpha1",
	    "kind", "NixBuildRequest",
	    "name", json_field_str(meta, "name"),
	    "uid", json_field_str(meta, "uid"),
	    "controller", 1,
	    "blockOwnerDeletion", 1);
}

/* Nix mounts a fresh /proc in each build's namespaces, which the kernel
 * allows only where a /proc without masked paths is already visible; an
 * unmasked /proc is safe only in the pod's own user namespace (pod_spec). */
static int container_sandbox(json_t *c)
{
	json_t *env = json_object_get(c, "env");
	json_t *sc = json_object_get(c, "securityContext");

	if (json_array_append_new(env, json_pack("{s:s,s:s}", "name", "NRBC_BUILDER_SANDBOX",
	        "value", "1")) < 0)
		return -1;
	return json_object_set_new(sc, "procMount", json_string("Unmasked"));
}

/* A string array as one space-separated value; NULL when it is empty or
 * holds anything but strings without blanks. Heap string. */
static char *words(const json_t *a)
{
	struct buf b;
	size_t i;
	json_t *v;

	buf_init(&b, 4096);
	json_array_foreach(a, i, v) {
		const char *w = json_string_value(v);

		if (!w || !*w || strpbrk(w, " \t\n\"'\\$`") ||
		    buf_printf(&b, "%s%s", i ? " " : "", w) < 0) {
			buf_finish(&b);
			return NULL;
		}
	}
	if (!b.len) {
		buf_finish(&b);
		return NULL;
	}
	return buf_steal(&b);
}

/* The builder class's systems (nix.conf extra-platforms) and features
 * (system-features), for the entrypoint to add to nix.conf. */
static int container_class_env(json_t *c, const json_t *spec)
{
	static const struct { const char *field, *var; } vars[] = {
		{ "systems", "NRBC_BUILDER_SYSTEMS" },
		{ "supportedFeatures", "NRBC_BUILDER_FEATURES" },
	};
	json_t *env = json_object_get(c, "env");

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		char *value = words(json_object_get(spec, vars[i].field));
		int rc;

		if (!value)
			continue;
		rc = json_array_append_new(env, json_pack("{s:s,s:s}", "name", vars[i].var,
		    "value", value));
		free(value);
		if (rc < 0)
			return -1;
	}
	return 0;
}

static json_t *pod_container(const json_t *spec, const struct controller_pod_options *o)
{
	const char *image = json_field_str(spec, "image");
	char port_text[24];
	json_t *resources = pod_resources(spec, o);
	json_t *caps = container_capabilities(o->remote_port);
	json_t *c;

	if (!resources || !caps)
		goto fail;
	snprintf(port_text, sizeof(port_text), "%ld", o->remote_port);
	if (str_empty(image))
		image = o->builder_image;
	c = json_pack("{s:s,s:s,s:[{s:s,s:I,s:s}],s:[{s:s,s:s}],"
	                 "s:{s:{s:I},s:i,s:i,s:i,s:i,s:i},s:o,"
	                 "s:[{s:s,s:s,s:b},{s:s,s:s,s:b}],"
	                 "s:{s:b,s:o,s:b}}",
	    "name", CONTROLLER_POD_CONTAINER,
	    "image", image,
	    "ports", "name", "ssh", "containerPort", (json_int_t)o->remote_port,
	    "protocol", "TCP",
	    "env", "name", "NRBC_BUILDER_PORT", "value", port_text,
	    "readinessProbe", "tcpSocket", "port", (json_int_t)o->remote_port,
	    "initialDelaySeconds", 0, "periodSeconds", 1, "timeoutSeconds", 1,
	    "successThreshold", 1, "failureThreshold", 3,
	    "resources", resources,
	    "volumeMounts",
	    "name", "ssh-keys", "mountPath", CONTROLLER_POD_SSH_DIR, "readOnly", 1,
	    "name", "nix-config", "mountPath", CONTROLLER_POD_NIX_DIR, "readOnly", 1,
	    "securityContext", "allowPrivilegeEscalation", 0, "capabilities", caps,
	    "privileged", 0);
	if (c && ((o->sandbox && container_sandbox(c) < 0) || container_class_env(c, spec) < 0)) {
		json_decref(c);
		return NULL;
	}
	return c;
fail:
	json_decref(resources);
	json_decref(caps);
	return NULL;
}

/* Only the public key (authorized_keys) from the shared Secret, and the
 * pod's own host key from its own Secret: neither the shared private key
 * the proxy logs in with nor the shared host key (the proxy's own) ever
 * reaches a builder, where its tenant is root. */
static json_t *pod_ssh_keys_volume(const struct controller_pod_options *o,
    const char *host_key_secret)
{
	return json_pack("{s:s,s:{s:[{s:{s:s,s:[{s:s,s:s}]}},{s:{s:s,s:[{s:s,s:s}]}}],s:i}}",
	    "name", "ssh-keys", "projected", "sources",
	    "secret", "name", o->ssh_key_secret, "items", "key", "public", "path", "public",
	    "secret", "name", host_key_secret, "items", "key", "host-key", "path", "host-key",
	    "defaultMode", 0400);
}

static json_t *pod_volumes(const struct controller_pod_options *o, const char *host_key_secret)
{
	return json_pack("[o,{s:s,s:{s:s,s:i}}]", pod_ssh_keys_volume(o, host_key_secret),
	    "name", "nix-config", "configMap", "name", o->nix_config, "defaultMode", 0444);
}

/* The pod's own user namespace: its root, and the /proc it may see
 * unmasked, are nobody on the node. RuntimeDefault seccomp refuses the
 * namespaces, mounts and pivot_root of a sandboxed build; the Localhost
 * profile (manifests/seccomp/) allows them, as Pod Security baseline does. */
static int pod_sandbox(json_t *ps, const struct controller_pod_options *o)
{
	/* The controller refuses to start without one; never a pod the node
	 * cannot run. */
	if (str_empty(o->sandbox_seccomp_profile))
		return -1;
	if (json_object_set_new(ps, "hostUsers", json_false()) < 0)
		return -1;
	return json_object_set_new(ps, "securityContext", json_pack("{s:{s:s,s:s}}",
	    "seccompProfile", "type", "Localhost", "localhostProfile",
	    o->sandbox_seccomp_profile));
}

static json_t *pod_spec(const json_t *spec, const struct controller_pod_options *o,
    const char *host_key_secret)
{
	json_t *ps = json_pack("{s:s,s:b,s:b,s:I,s:{s:{s:s}},s:o,s:o}",
	    "restartPolicy", "Never",
	    "automountServiceAccountToken", 0,
	    "enableServiceLinks", 0,
	    "terminationGracePeriodSeconds", (json_int_t)o->termination_grace_seconds,
	    "securityContext", "seccompProfile", "type", "RuntimeDefault",
	    "containers", json_pack("[o]", pod_container(spec, o)),
	    "volumes", pod_volumes(o, host_key_secret));
	const json_t *node_selector = json_object_get(spec, "nodeSelector");
	const json_t *tolerations = json_object_get(spec, "tolerations");
	const json_t *affinity = json_object_get(spec, "affinity");
	const json_t *timeout = json_object_get(spec, "timeoutSeconds");

	if (!ps)
		return NULL;
	if (o->sandbox && pod_sandbox(ps, o) < 0)
		goto fail;
	if (json_object_size(node_selector) &&
	    json_object_set_new(ps, "nodeSelector", json_deep_copy(node_selector)) < 0)
		goto fail;
	if (json_array_size(tolerations) &&
	    json_object_set_new(ps, "tolerations", json_deep_copy(tolerations)) < 0)
		goto fail;
	if (json_object_size(affinity) &&
	    json_object_set_new(ps, "affinity", json_deep_copy(affinity)) < 0)
		goto fail;
	if (json_is_integer(timeout) && json_integer_value(timeout) > 0 &&
	    json_object_set_new(ps, "activeDeadlineSeconds",
	        json_integer(json_integer_value(timeout))) < 0)
		goto fail;
	return ps;
fail:
	json_decref(ps);
	return NULL;
}

static json_t *pod_build(const json_t *request, const struct controller_pod_options *o,
    const char *host_key_secret, char **err)
{
	const json_t *meta = json_object_get(request, "metadata");
	const json_t *spec = json_object_get(request, "spec");
	const char *name = json_field_str(meta, "name");
	char *pod_name = NULL;
	char *label = NULL;
	json_t *pod = NULL;

	*err = NULL;
	if (str_empty(name) || str_empty(json_field_str(meta, "namespace")) ||
	    str_empty(json_field_str(meta, "uid"))) {
		*err = str_printf("NixBuildRequest without name, namespace or uid");
		return NULL;
	}
	if (str_empty(o->builder_image) || str_empty(o->nix_config) ||
	    str_empty(o->ssh_key_secret) || str_empty(host_key_secret) ||
	    o->remote_port < 1 || o->remote_port > 65535) {
		*err = str_printf("incomplete builder pod options");
		return NULL;
	}
	if (!json_is_object(spec))
		spec = NULL;
	pod_name = controller_pod_name(name);
	label = controller_pod_request_label(name);
	if (!pod_name || !label)
		goto nomem;
	/* "o" steals even when json_pack fails, so a NULL member fails the
	 * pack (and leaks nothing). */
	pod = json_pack("{s:s,s:s,s:o,s:o}",
	    "apiVersion", "v1",
	    "kind", "Pod",
	    "metadata", pod_metadata(request, pod_name, label),
	    "spec", pod_spec(spec, o, host_key_secret));
	if (!pod)
		goto nomem;
	free(pod_name);
	free(label);
	return pod;
nomem:
	free(pod_name);
	free(label);
	*err = str_printf("out of memory building pod for %s", name);
	return NULL;
}

json_t *controller_pod_build(const json_t *request, const struct controller_pod_options *o,
    const char *host_key_secret, const char *host_key_public, char **err)
{
	json_t *pod = pod_build(request, o, host_key_secret, err);
	json_t *meta = json_object_get(pod, "metadata");

	if (pod && host_key_public && json_object_set_new(json_object_get(meta, "annotations"),
	    CONTROLLER_POD_HOST_KEY_ANNOTATION, json_string(host_key_public)) < 0) {
		json_decref(pod);
		*err = str_printf("out of memory building the pod of request %s",
		    json_field_str(json_object_get(request, "metadata"), "name"));
		return NULL;
	}
	return pod;
}

static const json_t *controller_owner_of_kind(const json_t *pod, const char *kind)
{
	const json_t *refs = json_object_get(json_object_get(pod, "metadata"), "ownerReferences");
	size_t i;
	json_t *ref;

	json_array_foreach(refs, i, ref) {
		if (json_is_true(json_object_get(ref, "controller")) &&
		    strcmp(json_field_str(ref, "kind"), kind) == 0 &&
		    strncmp(json_field_str(ref, "apiVersion"), "nix.io/", 7) == 0)
			return ref;
	}
	return NULL;
}

static const char *owner_name(const json_t *pod, const char *kind)
{
	const json_t *ref = controller_owner_of_kind(pod, kind);
	const char *name = ref ? json_field_str(ref, "name") : "";

	return *name ? name : NULL;
}

static bool owned_by(const json_t *pod, const char *kind, const char *uid)
{
	const json_t *ref = controller_owner_of_kind(pod, kind);

	return ref && !str_empty(uid) && strcmp(json_field_str(ref, "uid"), uid) == 0;
}

const char *controller_pod_owner_name(const json_t *pod)
{
	return owner_name(pod, "NixBuildRequest");
}

bool controller_pod_owned_by(const json_t *pod, const char *uid)
{
	return owned_by(pod, "NixBuildRequest", uid);
}

const char *controller_pod_builder_name(const json_t *pod)
{
	return owner_name(pod, "NixBuilder");
}

bool controller_pod_owned_by_builder(const json_t *pod, const char *uid)
{
	return owned_by(pod, "NixBuilder", uid);
}

json_t *controller_pod_build_for_builder(const json_t *builder,
    const struct controller_pod_options *o, const char *host_key_secret,
    const char *host_key_public, char **err)
{
	const json_t *bmeta = json_object_get(builder, "metadata");
	json_t *pod = pod_build(builder, o, host_key_secret, err);
	json_t *meta, *labels, *ref;
	char *label;

	if (!pod)
		return NULL;
	meta = json_object_get(pod, "metadata");
	labels = json_object_get(meta, "labels");
	ref = json_array_get(json_object_get(meta, "ownerReferences"), 0);
	label = controller_pod_request_label(json_field_str(bmeta, "name"));
	if (!label || json_object_set_new(meta, "annotations", json_object()) < 0 ||
	    controller_pod_set_safe_to_evict(pod, true) < 0 ||
	    (host_key_public && json_object_set_new(json_object_get(meta, "annotations"),
	        CONTROLLER_POD_HOST_KEY_ANNOTATION, json_string(host_key_public)) < 0) ||
	    json_object_del(labels, CONTROLLER_POD_REQUEST_LABEL) < 0 ||
	    json_object_set_new(labels, CONTROLLER_POD_BUILDER_LABEL, json_string(label)) < 0 ||
	    json_object_set_new(ref, "kind", json_string("NixBuilder")) < 0) {
		free(label);
		json_decref(pod);
		*err = str_printf("out of memory building the pod of builder %s",
		    json_field_str(bmeta, "name"));
		return NULL;
	}
	free(label);
	return pod;
}

int controller_pod_set_safe_to_evict(json_t *pod, bool safe)
{
	json_t *meta = json_object_get(pod, "metadata");
	json_t *ann = json_object_get(meta, "annotations");

	if (!json_is_object(ann)) {
		if (json_object_set_new(meta, "annotations", json_object()) < 0)
			return -1;
		ann = json_object_get(meta, "annotations");
	}
	return json_object_set_new(ann, CONTROLLER_POD_SAFE_TO_EVICT_ANNOTATION,
	    json_string(safe ? "true" : "false"));
}

int controller_pod_add_siblings(json_t *pod, const char *proxy_address,
    const char *host_key_config_map)
{
	json_t *spec = json_object_get(pod, "spec");
	json_t *c = json_array_get(json_object_get(spec, "containers"), 0);

	if (json_array_append_new(json_object_get(c, "env"), json_pack("{s:s,s:s}", "name",
	        "NRBC_BUILDER_SIBLING_PROXY", "value", proxy_address)) < 0 ||
	    json_array_append_new(json_object_get(c, "volumeMounts"), json_pack("{s:s,s:s,s:b}",
	        "name", "proxy-host-key", "mountPath", CONTROLLER_POD_PROXY_DIR, "readOnly", 1)) < 0)
		return -1;
	return json_array_append_new(json_object_get(spec, "volumes"),
	    json_pack("{s:s,s:{s:s,s:b,s:[{s:s,s:s}],s:i}}", "name", "proxy-host-key",
	        "configMap", "name", host_key_config_map, "optional", 1, "items", "key",
	        "host-key.pub", "path", "host-key.pub", "defaultMode", 0444));
}

const char *controller_pod_host_key(const json_t *pod)
{
	return json_field_str(json_object_get(json_object_get(pod, "metadata"), "annotations"),
	    CONTROLLER_POD_HOST_KEY_ANNOTATION);
}

const char *controller_pod_safe_to_evict(const json_t *pod)
{
	return json_field_str(json_object_get(json_object_get(pod, "metadata"), "annotations"),
	    CONTROLLER_POD_SAFE_TO_EVICT_ANNOTATION);
}

bool controller_pod_ready(const json_t *pod)
{
	const json_t *st = json_object_get(pod, "status");
	const json_t *conds = json_object_get(st, "conditions");
	size_t i;
	json_t *c;
	bool ready = false;

	json_array_foreach(conds, i, c) {
		if (strcmp(json_field_str(c, "type"), "Ready") == 0)
			ready = strcmp(json_field_str(c, "status"), "True") == 0;
	}
	return ready && strcmp(json_field_str(st, "phase"), "Running") == 0 &&
	    *json_field_str(st, "podIP");
}
