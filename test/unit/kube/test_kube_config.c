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
	    "exec.apiVersion \"\" is not supported");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
	    "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
	    "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, "
	    "command: aws, args: {a: b}}}}]\n", NULL,
	    "users[0].user.exec.args: expected a list of strings");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
	    "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
	    "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, "
	    "command: aws, env: [{name: A}]}}}]\n", NULL,
	    "users[0].user.exec.env: expected a list of {name, value}");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
	    "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
	    "users: [{name: u, user: {auth-provider: {name: gcp}}}]\n", NULL,
	    "auth-provider credentials are not supported");
	/* Found by fuzz_kube_config: nothing but slashes after the scheme. */
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https:///', tls-server-name: api}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL,
	    "clusters[0].cluster.server: \"https:///\" has no host");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1', "
	    "tls-server-name: 'a:b'}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL,
	    "clusters[0].cluster.tls-server-name: \"a:b\" is not a host name");
	expect_parse_error(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1', "
	    "proxy-url: '127.0.0.1:3128'}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL,
	    "clusters[0].cluster.proxy-url: \"127.0.0.1:3128\" is not a URL");
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

static void write_at(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* $KUBECONFIG as kubectl merges it: current-context from the first file
 * that sets one, each context/cluster/user whole from the first file that
 * names it, relative paths against their own file, missing files skipped. */
static void test_kubeconfig_list_merges(void **state)
{
	char a[512], b[512], sub[512], list[2048], *err = NULL, *auth;
	struct kube_config *cfg;

	snprintf(a, sizeof(a), "%s/kubeconfig", tmpdir);
	snprintf(sub, sizeof(sub), "%s/sub", tmpdir);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(b, sizeof(b), "%s/sub/kc", tmpdir);
	/* a: no current-context; its cluster "k" wins over b's; user only in b. */
	write_at(a, "contexts: [{name: other, context: {cluster: k}}]\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1111'}}]\n");
	write_at(b, "current-context: c\n"
	    "contexts: [{name: c, context: {cluster: k, user: u, namespace: nsb}},\n"
	    "           {name: other, context: {cluster: nope}}]\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.2:2222'}}]\n"
	    "users: [{name: u, user: {tokenFile: tok}}]\n");
	{
		char tok[512];

		snprintf(tok, sizeof(tok), "%s/sub/tok", tmpdir);
		write_at(tok, "token-from-b\n");
	}
	snprintf(list, sizeof(list), "%s/missing::%s:%s", tmpdir, a, b);
	setenv("KUBECONFIG", list, 1);
	unsetenv("KUBERNETES_SERVICE_HOST");
	cfg = kube_config_load(NULL, NULL, &err);
	if (!cfg)
		fail_msg("load failed: %s", err);
	assert_string_equal(kube_config_server(cfg), "https://127.0.0.1:1111");
	assert_string_equal(kube_config_namespace(cfg), "nsb");
	auth = auth_header(cfg);
	assert_string_equal(auth, "Authorization: Bearer token-from-b");
	free(auth);
	kube_config_destroy(cfg);

	/* "other" is defined in a first: b's broken one is never looked at. */
	cfg = kube_config_load(NULL, "other", &err);
	if (!cfg)
		fail_msg("load failed: %s", err);
	assert_string_equal(kube_config_server(cfg), "https://127.0.0.1:1111");
	kube_config_destroy(cfg);

	/* A name found nowhere names the whole list. */
	cfg = kube_config_load(NULL, "absent", &err);
	assert_null(cfg);
	assert_non_null(strstr(err, "context \"absent\" not found"));
	assert_non_null(strstr(err, b));
	free(err);
	err = NULL;

	snprintf(list, sizeof(list), "%s/missing:%s/missing2", tmpdir, tmpdir);
	setenv("KUBECONFIG", list, 1);
	cfg = kube_config_load(NULL, NULL, &err);
	assert_null(cfg);
	assert_non_null(strstr(err, "none of its files exists"));
	free(err);
	unsetenv("KUBECONFIG");
	{
		char tok[512];

		snprintf(tok, sizeof(tok), "%s/sub/tok", tmpdir);
		unlink(tok);
	}
	unlink(b);
	rmdir(sub);
}

static void test_tls_server_name_and_proxy(void **state)
{
	struct kube_config *cfg = parse_ok(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443/prefix', "
	    "tls-server-name: kubernetes.default, proxy-url: 'http://127.0.0.1:3128'}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL);

	assert_string_equal(kube_config_server(cfg), "https://127.0.0.1:6443/prefix");
	assert_string_equal(kube_config_request_base(cfg), "https://kubernetes.default:6443/prefix");
	assert_string_equal(kube_config_tls_server_name(cfg), "kubernetes.default");
	assert_string_equal(kube_config_proxy_url(cfg), "http://127.0.0.1:3128");
	kube_config_destroy(cfg);

	cfg = parse_ok(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://[::1]', tls-server-name: api}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL);
	assert_string_equal(kube_config_request_base(cfg), "https://api:443");
	assert_null(kube_config_proxy_url(cfg));
	kube_config_destroy(cfg);

	cfg = parse_ok(
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n", NULL);
	assert_string_equal(kube_config_request_base(cfg), "https://127.0.0.1:6443");
	assert_null(kube_config_tls_server_name(cfg));
	kube_config_destroy(cfg);
}

/* kube_config_parse never runs the plugin; apply does, and a 401 makes the
 * next apply run it again. */
static void test_exec_plugin_via_config(void **state)
{
	char script[512], text[2048], count[512], *auth;
	struct kube_config *cfg;
	FILE *f;

	snprintf(script, sizeof(script), "%s/plugin.sh", tmpdir);
	snprintf(count, sizeof(count), "%s/plugin.count", tmpdir);
	write_at(script, "#!/bin/sh\n"
	    "echo run >> \"$COUNT_FILE\"\n"
	    "n=$(wc -l < \"$COUNT_FILE\")\n"
	    "echo \"{\\\"apiVersion\\\":\\\"client.authentication.k8s.io/v1\\\","
	    "\\\"kind\\\":\\\"ExecCredential\\\","
	    "\\\"status\\\":{\\\"token\\\":\\\"$1-$n\\\"}}\"\n");
	assert_int_equal(chmod(script, 0755), 0);
	snprintf(text, sizeof(text),
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
	    "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
	    "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, "
	    "command: ./plugin.sh, args: [tok], env: [{name: COUNT_FILE, value: '%s'}]}}}]\n",
	    count);
	cfg = parse_ok(text, NULL);
	assert_int_equal(kube_config_exec_runs(cfg), 0);
	auth = auth_header(cfg);
	assert_string_equal(auth, "Authorization: Bearer tok-1");
	free(auth);
	auth = auth_header(cfg);
	assert_string_equal(auth, "Authorization: Bearer tok-1");
	free(auth);
	assert_int_equal(kube_config_exec_runs(cfg), 1);
	kube_config_note_status(cfg, 403);
	kube_config_note_status(cfg, 401);
	auth = auth_header(cfg);
	assert_string_equal(auth, "Authorization: Bearer tok-2");
	free(auth);
	assert_int_equal(kube_config_exec_runs(cfg), 2);
	kube_config_destroy(cfg);
	f = fopen(count, "r");
	assert_non_null(f);
	fclose(f);
	unlink(count);
	unlink(script);
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
		cmocka_unit_test(test_kubeconfig_list_merges),
		cmocka_unit_test(test_tls_server_name_and_proxy),
		cmocka_unit_test(test_exec_plugin_via_config),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
