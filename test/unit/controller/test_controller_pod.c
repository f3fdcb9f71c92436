#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "controller/controller_pod.h"
#include "controller_test_fixtures.h"


static json_t *request(const char *spec_json)
{
	json_error_t e;
	json_t *spec = json_loads(spec_json ? spec_json : "{\"sessionId\":\"s-1\"}", 0, &e);
	json_t *r;

	assert_non_null(spec);
	r = json_pack("{s:s,s:s,s:{s:s,s:s,s:s,s:I},s:o}", "apiVersion", "nix.io/v1alpha1",
	    "kind", "NixBuildRequest", "metadata", "name", "build-abc", "namespace", "builds",
	    "uid", "0b7c9a52-1111-2222-3333-444455556666", "generation", (json_int_t)1,
	    "spec", spec);
	assert_non_null(r);
	return r;
}

static json_t *build(const json_t *req, const struct controller_pod_options *o)
{
	char *err = NULL;
	json_t *pod = controller_pod_build(req, o, "hk-secret", "ecdsa-sha2-nistp256 AAAA", &err);

	if (!pod)
		fail_msg("controller_pod_build: %s", err ? err : "(no message)");
	assert_null(err);
	return pod;
}

/* Digs a value out by a dotted path; numbers index arrays. */
static json_t *at(json_t *v, const char *path)
{
	char part[256];

	while (v && *path) {
		const char *dot = strchr(path, '.');
		size_t n = dot ? (size_t)(dot - path) : strlen(path);

		assert_true(n < sizeof(part));
		memcpy(part, path, n);
		part[n] = '\0';
		if (*part >= '0' && *part <= '9')
			v = json_array_get(v, (size_t)strtoul(part, NULL, 10));
		else
			v = json_object_get(v, part);
		path += dot ? n + 1 : n;
	}
	return v;
}

static const char *str_at(json_t *v, const char *path)
{
	json_t *s = at(v, path);

	if (!json_is_string(s))
		fail_msg("%s is not a string", path);
	return json_string_value(s);
}

static long long int_at(json_t *v, const char *path)
{
	json_t *i = at(v, path);

	if (!json_is_integer(i))
		fail_msg("%s is not an integer", path);
	return json_integer_value(i);
}

static bool array_has(json_t *arr, const char *s)
{
	size_t i;
	json_t *v;

	json_array_foreach(arr, i, v) {
		if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
			return true;
	}
	return false;
}

static void test_metadata_and_owner(void **state)
{
	json_t *req = request(NULL);
	json_t *pod = build(req, &test_pod_options);

	assert_string_equal(str_at(pod, "apiVersion"), "v1");
	assert_string_equal(str_at(pod, "kind"), "Pod");
	assert_string_equal(str_at(pod, "metadata.name"), "nix-builder-build-abc");
	assert_string_equal(str_at(pod, "metadata.namespace"), "builds");
	assert_null(at(pod, "metadata.uid"));
	assert_null(at(pod, "status"));
	json_decref(req);
	json_decref(pod);
}

static void test_labels(void **state)
{
	json_t *req = request(NULL);
	json_t *pod = build(req, &test_pod_options);
	json_t *labels = at(pod, "metadata.labels");

	assert_int_equal(json_object_size(labels), 3);
	assert_string_equal(json_string_value(json_object_get(labels, "app.kubernetes.io/name")),
	    "nrbc-builder");
	assert_string_equal(json_string_value(json_object_get(labels,
	    "app.kubernetes.io/managed-by")), "nrbc-controller");
	assert_string_equal(json_string_value(json_object_get(labels, "nix.io/build-request")),
	    "build-abc");
	assert_string_equal(json_string_value(json_object_get(at(pod, "metadata.annotations"),
	    "nix.io/session-id")), "s-1");
	json_decref(req);
	json_decref(pod);
}

static void test_owner_reference(void **state)
{
	json_t *req = request(NULL);
	json_t *pod = build(req, &test_pod_options);
	json_t *refs = at(pod, "metadata.ownerReferences");

	assert_int_equal(json_array_size(refs), 1);
	assert_string_equal(str_at(refs, "0.apiVersion"), "nix.io/v1alpha1");
	assert_string_equal(str_at(refs, "0.kind"), "NixBuildRequest");
	assert_string_equal(str_at(refs, "0.name"), "build-abc");
	assert_string_equal(str_at(refs, "0.uid"), "0b7c9a52-1111-2222-3333-444455556666");
	assert_true(json_is_true(at(refs, "0.controller")));
	assert_true(json_is_true(at(refs, "0.blockOwnerDeletion")));
	assert_string_equal(controller_pod_owner_name(pod), "build-abc");
	assert_true(controller_pod_owned_by(pod, "0b7c9a52-1111-2222-3333-444455556666"));
	assert_false(controller_pod_owned_by(pod, "another-uid"));
	assert_false(controller_pod_owned_by(pod, ""));
	json_decref(req);
	json_decref(pod);
}

static void test_owner_needs_controller_flag(void **state)
{
	json_t *pod = json_loads("{\"metadata\":{\"ownerReferences\":["
	    "{\"apiVersion\":\"nix.io/v1alpha1\",\"kind\":\"NixBuildRequest\",\"name\":\"x\","
	    "\"uid\":\"u\"},"
	    "{\"apiVersion\":\"apps/v1\",\"kind\":\"ReplicaSet\",\"name\":\"y\",\"uid\":\"v\","
	    "\"controller\":true}]}}", 0, NULL);

	assert_non_null(pod);
	assert_null(controller_pod_owner_name(pod));
	assert_false(controller_pod_owned_by(pod, "u"));
	assert_false(controller_pod_owned_by(pod, "v"));
	json_decref(pod);
	assert_null(controller_pod_owner_name(NULL));
}

static void test_container_basics(void **state)
{
	json_t *req = request(NULL);
	json_t *pod = build(req, &test_pod_options);
	json_t *c = at(pod, "spec.containers.0");

	assert_int_equal(json_array_size(at(pod, "spec.containers")), 1);
	assert_string_equal(str_at(c, "name"), "builder");
	assert_string_equal(str_at(c, "image"), "registry.example/nrbc-builder:1");
	assert_int_equal(int_at(c, "ports.0.containerPort"), 22);
	assert_string_equal(str_at(c, "ports.0.name"), "ssh");
	assert_string_equal(str_at(c, "env.0.name"), "NRBC_BUILDER_PORT");
	assert_string_equal(str_at(c, "env.0.value"), "22");
	assert_int_equal(int_at(c, "readinessProbe.tcpSocket.port"), 22);
	assert_int_equal(int_at(c, "readinessProbe.initialDelaySeconds"), 0);
	assert_true(int_at(c, "readinessProbe.periodSeconds") >= 1 &&
	    int_at(c, "readinessProbe.periodSeconds") <= 2);
	assert_string_equal(str_at(pod, "spec.restartPolicy"), "Never");
	assert_int_equal(int_at(pod, "spec.terminationGracePeriodSeconds"), 5);
	assert_null(at(pod, "spec.activeDeadlineSeconds"));
	assert_null(at(pod, "spec.nodeSelector"));
	json_decref(req);
	json_decref(pod);
}

static void test_spec_image_port_deadline_selector(void **state)
{
	struct controller_pod_options o = test_pod_options;
	json_t *req = request("{\"sessionId\":\"s\",\"image\":\"custom:2\",\"timeoutSeconds\":3600,"
	                      "\"nodeSelector\":{\"kubernetes.io/arch\":\"amd64\",\"pool\":\"nix\"}}");
	json_t *pod;
	json_t *c;

	o.remote_port = 2222;
	pod = build(req, &o);
	c = at(pod, "spec.containers.0");
	assert_string_equal(str_at(c, "image"), "custom:2");
	assert_int_equal(int_at(c, "ports.0.containerPort"), 2222);
	assert_int_equal(int_at(c, "readinessProbe.tcpSocket.port"), 2222);
	assert_string_equal(str_at(c, "env.0.value"), "2222");
	assert_int_equal(int_at(pod, "spec.activeDeadlineSeconds"), 3600);
	assert_int_equal(json_object_size(at(pod, "spec.nodeSelector")), 2);
	assert_string_equal(json_string_value(json_object_get(at(pod, "spec.nodeSelector"),
	    "kubernetes.io/arch")), "amd64");
	assert_string_equal(str_at(pod, "spec.nodeSelector.pool"), "nix");
	/* Above 1023 the port needs no NET_BIND_SERVICE. */
	assert_false(array_has(at(c, "securityContext.capabilities.add"), "NET_BIND_SERVICE"));
	json_decref(req);
	json_decref(pod);
}

static void test_empty_spec_image_uses_flag(void **state)
{
	json_t *req = request("{\"sessionId\":\"s\",\"image\":\"\"}");
	json_t *pod = build(req, &test_pod_options);

	assert_string_equal(str_at(pod, "spec.containers.0.image"),
	    "registry.example/nrbc-builder:1");
	json_decref(req);
	json_decref(pod);
}

static void test_default_resources(void **state)
{
	json_t *req = request(NULL);
	json_t *pod = build(req, &test_pod_options);
	json_t *res = at(pod, "spec.containers.0.resources");

	assert_string_equal(str_at(res, "requests.cpu"), "500m");
	assert_string_equal(str_at(res, "requests.memory"), "1Gi");
	/* "" means unset. */
	assert_null(at(res, "limits.cpu"));
	assert_string_equal(str_at(res, "limits.memory"), "4Gi");
	json_decref(req);
	json_decref(pod);
}

static void test_no_defaults_no_resources(void **state)
{
	struct controller_pod_options o = test_pod_options;
	json_t *req = request(NULL);
	json_t *pod;

	o.default_cpu_request = o.default_memory_request = NULL;
	o.default_cpu_limit = o.default_memory_limit = "";
	pod = build(req, &o);
	assert_int_equal(json_object_size(at(pod, "spec.containers.0.resources")), 0);
	json_decref(req);
	json_decref(pod);
}

static void test_spec_resources_win(void **state)
{
	json_t *req = request("{\"sessionId\":\"s\",\"resources\":{"
	    "\"requests\":{\"cpu\":2,\"ephemeral-storage\":\"10Gi\"},"
	    "\"limits\":{\"memory\":\"8Gi\",\"cpu\":\"4\"}}}");
	json_t *pod = build(req, &test_pod_options);
	json_t *res = at(pod, "spec.containers.0.resources");

	/* Integers become quantity strings. */
	assert_string_equal(str_at(res, "requests.cpu"), "2");
	assert_string_equal(str_at(res, "requests.ephemeral-storage"), "10Gi");
	assert_string_equal(str_at(res, "limits.cpu"), "4");
	assert_string_equal(str_at(res, "limits.memory"), "8Gi");
	/* memory is named by a spec limit, so the default request (which could
	 * exceed it) stays out; Kubernetes defaults the request to the limit. */
	assert_null(at(res, "requests.memory"));
	assert_int_equal(json_object_size(at(res, "requests")), 2);
	json_decref(req);
	json_decref(pod);
}

static void test_spec_limit_only_blocks_default_request(void **state)
{
	json_t *req = request("{\"sessionId\":\"s\",\"resources\":{\"limits\":{\"cpu\":\"100m\"}}}");
	json_t *pod = build(req, &test_pod_options);
	json_t *res = at(pod, "spec.containers.0.resources");

	assert_null(at(res, "requests.cpu"));
	assert_string_equal(str_at(res, "limits.cpu"), "100m");
	assert_string_equal(str_at(res, "requests.memory"), "1Gi");
	assert_string_equal(str_at(res, "limits.memory"), "4Gi");
	json_decref(req);
	json_decref(pod);
}

static void test_volumes_never_private_key(void **state)
{
	json_t *req = request(NULL);
	json_t *pod = build(req, &test_pod_options);
	json_t *vols = at(pod, "spec.volumes");
	json_t *mounts = at(pod, "spec.containers.0.volumeMounts");
	size_t i;
	json_t *item;

	assert_int_equal(json_array_size(vols), 2);
	assert_string_equal(str_at(vols, "0.name"), "ssh-keys");
	assert_null(at(vols, "0.secret"));
	assert_int_equal(int_at(vols, "0.projected.defaultMode"), 0400);
	/* The shared Secret gives the public key only; the host key is the
	 * pod's own, never the shared one (the proxy's). */
	assert_int_equal(json_array_size(at(vols, "0.projected.sources")), 2);
	assert_string_equal(str_at(vols, "0.projected.sources.0.secret.name"),
	    "nix-builder-ssh-keys");
	assert_int_equal(json_array_size(at(vols, "0.projected.sources.0.secret.items")), 1);
	assert_string_equal(str_at(vols, "0.projected.sources.0.secret.items.0.key"), "public");
	assert_string_equal(str_at(vols, "0.projected.sources.0.secret.items.0.path"), "public");
	assert_string_equal(str_at(vols, "0.projected.sources.1.secret.name"), "hk-secret");
	assert_string_equal(str_at(vols, "0.projected.sources.1.secret.items.0.key"), "host-key");
	assert_string_equal(str_at(vols, "0.projected.sources.1.secret.items.0.path"),
	    "host-key");
	for (int src = 0; src < 2; src++) {
		json_array_foreach(json_object_get(json_object_get(json_array_get(
		    at(vols, "0.projected.sources"), (size_t)src), "secret"), "items"), i, item)
			assert_string_not_equal(str_at(item, "key"), "private");
	}
	assert_string_equal(controller_pod_host_key(pod), "ecdsa-sha2-nistp256 AAAA");
	assert_string_equal(str_at(vols, "1.name"), "nix-config");
	assert_string_equal(str_at(vols, "1.configMap.name"), "nix-config");

	assert_int_equal(json_array_size(mounts), 2);
	assert_string_equal(str_at(mounts, "0.name"), "ssh-keys");
	assert_string_equal(str_at(mounts, "0.mountPath"), "/etc/nrbc/ssh");
	assert_true(json_is_true(at(mounts, "0.readOnly")));
	assert_string_equal(str_at(mounts, "1.name"), "nix-config");
	assert_string_equal(str_at(mounts, "1.mountPath"), "/etc/nix");
	assert_true(json_is_true(at(mounts, "1.readOnly")));
	json_decref(req);
	json_decref(pod);
}

static void test_security_context(void **state)
{
	static const char *const wanted[] = { "CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID",
		"SETUID", "SYS_CHROOT", "NET_BIND_SERVICE" };
	json_t *req = request(NULL);
	json_t *pod = build(req, &test_pod_options);
	json_t *sc = at(pod, "spec.containers.0.securityContext");
	json_t *add = at(sc, "capabilities.add");

	assert_string_equal(str_at(pod, "spec.securityContext.seccompProfile.type"),
	    "RuntimeDefault");
	assert_true(json_is_false(at(pod, "spec.automountServiceAccountToken")));
	assert_true(json_is_false(at(pod, "spec.enableServiceLinks")));
	assert_true(json_is_false(at(sc, "allowPrivilegeEscalation")));
	assert_true(json_is_false(at(sc, "privileged")));
	assert_int_equal(json_array_size(at(sc, "capabilities.drop")), 1);
	assert_string_equal(str_at(sc, "capabilities.drop.0"), "ALL");
	assert_int_equal(json_array_size(add), sizeof(wanted) / sizeof(wanted[0]));
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
		assert_true(array_has(add, wanted[i]));
	assert_false(array_has(add, "SYS_ADMIN"));
	assert_false(array_has(add, "NET_RAW"));
	json_decref(req);
	json_decref(pod);
}

/* The sandbox's pod: its own user namespace, an unmasked /proc, the
 * Localhost profile, the entrypoint told; nothing else loosened. */
static void test_sandbox(void **state)
{
	struct controller_pod_options o = test_pod_options;
	json_t *req = request(NULL);
	json_t *plain = build(req, &test_pod_options);
	json_t *pod, *c, *env;
	size_t i;
	json_t *e;
	bool told = false;
	char *err = NULL;

	assert_null(json_object_get(at(plain, "spec"), "hostUsers"));
	assert_null(json_object_get(at(plain, "spec.containers.0.securityContext"), "procMount"));
	o.sandbox = true;
	o.sandbox_seccomp_profile = "nrbc/builder-sandbox.json";
	pod = build(req, &o);
	c = at(pod, "spec.containers.0");
	assert_true(json_is_false(at(pod, "spec.hostUsers")));
	assert_string_equal(str_at(pod, "spec.securityContext.seccompProfile.type"), "Localhost");
	assert_string_equal(str_at(pod, "spec.securityContext.seccompProfile.localhostProfile"),
	    "nrbc/builder-sandbox.json");
	assert_string_equal(str_at(c, "securityContext.procMount"), "Unmasked");
	assert_true(json_is_false(at(c, "securityContext.allowPrivilegeEscalation")));
	assert_true(json_is_false(at(c, "securityContext.privileged")));
	assert_true(json_equal(at(c, "securityContext.capabilities"),
	    at(plain, "spec.containers.0.securityContext.capabilities")));
	env = at(c, "env");
	json_array_foreach(env, i, e) {
		if (strcmp(str_at(e, "name"), "NRBC_BUILDER_SANDBOX") == 0)
			told = strcmp(str_at(e, "value"), "1") == 0;
	}
	assert_true(told);
	json_decref(pod);

	/* No profile named: no pod, rather than one the node cannot run. */
	o.sandbox_seccomp_profile = "";
	assert_null(controller_pod_build(req, &o, "hk-secret", NULL, &err));
	free(err);
	json_decref(req);
	json_decref(plain);
}

static void assert_dns_label(const char *s)
{
	size_t n = strlen(s);

	assert_true(n >= 1 && n <= 63);
	for (size_t i = 0; i < n; i++)
		assert_true((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		    s[i] == '-');
	assert_true(s[0] != '-' && s[n - 1] != '-');
}

static void test_names_short(void **state)
{
	char *n = controller_pod_name("build-abc");
	char *l = controller_pod_request_label("build-abc");

	assert_string_equal(n, "nix-builder-build-abc");
	assert_string_equal(l, "build-abc");
	free(n);
	free(l);
	/* Exactly 63 with the prefix: kept as is. */
	n = controller_pod_name("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_int_equal(strlen(n), 63);
	assert_string_equal(n + 12, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	free(n);
}

static void test_names_long_and_dotted(void **state)
{
	char long_a[254], long_b[254];
	char *na, *nb, *na2, *la, *lb, *dot, *dash;

	memset(long_a, 'a', 253);
	long_a[253] = '\0';
	memcpy(long_b, long_a, sizeof(long_a));
	long_b[252] = 'b';
	na = controller_pod_name(long_a);
	nb = controller_pod_name(long_b);
	na2 = controller_pod_name(long_a);
	la = controller_pod_request_label(long_a);
	lb = controller_pod_request_label(long_b);
	assert_dns_label(na);
	assert_dns_label(nb);
	assert_dns_label(la);
	assert_dns_label(lb);
	assert_int_equal(strncmp(na, "nix-builder-aaa", 15), 0);
	/* Deterministic, and names differing only past the cut stay apart. */
	assert_string_equal(na, na2);
	assert_string_not_equal(na, nb);
	assert_string_not_equal(la, lb);
	/* Dots are legal in object names but not in a hostname; "a.b" and
	 * "a-b" must not collide. */
	dot = controller_pod_name("build.v1");
	dash = controller_pod_name("build-v1");
	assert_dns_label(dot);
	assert_string_equal(dash, "nix-builder-build-v1");
	assert_string_not_equal(dot, dash);
	free(na);
	free(nb);
	free(na2);
	free(la);
	free(lb);
	free(dot);
	free(dash);
}

static void test_long_name_pod(void **state)
{
	char name[201];
	json_t *req = request(NULL);
	json_t *pod;

	memset(name, 'x', 200);
	name[200] = '\0';
	json_object_set_new(json_object_get(req, "metadata"), "name", json_string(name));
	pod = build(req, &test_pod_options);
	assert_dns_label(str_at(pod, "metadata.name"));
	assert_true(strlen(json_string_value(json_object_get(at(pod, "metadata.labels"),
	    "nix.io/build-request"))) <= 63);
	/* The owner reference carries the full name. */
	assert_string_equal(str_at(pod, "metadata.ownerReferences.0.name"), name);
	json_decref(req);
	json_decref(pod);
}

static void test_bad_input(void **state)
{
	struct controller_pod_options o = test_pod_options;
	json_t *req = request(NULL);
	char *err = NULL;

	json_object_del(json_object_get(req, "metadata"), "uid");
	assert_null(controller_pod_build(req, &o, "hk-secret", NULL, &err));
	assert_non_null(err);
	free(err);
	json_decref(req);

	req = request(NULL);
	o.builder_image = "";
	assert_null(controller_pod_build(req, &o, "hk-secret", NULL, &err));
	assert_non_null(err);
	free(err);
	o = test_pod_options;
	o.remote_port = 0;
	assert_null(controller_pod_build(req, &o, "hk-secret", NULL, &err));
	free(err);
	o = test_pod_options;
	o.ssh_key_secret = NULL;
	assert_null(controller_pod_build(req, &o, "hk-secret", NULL, &err));
	free(err);
	/* No host key Secret of its own: no pod (the shared host key is the
	 * proxy's, and no pod gets it). */
	o = test_pod_options;
	assert_null(controller_pod_build(req, &o, NULL, NULL, &err));
	assert_non_null(err);
	free(err);
	assert_null(controller_pod_build(req, &o, "", NULL, &err));
	free(err);
	json_decref(req);

	/* A request without a spec still gets a pod (sessionId is validated by
	 * the API server, not here). */
	req = json_pack("{s:{s:s,s:s,s:s}}", "metadata", "name", "n", "namespace", "ns", "uid", "u");
	json_t *pod = build(req, &test_pod_options);
	assert_string_equal(str_at(pod, "spec.containers.0.image"),
	    "registry.example/nrbc-builder:1");
	json_decref(pod);
	json_decref(req);
}

static void test_deterministic(void **state)
{
	json_t *req = request("{\"sessionId\":\"s\",\"timeoutSeconds\":5}");
	json_t *a = build(req, &test_pod_options);
	json_t *b = build(req, &test_pod_options);

	assert_true(json_equal(a, b));
	json_decref(a);
	json_decref(b);
	json_decref(req);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_metadata_and_owner),
		cmocka_unit_test(test_labels),
		cmocka_unit_test(test_owner_reference),
		cmocka_unit_test(test_owner_needs_controller_flag),
		cmocka_unit_test(test_container_basics),
		cmocka_unit_test(test_spec_image_port_deadline_selector),
		cmocka_unit_test(test_empty_spec_image_uses_flag),
		cmocka_unit_test(test_default_resources),
		cmocka_unit_test(test_no_defaults_no_resources),
		cmocka_unit_test(test_spec_resources_win),
		cmocka_unit_test(test_spec_limit_only_blocks_default_request),
		cmocka_unit_test(test_volumes_never_private_key),
		cmocka_unit_test(test_security_context),
		cmocka_unit_test(test_sandbox),
		cmocka_unit_test(test_names_short),
		cmocka_unit_test(test_names_long_and_dotted),
		cmocka_unit_test(test_long_name_pod),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_deterministic),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
