/* What client-config prints: the builders line, known_hosts and ssh_config;
 * the facts read from the Service and ConfigMaps; the check's verdicts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "base64.h"
#include "client/client_check.h"
#include "client/client_cluster.h"
#include "client/client_nix_version.h"
#include "client/client_render.h"
#include "client_test_fixtures.h"

static void test_builders_pins_host_key_on_port_22(void **state)
{
	struct client_facts f = facts(22);
	struct client_class_list l = default_only(&f);
	char *b = client_render_builders(&f, &l, "/home/u/.ssh/id_ed25519"), *want, *b64;

	b64 = base64_encode(KEY, strlen(KEY));
	want = malloc(1024);
	snprintf(want, 1024, "ssh-ng://nixbld@203.0.113.7 x86_64-linux /home/u/.ssh/id_ed25519 "
	    "4 1 - - %s", b64);
	assert_string_equal(b, want);
	free(b);
	free(want);
	free(b64);

	client_class_list_finish(&l);

	f = facts(2222);
	f.features = "kvm,big-parallel";
	l = default_only(&f);
	b = client_render_builders(&f, &l, "/k");
	assert_string_equal(b, "ssh-ng://nixbld@203.0.113.7 x86_64-linux /k 4 1 kvm,big-parallel - -");
	free(b);
	client_class_list_finish(&l);
}

/* A Nix that takes a port in a store URI (2.31, Lix 2.93) gets it there
 * too; on port 22 nothing changes. */
static void test_builders_port_in_the_uri(void **state)
{
	struct client_facts f = facts(2222);
	struct client_class_list l;
	char *b;

	f.uri_port = true;
	l = default_only(&f);
	b = client_render_builders(&f, &l, "/k");
	assert_string_equal(b, "ssh-ng://nixbld@203.0.113.7:2222 x86_64-linux /k 4 1 - - -");
	free(b);
	client_class_list_finish(&l);
	f.address = "2001:db8::7";
	l = default_only(&f);
	b = client_render_builders(&f, &l, "/k");
	assert_string_equal(b, "ssh-ng://nixbld@[2001:db8::7]:2222 x86_64-linux /k 4 1 - - -");
	free(b);
	client_class_list_finish(&l);
	f = facts(22);
	f.uri_port = true;
	l = default_only(&f);
	b = client_render_builders(&f, &l, "/k");
	assert_true(strncmp(b, "ssh-ng://nixbld@203.0.113.7 x86_64-linux /k 4 1 - - ", 52) == 0);
	free(b);
	client_class_list_finish(&l);
}

static void test_nix_versions(void **state)
{
	static const struct { const char *text; int rc; bool port; } cases[] = {
		{ "nix (Nix) 2.8.0", 0, false },
		{ "nix (Nix) 2.26.3", 0, false },
		{ "nix (Nix) 2.30.9", 0, false },
		{ "nix (Nix) 2.31.0", 0, true },
		{ "nix (Nix) 2.32.0pre20251101_dirty", 0, true },
		{ "nix (Nix) 3.0", 0, true },
		{ "nix (Lix, like Nix) 2.91.1", 0, false },
		{ "nix (Lix, like Nix) 2.93.0", 0, true },
		{ "nix (Nix) two", -1, false },
		{ "nix (Nix) 2.", -1, false },
		{ "Nix 2.31.0", -1, false },
		{ "", -1, false },
	};
	struct client_nix_version v;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(client_nix_version_parse(cases[i].text, &v), cases[i].rc);
		if (cases[i].rc == 0)
			assert_int_equal(client_nix_version_takes_port(&v), cases[i].port);
	}
	assert_int_equal(client_nix_version_parse("nix (Lix, like Nix) 2.93.0", &v), 0);
	assert_true(v.lix);
	assert_int_equal(v.minor, 93);
}

static void test_builders_default_max_jobs_is_slots_times_per_key(void **state)
{
	struct client_facts f = facts(2222);
	struct client_class_list l;
	char *b;

	f.per_key = 4;
	l = default_only(&f);
	b = client_render_builders(&f, &l, "/k");
	assert_string_equal(b, "ssh-ng://nixbld@203.0.113.7 x86_64-linux /k 16 1 - - -");
	assert_int_equal(client_class_list_max_jobs(&l), 16);
	free(b);
	client_class_list_finish(&l);
}

/* The builders value for the default class of f and the classes of list. */
static char *builders_with(const struct client_facts *f, const char *list, long *jobs)
{
	struct client_class_list l = with_classes(f, list);
	char *b = client_render_builders(f, &l, "/k");

	*jobs = client_class_list_max_jobs(&l);
	client_class_list_finish(&l);
	return b;
}

#define BIG_AND_ARM "{\"items\":[{\"metadata\":{\"name\":\"big\"},\"spec\":" \
	"{\"systems\":[\"x86_64-linux\",\"aarch64-linux\"],\"supportedFeatures\":" \
	"[\"big-parallel\",\"kvm\"],\"mandatoryFeatures\":[\"big-parallel\"],\"speedFactor\":2," \
	"\"slots\":2,\"maxBuildersPerIdentity\":3}},{\"metadata\":{\"name\":\"arm\"}," \
	"\"spec\":{\"systems\":[\"aarch64-linux\"]}}]}"

static void test_builders_classes(void **state)
{
	const struct {
		const char *list, *want;
		long jobs;
	} cases[] = {
		{ BIG_AND_ARM, "ssh-ng://nixbld@203.0.113.7 x86_64-linux /k 4 1 - - - ; "
		  "ssh-ng://big@203.0.113.7 x86_64-linux,aarch64-linux /k 6 2 big-parallel,kvm "
		  "big-parallel - ; ssh-ng://arm@203.0.113.7 aarch64-linux /k 4 1 - - -", 14 },
		/* Mandatory features are supported too; empty fields are "-". */
		{ "{\"items\":[{\"metadata\":{\"name\":\"vm\"},\"spec\":{\"supportedFeatures\":"
		  "[\"kvm\"],\"mandatoryFeatures\":[\"nixos-test\",\"kvm\"]}},{\"metadata\":"
		  "{\"name\":\"only\"},\"spec\":{\"mandatoryFeatures\":[\"benchmark\"],"
		  "\"speedFactor\":10}}]}",
		  "ssh-ng://nixbld@203.0.113.7 x86_64-linux /k 4 1 - - - ; "
		  "ssh-ng://vm@203.0.113.7 x86_64-linux /k 4 1 kvm,nixos-test nixos-test,kvm - ; "
		  "ssh-ng://only@203.0.113.7 x86_64-linux /k 4 10 benchmark benchmark -", 12 },
	};
	struct client_facts f = facts(2222);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long jobs;
		char *b = builders_with(&f, cases[i].list, &jobs);

		assert_string_equal(b, cases[i].want);
		assert_int_equal(jobs, cases[i].jobs);
		free(b);
	}
}

static void test_builders_pin_the_host_key_on_every_entry(void **state)
{
	struct client_facts f = facts(22);
	char *b64 = base64_encode(KEY, strlen(KEY)), want[2048], *b;
	long jobs;

	snprintf(want, sizeof(want), "ssh-ng://nixbld@203.0.113.7 x86_64-linux /k 4 1 - - %s ; "
	    "ssh-ng://big@203.0.113.7 x86_64-linux,aarch64-linux /k 6 2 big-parallel,kvm "
	    "big-parallel %s ; ssh-ng://arm@203.0.113.7 aarch64-linux /k 4 1 - - %s", b64, b64,
	    b64);
	b = builders_with(&f, BIG_AND_ARM, &jobs);
	assert_string_equal(b, want);
	free(b);
	free(b64);
}

static void test_known_hosts_and_ssh_config(void **state)
{
	struct client_facts f = facts(22);
	char *l = client_render_known_hosts_line(&f), *c;

	assert_string_equal(l, "203.0.113.7 " KEY);
	free(l);
	f = facts(2222);
	l = client_render_known_hosts_line(&f);
	assert_string_equal(l, "[203.0.113.7]:2222 " KEY);
	free(l);
	c = client_render_ssh_config(&f, "/k", "/h/known_hosts");
	assert_non_null(strstr(c, "Host 203.0.113.7\n  HostName 203.0.113.7\n  Port 2222\n"
	    "  User nixbld\n  IdentityFile /k\n  IdentitiesOnly yes\n"
	    "  UserKnownHostsFile /h/known_hosts\n"));
	assert_null(strstr(c, "ControlMaster"));
	free(c);
}

static void test_bad_host_keys(void **state)
{
	const char *bad[] = { "", "ssh-ed25519", "ssh-ed25519 not*base64",
		KEY " one\n" KEY " two\n", "SSH ED25519 AAAA" };
	struct client_facts f = facts(22);
	struct client_class_list l = default_only(&f);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_null(client_render_host_key(bad[i]));
		f.host_key = bad[i];
		assert_null(client_render_builders(&f, &l, "/k"));
		assert_null(client_render_known_hosts_line(&f));
	}
	client_class_list_finish(&l);
}

static void test_facts_from_objects(void **state)
{
	struct client_cluster_names n = { "nrbc", "nrbc-proxy", "nrbc-client", "nrbc-host-key",
		NULL, 0 };
	json_t *svc = json_loads("{\"spec\":{\"ports\":[{\"name\":\"metrics\",\"port\":9},"
	    "{\"name\":\"ssh\",\"port\":22}]},\"status\":{\"loadBalancer\":{\"ingress\":"
	    "[{\"hostname\":\"lb.example.com\"}]}}}", 0, NULL);
	json_t *cm = json_loads("{\"data\":{\"user\":\"nixbld\",\"systems\":\"x86_64-linux\","
	    "\"builder-slots\":\"6\"}}", 0, NULL);
	json_t *hk = json_pack("{s:{s:s}}", "data", "host-key.pub", KEY);
	json_t *pending = json_loads("{\"spec\":{\"ports\":[{\"port\":22}]},\"status\":{}}", 0,
	    NULL);
	json_t *badcm = json_loads("{\"data\":{\"user\":\"nixbld\",\"systems\":\"x86_64-linux\","
	    "\"builder-slots\":\"many\"}}", 0, NULL);
	struct client_facts f;
	char *err = NULL;

	assert_int_equal(client_cluster_facts_from(svc, cm, hk, &n, &f, &err), 0);
	assert_string_equal(f.address, "lb.example.com");
	assert_int_equal(f.port, 22);
	assert_int_equal(f.slots, 6);
	assert_int_equal(f.per_key, 1); /* an older ConfigMap: one builder per key */
	assert_int_equal(f.sessions_per_key, 16);
	assert_string_equal(f.host_key, KEY);

	assert_int_equal(client_cluster_facts_from(pending, cm, hk, &n, &f, &err), -1);
	assert_non_null(strstr(err, "Service nrbc/nrbc-proxy has no external address yet"));
	assert_non_null(strstr(err, "--address"));
	free(err);
	err = NULL;
	n.address = "127.0.0.9";
	n.port = 2222;
	assert_int_equal(client_cluster_facts_from(pending, cm, hk, &n, &f, &err), 0);
	assert_string_equal(f.address, "127.0.0.9");
	assert_int_equal(f.port, 2222);

	assert_int_equal(client_cluster_facts_from(svc, badcm, hk, &n, &f, &err), -1);
	assert_non_null(strstr(err, "ConfigMap nrbc/nrbc-client: needs user"));
	free(err);
	err = NULL;
	json_object_set_new(json_object_get(cm, "data"), "builders-per-key", json_string("4"));
	json_object_set_new(json_object_get(cm, "data"), "sessions-per-key", json_string("32"));
	assert_int_equal(client_cluster_facts_from(svc, cm, hk, &n, &f, &err), 0);
	assert_int_equal(f.per_key, 4);
	assert_int_equal(f.sessions_per_key, 32);
	json_object_set_new(json_object_get(cm, "data"), "builders-per-key", json_string("0"));
	assert_int_equal(client_cluster_facts_from(svc, cm, hk, &n, &f, &err), -1);
	assert_non_null(strstr(err, "builders-per-key"));
	free(err);
	err = NULL;
	json_object_del(json_object_get(cm, "data"), "builders-per-key");
	assert_int_equal(client_cluster_facts_from(svc, cm, cm, &n, &f, &err), -1);
	assert_non_null(strstr(err, "ConfigMap nrbc/nrbc-host-key has no data \"host-key.pub\""));
	free(err);
	json_decref(svc);
	json_decref(cm);
	json_decref(hk);
	json_decref(pending);
	json_decref(badcm);
}

static void test_check_verdicts(void **state)
{
	assert_int_equal(client_check_classify(0, "Store URL: ssh-ng://x\n"), CLIENT_CHECK_OK);
	assert_int_equal(client_check_classify(1, "nixbld@1.2.3.4: Permission denied "
	    "(publickey).\nerror: cannot connect"), CLIENT_CHECK_KEY_REFUSED);
	assert_int_equal(client_check_classify(1, "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS "
	    "CHANGED! @@@\nHost key verification failed.\n"), CLIENT_CHECK_HOST_KEY);
	assert_int_equal(client_check_classify(1, "ssh: connect to host 127.0.0.9 port 2: "
	    "Connection refused\n"), CLIENT_CHECK_UNREACHABLE);
	assert_int_equal(client_check_classify(1, "nrbc: waiting for builder pod x: "
	    "Unschedulable\nnrbc: gave up\nerror: cannot open connection\n"),
	    CLIENT_CHECK_NO_BUILDER);
	assert_int_equal(client_check_classify(127, "cannot run nix: No such file or directory\n"),
	    CLIENT_CHECK_NO_NIX);
	assert_int_equal(client_check_classify(1, "nrbc: this key may not use builder class "
	    "\"big\" (ssh-ng://big@...); it may use: nixbld,arm\nerror: cannot open connection\n"),
	    CLIENT_CHECK_CLASS_REFUSED);
	assert_string_equal(client_check_verdict_name(CLIENT_CHECK_HOST_KEY), "host key mismatch");
	assert_string_equal(client_check_verdict_name(CLIENT_CHECK_CLASS_REFUSED),
	    "class not allowed");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_builders_pins_host_key_on_port_22),
		cmocka_unit_test(test_builders_port_in_the_uri),
		cmocka_unit_test(test_nix_versions),
		cmocka_unit_test(test_builders_default_max_jobs_is_slots_times_per_key),
		cmocka_unit_test(test_builders_classes),
		cmocka_unit_test(test_builders_pin_the_host_key_on_every_entry),
		cmocka_unit_test(test_known_hosts_and_ssh_config),
		cmocka_unit_test(test_bad_host_keys),
		cmocka_unit_test(test_facts_from_objects),
		cmocka_unit_test(test_check_verdicts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
