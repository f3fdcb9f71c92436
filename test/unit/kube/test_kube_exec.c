/* Exec credential plugins: the ExecCredential parser, and real plugin
 * processes (small shell scripts) for args, env, KUBERNETES_EXEC_INFO,
 * caching until expiry, and the errors a user must be able to act on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kube/kube_exec.h"
#include "rfc3339.h"

#define V1 "client.authentication.k8s.io/v1"
#define V1BETA1 "client.authentication.k8s.io/v1beta1"

static char tmpdir[256];

static void write_script(const char *name, const char *body)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "#!/bin/sh\n%s", body);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, 0755), 0);
}

static int setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/nrbc-exec-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void expect_parse_error(const char *json, const char *fragment)
{
	char *token, *cert, *key, *err = NULL;
	time_t expiry;

	if (kube_exec_parse(json, strlen(json), V1, &token, &cert, &key, &expiry, &err) == 0)
		fail_msg("parsed %s, expected an error with \"%s\"", json, fragment);
	if (!err || !strstr(err, fragment))
		fail_msg("error \"%s\" does not contain \"%s\"", err ? err : "(null)", fragment);
	assert_null(token);
	free(err);
}

static void test_parse(void **state)
{
	char *token, *cert, *key, *err = NULL;
	time_t expiry;
	const char *ok = "{\"apiVersion\":\"" V1 "\",\"kind\":\"ExecCredential\","
	    "\"status\":{\"token\":\"abc\",\"expirationTimestamp\":\"2026-12-01T12:00:00Z\"}}";
	const char *certs = "{\"apiVersion\":\"" V1 "\",\"kind\":\"ExecCredential\","
	    "\"status\":{\"clientCertificateData\":\"CERT\",\"clientKeyData\":\"KEY\"}}";

	assert_int_equal(kube_exec_parse(ok, strlen(ok), V1, &token, &cert, &key, &expiry, &err), 0);
	assert_string_equal(token, "abc");
	assert_null(cert);
	assert_int_equal(expiry, 1796126400);
	free(token);
	assert_int_equal(kube_exec_parse(certs, strlen(certs), V1, &token, &cert, &key, &expiry,
	    &err), 0);
	assert_null(token);
	assert_string_equal(cert, "CERT");
	assert_string_equal(key, "KEY");
	assert_int_equal(expiry, 0);
	free(cert);
	free(key);

	expect_parse_error("not json", "output is not JSON");
	expect_parse_error("[1]", "not an ExecCredential object");
	expect_parse_error("{\"kind\":\"Pod\"}", "kind \"Pod\", expected ExecCredential");
	expect_parse_error("{\"kind\":\"ExecCredential\",\"apiVersion\":\"" V1BETA1 "\"}",
	    "the kubeconfig asks for \"" V1 "\"");
	expect_parse_error("{\"kind\":\"ExecCredential\",\"apiVersion\":\"" V1 "\"}",
	    "no status");
	expect_parse_error("{\"kind\":\"ExecCredential\",\"apiVersion\":\"" V1 "\","
	    "\"status\":{}}", "neither a token nor");
	expect_parse_error("{\"kind\":\"ExecCredential\",\"apiVersion\":\"" V1 "\","
	    "\"status\":{\"clientKeyData\":\"k\"}}", "must come together");
	expect_parse_error("{\"kind\":\"ExecCredential\",\"apiVersion\":\"" V1 "\","
	    "\"status\":{\"token\":\"a\\r\\nX: y\"}}", "control characters");
	expect_parse_error("{\"kind\":\"ExecCredential\",\"apiVersion\":\"" V1 "\","
	    "\"status\":{\"token\":\"a\",\"expirationTimestamp\":\"tomorrow\"}}",
	    "not an RFC 3339 time");
}

/* The shared RFC 3339 parser, as expirationTimestamp uses it. */
static void test_parse_time(void **state)
{
	assert_int_equal(rfc3339_parse_ms("1970-01-01T00:00:00Z"), 0);
	assert_int_equal(rfc3339_parse_ms("2026-12-01T12:00:00.123456Z"), 1796126400123LL);
	assert_int_equal(rfc3339_parse_ms("2026-12-01T13:30:00+01:30"), 1796126400000LL);
	assert_int_equal(rfc3339_parse_ms("2026-12-01 12:00:00Z"), -1);
	assert_int_equal(rfc3339_parse_ms("2026-13-01T12:00:00Z"), -1);
	assert_int_equal(rfc3339_parse_ms("2026-12-01T12:00:00"), -1);
	assert_int_equal(rfc3339_parse_ms("2026-12-01T12:00:00Zjunk"), -1);
}

static struct kube_exec *make(const char *command, const char *const *args, size_t nargs,
    const char *const *env, size_t nenv, const char *cluster_json)
{
	struct kube_exec_spec spec = {
		.api_version = V1, .command = command, .args = args, .nargs = nargs,
		.env = env, .nenv = nenv, .install_hint = "install it with: apt install x",
		.base_dir = tmpdir, .cluster_json = cluster_json,
	};
	char *err = NULL;
	struct kube_exec *x = kube_exec_create(&spec, "kubeconfig test", &err);

	if (!x)
		fail_msg("create failed: %s", err);
	return x;
}

/* The plugin sees its args, its env and KUBERNETES_EXEC_INFO; the token is
 * cached until expirationTimestamp and fetched again after it. */
static void test_run_and_cache(void **state)
{
	const char *args[] = { "--flag", "two words" };
	const char *env[] = { "PLUGIN_GREETING=hi" };
	const char *token, *cert, *key;
	char *err = NULL, expect[4096];
	struct kube_exec *x;
	time_t now = time(NULL);

	/* The token carries what the plugin saw, so the test can check it. */
	write_script("plugin", "info=$(printf %s \"$KUBERNETES_EXEC_INFO\" | tr -d '\"{}:,')\n"
	    "printf '{\"apiVersion\":\"" V1 "\",\"kind\":\"ExecCredential\",\"status\":"
	    "{\"token\":\"%s|%s|%s|%s\",\"expirationTimestamp\":\"2099-01-01T00:00:00Z\"}}' "
	    "\"$1\" \"$2\" \"$PLUGIN_GREETING\" \"$info\"\n");
	x = make("./plugin", args, 2, env, 1, "{\"server\":\"https://127.0.0.1:6443\"}");
	assert_int_equal(kube_exec_credential(x, now, &token, &cert, &key, &err), 0);
	snprintf(expect, sizeof(expect), "--flag|two words|hi|apiVersion" V1
	    "kindExecCredentialspecinteractivefalseclusterserverhttps//127.0.0.16443");
	assert_string_equal(token, expect);
	assert_null(cert);
	assert_int_equal(kube_exec_credential(x, now + 3600, &token, &cert, &key, &err), 0);
	assert_int_equal(kube_exec_runs(x), 1);
	/* 2099-01-01 has passed: run again. */
	assert_int_equal(kube_exec_credential(x, 4070908800, &token, &cert, &key, &err), 0);
	assert_int_equal(kube_exec_runs(x), 2);
	kube_exec_invalidate(x);
	assert_int_equal(kube_exec_credential(x, now, &token, &cert, &key, &err), 0);
	assert_int_equal(kube_exec_runs(x), 3);
	kube_exec_destroy(x);
}

static void expect_run_error(const char *command, const char *fragment, const char *fragment2)
{
	const char *token, *cert, *key;
	char *err = NULL;
	struct kube_exec *x = make(command, NULL, 0, NULL, 0, NULL);

	if (kube_exec_credential(x, time(NULL), &token, &cert, &key, &err) == 0)
		fail_msg("%s succeeded, expected \"%s\"", command, fragment);
	if (!strstr(err, fragment) || (fragment2 && !strstr(err, fragment2)))
		fail_msg("error \"%s\" lacks \"%s\" / \"%s\"", err, fragment,
		    fragment2 ? fragment2 : "");
	free(err);
	kube_exec_destroy(x);
}

static void test_plugin_failures(void **state)
{
	write_script("fails", "echo 'token expired; run: login --again' >&2\nexit 3\n");
	write_script("garbage", "echo 'this is not json'\necho 'a warning' >&2\n");
	write_script("wrapper", "exec nrbc-no-such-plugin-xyz\n");
	expect_run_error("nrbc-no-such-plugin-xyz", "exec plugin \"nrbc-no-such-plugin-xyz\" not found",
	    "install it with: apt install x");
	expect_run_error("./fails", "exited with status 3",
	    "token expired; run: login --again");
	expect_run_error("./garbage", "output is not JSON", "its stderr: a warning");
	expect_run_error("./wrapper", "exited with status 127", "install it with");
}

static void test_bad_spec(void **state)
{
	struct kube_exec_spec spec = { .api_version = "client.authentication.k8s.io/v1alpha1",
		.command = "x" };
	char *err = NULL;

	assert_null(kube_exec_create(&spec, "kc", &err));
	assert_non_null(strstr(err, "v1alpha1\" is not supported"));
	free(err);
	err = NULL;
	spec.api_version = V1BETA1;
	spec.command = "";
	assert_null(kube_exec_create(&spec, "kc", &err));
	assert_non_null(strstr(err, "exec.command: missing"));
	free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_parse_time),
		cmocka_unit_test(test_run_and_cache),
		cmocka_unit_test(test_plugin_failures),
		cmocka_unit_test(test_bad_spec),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
