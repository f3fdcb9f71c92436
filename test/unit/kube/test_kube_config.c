#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "kube/kube_config.h"

static char tmpdir[256];

static void write_file(const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/nrbc-kubeconfig-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	write_file("ca.crt", "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n");
	write_file("client.crt", "CERT\n");
	write_file("client.key", "KEY\n");
	write_file("token", "file-token-1\n");
	return 0;
}

static int teardown(void **state)
{
	const char *names[] = { "ca.crt", "client.crt", "client.key", "token", "token.new",
		"kubeconfig", "namespace" };
	char path[512];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
		unlink(path);
	}
	rmdir(tmpdir);
	return 0;
}

/* The Authorization header kube_config_apply adds, or "" when none. */
static char *auth_header(struct kube_config *cfg)
{
	struct curl_slist *headers = NULL;
	CURL *easy = curl_easy_init();
	char *err = NULL, *out;

	assert_non_null(easy);
	if (kube_config_apply(cfg, easy, &headers, &err) < 0)
		fail_msg("apply failed: %s", err);
	out = strdup(headers ? headers->data : "");
	curl_slist_free_all(headers);
	curl_easy_cleanup(easy);
	return out;
}

static struct kube_config *parse_ok(const char *text, const char *context)
{
	char *err = NULL;
	struct kube_config *cfg = kube_config_parse(text, strlen(text), tmpdir, context, &err);

	if (!cfg)
		fail_msg("parse failed: %s", err);
	return cfg;
}

static void expect_parse_error(const char *text, const char *context, const char *fragment)
{
	char *err = NULL;
	struct kube_config *cfg = kube_config_parse(text, strlen(text), tmpdir, context, &err);

	if (cfg)
		fail_msg("parse succeeded, expected an error containing \"%s\"", fragment);
	assert_non_null(err);
	if (!strstr(err, fragment))
		fail_msg("error \"%s\" does not contain \"%s\"", err, fragment);
	free(err);
}

static const char kc_data[] =
    "apiVersion: v1\n"
    "kind: Config\n"
    "current-context: admin@local\n"
    "clusters:\n"
    "- name: other\n"
    "  cluster:\n"
    "    server: https://127.0.0.2:7443\n"
    "- name: local\n"
    "  cluster:\n"
    "    server: https://127.0.0.1:6443/\n"
    "    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\n"
    "contexts:\n"
    "- name: admin@local\n"
    "  context:\n"
    "    cluster: local\n"
    "    user: admin\n"
    "    namespace: builds\n"
    "- name: token@other\n"
    "  context: {cluster: other, user: tok}\n"
    "users:\n"
    "- name: admin\n"
    "  user:\n"
    "    client-certificate-data: Q0VSVAo=\n"
    "    client-key-data: S0VZCg==\n"
    "- name: tok\n"
    "  user:\n"
    "    token: abc.def\n";

static void test_current_context_with_data(void **state)
{
	struct kube_config *cfg = parse_ok(kc_data, NULL);
	char *auth;

	assert_string_equal(kube_config_server(cfg), "https://127.0.0.1:6443");
	assert_string_equal(kube_config_namespace(cfg), "builds");
	auth = auth_header(cfg);
	assert_string_equal(auth, "");
	free(auth);
	kube_config_destroy(cfg);
}

static void test_named_context_with_token(void **state)
{
	struct kube_config *cfg = parse_ok(kc_data, "token@other");
	char *auth;

	assert_string_equal(kube_config_server(cfg), "https://127.0.0.2:7443");
	assert_string_equal(kube_config_namespace(cfg), "default");
	auth = auth_header(cfg);
	assert_string_equal(auth, "Authorization: Bearer abc.def");
	free(auth);
	kube_config_destroy(cfg);
}

static void test_files_and_token_file(void **state)
{
	const char *text =
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1', "
	    "certificate-authority: ca.crt}}]\n"
	    "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
	    "users:\n"
	    "- name: u\n"
	    "  user:\n"
	    "    client-certificate: client.crt\n"
	    "    client-key: client.key\n"
	    "    tokenFile: token\n";
	struct kube_config *cfg = parse_ok(text, NULL);
	char path[512], path2[512];
	char *auth;

	auth = auth_header(cfg);
	assert_string_equal(auth, "Authorization: Bearer file-token-1");
	free(auth);
	/* Rotation the way kubelet does it: a new file renamed over the old. */
	write_file("token.new", "file-token-2-longer\n");
	snprintf(path, sizeof(path), "%s/token.new", tmpdir);
	snprintf(path2, sizeof(path2), "%s/token", tmpdir);
	assert_int_equal(rename(path, path2), 0);
	auth = auth_header(cfg);
	assert_string_equal(auth, "Authorization: Bearer file-token-2-longer");
	free(auth);
	/* A vanished token file keeps the last good token. */
	assert_int_equal(unlink(path2), 0);
	auth = auth_header(cfg);
	assert_string_equal(auth, "Authorization: Bearer file-token-2-longer");
	free(auth);
	write_file("token", "file-token-1\n");
	kube_config_destroy(cfg);
}

static void test_insecure_and_http(void **state)
{
	struct kube_config *cfg = parse_ok(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:8080', "
	    "insecure-skip-tls-verify: true}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL);

	assert_string_equal(kube_config_server(cfg), "http://127.0.0.1:8080");
	kube_config_destroy(cfg);
}

static void test_yaml_anchors(void **state)
{
	struct kube_config *cfg = parse_ok(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: &cl {server: 'https://127.0.0.1:9'}}]\n"
	    "contexts: [{name: c, context: {cluster: k, user: u, namespace: ns1}}]\n"
	    "users: [{name: u, user: {token: t1}}]\n"
	    "extra: *cl\n", NULL);

	assert_string_equal(kube_config_namespace(cfg), "ns1");
	kube_config_destroy(cfg);
}

static void test_broken_configs(void **state)
{
	expect_parse_error("clusters: [\n", NULL, "kubeconfig: invalid YAML at line");
	expect_parse_error("", NULL, "empty document");
	expect_parse_error("- a\n- b\n", NULL, "top level is not a mapping");
	expect_parse_error("clusters: []\n", NULL, "current-context is not set");
	expect_parse_error(kc_data, "nope", "kubeconfig: context \"nope\" not found");
	expect_parse_error(
	    "current-context: c\n"
	    "contexts: [{name: c, context: {cluster: gone}}]\n", NULL,
	    "cluster \"gone\" not found");
	expect_parse_error(
	    "current-context: c\n"
	    "contexts: [{name: c, context: {user: u}}]\n", NULL,
	    "contexts[0].context.cluster: missing");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {insecure-skip-tls-verify: true}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL,
	    "clusters[0].cluster.server: missing");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'ftp://x'}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL,
	    "is not an http(s) URL");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1', "
	    "certificate-authority-data: '!!notbase64'}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL,
	    "clusters[0].cluster.certificate-authority-data: invalid base64");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
	    "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
	    "users: [{name: other, user: {}}, {name: u, user: {client-certificate: "
	    "/nonexistent/c.crt, client-key: /nonexistent/c.key}}]\n", NULL,
	    "users[1].user.client-certificate: cannot read /nonexistent/c.crt: "
	    "No such file or directory");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
	    "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
	    "users: [{name: u, user: {client-certificate: client.crt}}]\n", NULL,
	    "must be given together");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
	    "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
	    "users: [{name: u, user: {exec: {command: aws}}}]\n", NULL,
	    "exec and auth-provider credentials are not supported");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
	    "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
	    "users: [{name: u, user: {tokenFile: missing-token}}]\n", NULL,
	    "missing-token: No such file or directory");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: [1, 2]}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL,
	    "clusters[0].cluster.server: expected a string");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
	    "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
	    "users: [{name: u, user: {token: \"a\\nX-Injected: 1\"}}]\n", NULL,
	    "users[0].user.token: empty or contains control characters");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: {name: k}\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL,
	    "clusters: expected a list");
	expect_parse_error(
	    "current-context: c\n"
	    "contexts: [{name: c, context: [1]}]\n", NULL,
	    "contexts[0].context: missing or not a mapping");
}

static void test_load_names_the_file(void **state)
{
	char path[512], *err = NULL;
	struct kube_config *cfg;

	snprintf(path, sizeof(path), "%s/kubeconfig", tmpdir);
	write_file("kubeconfig", kc_data);
	cfg = kube_config_load(path, "missing", &err);
	assert_null(cfg);
	{
		char *want = str_printf("kubeconfig %s: context \"missing\" not found", path);

		assert_string_equal(err, want);
		free(want);
	}
	free(err);
	err = NULL;
	cfg = kube_config_load(path, NULL, &err);
	assert_non_null(cfg);
	assert_string_equal(kube_config_server(cfg), "https://127.0.0.1:6443");
	kube_config_destroy(cfg);

	cfg = kube_config_load("/nonexistent/kubeconfig", NULL, &err);
	assert_null(cfg);
	assert_string_equal(err,
	    "kubeconfig /nonexistent/kubeconfig: cannot read: No such file or directory");
	free(err);
}

static void test_in_cluster(void **state)
{
	struct kube_config *cfg;
	char *err = NULL, *auth;

	unsetenv("KUBERNETES_SERVICE_HOST");
	cfg = kube_config_in_cluster(tmpdir, &err);
	assert_null(cfg);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST is not set"));
	free(err);
	err = NULL;

	setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "6443", 1);
	cfg = kube_config_in_cluster(tmpdir, &err);
	if (!cfg)
		fail_msg("in-cluster: %s", err);
	assert_string_equal(kube_config_server(cfg), "https://127.0.0.1:6443");
	assert_string_equal(kube_config_namespace(cfg), "default");
	auth = auth_header(cfg);
	assert_string_equal(auth, "Authorization: Bearer file-token-1");
	free(auth);
	kube_config_destroy(cfg);

	write_file("namespace", "nrbc-system\n");
	setenv("KUBERNETES_SERVICE_HOST", "::1", 1);
	setenv("NRBC_SERVICEACCOUNT_DIR", tmpdir, 1);
	cfg = kube_config_in_cluster(NULL, &err);
	assert_non_null(cfg);
	assert_string_equal(kube_config_server(cfg), "https://[::1]:6443");
	assert_string_equal(kube_config_namespace(cfg), "nrbc-system");
	kube_config_destroy(cfg);

	/* kube_config_load prefers in-cluster when no path is given. */
	cfg = kube_config_load(NULL, NULL, &err);
	assert_non_null(cfg);
	assert_string_equal(kube_config_namespace(cfg), "nrbc-system");
	kube_config_destroy(cfg);

	setenv("NRBC_SERVICEACCOUNT_DIR", "/nonexistent-sa", 1);
	cfg = kube_config_in_cluster(NULL, &err);
	assert_null(cfg);
	assert_string_equal(err, "in-cluster config /nonexistent-sa: cannot read "
	    "/nonexistent-sa/ca.crt: No such file or directory");
	free(err);
	unsetenv("NRBC_SERVICEACCOUNT_DIR");
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_current_context_with_data),
		cmocka_unit_test(test_named_context_with_token),
		cmocka_unit_test(test_files_and_token_file),
		cmocka_unit_test(test_insecure_and_http),
		cmocka_unit_test(test_yaml_anchors),
		cmocka_unit_test(test_broken_configs),
		cmocka_unit_test(test_load_names_the_file),
		cmocka_unit_test(test_in_cluster),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
