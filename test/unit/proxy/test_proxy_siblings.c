/* Which builder a host key is and which sibling it is bridged to: never a
 * builder of another identity, never itself, never one that is not
 * Running (or is going), the oldest first; a pool builder's key reaches
 * nobody. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "proxy/proxy_siblings.h"

#define KEY_A1 "ecdsa-sha2-nistp256 AAAAa1"
#define KEY_A2 "ecdsa-sha2-nistp256 AAAAa2"
#define KEY_A3 "ecdsa-sha2-nistp256 AAAAa3"
#define KEY_B1 "ecdsa-sha2-nistp256 AAAAb1"
#define KEY_P "ecdsa-sha2-nistp256 AAAApool"

static json_t *builder(const char *name, const char *identity, const char *created,
    const char *phase, const char *ip, const char *key)
{
	return json_pack("{s:{s:s,s:s},s:{s:s},s:{s:s,s:s,s:s}}", "metadata", "name", name,
	    "creationTimestamp", created, "spec", "identity", identity, "status", "phase", phase,
	    "podIP", ip, "hostKey", key);
}

static json_t *fleet(void)
{
	json_t *a = json_array();

	json_array_append_new(a, builder("nb-a-1", "aaaa", "2026-12-07T10:00:02Z", "Running",
	    "10.0.0.2", KEY_A2));
	json_array_append_new(a, builder("nb-a-0", "aaaa", "2026-12-07T10:00:01Z", "Running",
	    "10.0.0.1", KEY_A1));
	json_array_append_new(a, builder("nb-a-2", "aaaa", "2026-12-07T10:00:00Z", "Pending", "",
	    KEY_A3));
	json_array_append_new(a, builder("nb-b-0", "bbbb", "2026-12-07T09:00:00Z", "Running",
	    "10.0.1.1", KEY_B1));
	json_array_append_new(a, builder("nb-pool-x", "", "2026-12-07T08:00:00Z", "Running",
	    "10.0.2.1", KEY_P));
	return a;
}

static void test_oldest_running_sibling_of_the_same_identity(void **state)
{
	json_t *a = fleet();
	struct proxy_sibling s;
	const char *why = NULL;

	(void)state;
	/* a-1 goes to a-0 (older, Running), not to b-0 (older still, other key). */
	assert_int_equal(proxy_siblings_pick(a, KEY_A2 " comment", 22, &s, &why), 0);
	assert_string_equal(s.identity, "aaaa");
	assert_string_equal(s.source, "nb-a-1");
	assert_string_equal(s.name, "nb-a-0");
	assert_string_equal(s.host, "10.0.0.1");
	assert_int_equal(s.port, 22);
	assert_string_equal(s.host_key, KEY_A1);
	proxy_sibling_finish(&s);
	/* a-0 to a-1; a-2 (not Running, the oldest) is nobody's target. */
	assert_int_equal(proxy_siblings_pick(a, KEY_A1, 2222, &s, &why), 0);
	assert_string_equal(s.name, "nb-a-1");
	proxy_sibling_finish(&s);
	/* A starting builder may fetch from the Running ones. */
	assert_int_equal(proxy_siblings_pick(a, KEY_A3, 22, &s, &why), 0);
	assert_string_equal(s.name, "nb-a-0");
	proxy_sibling_finish(&s);
	json_decref(a);
}

static void test_who_reaches_nobody(void **state)
{
	json_t *a = fleet();
	struct proxy_sibling s;
	const char *why = NULL;

	(void)state;
	/* The only builder of its key is its own sibling (it has nothing it
	 * lacks: lookups find nothing, quietly). */
	assert_int_equal(proxy_siblings_pick(a, KEY_B1, 22, &s, &why), 0);
	assert_string_equal(s.name, "nb-b-0");
	assert_string_equal(s.host_key, KEY_B1);
	proxy_sibling_finish(&s);
	/* An unclaimed pool builder belongs to nobody. */
	assert_int_equal(proxy_siblings_pick(a, KEY_P, 22, &s, &why), -1);
	assert_string_equal(why, "this builder belongs to no client key yet");
	/* Not a builder's key; a key whose blob merely starts like one. */
	assert_int_equal(proxy_siblings_pick(a, "ssh-ed25519 AAAAzz", 22, &s, &why), -1);
	assert_string_equal(why, "not the host key of a builder");
	assert_int_equal(proxy_siblings_pick(a, "ecdsa-sha2-nistp256 AAAAa", 22, &s, &why), -1);
	assert_int_equal(proxy_siblings_pick(a, "ecdsa-sha2-nistp256 AAAAa1x", 22, &s, &why), -1);
	assert_int_equal(proxy_siblings_pick(a, "ssh-rsa AAAAa1", 22, &s, &why), -1);
	assert_int_equal(proxy_siblings_pick(a, "", 22, &s, &why), -1);
	/* A sibling that is being deleted is no target: a-1 is its own. */
	json_object_set_new(json_object_get(json_array_get(a, 1), "metadata"),
	    "deletionTimestamp", json_string("2026-12-07T11:00:00Z"));
	assert_int_equal(proxy_siblings_pick(a, KEY_A2, 22, &s, &why), 0);
	assert_string_equal(s.name, "nb-a-1");
	proxy_sibling_finish(&s);
	/* A starting builder with nobody Running has no target at all. */
	assert_int_equal(proxy_siblings_pick(a, KEY_A3, 22, &s, &why), 0);
	assert_string_equal(s.name, "nb-a-1");
	proxy_sibling_finish(&s);
	json_object_set_new(json_object_get(json_array_get(a, 0), "status"), "phase",
	    json_string("Failed"));
	assert_int_equal(proxy_siblings_pick(a, KEY_A3, 22, &s, &why), -1);
	assert_string_equal(why, "this builder is not Running");
	json_decref(a);
	/* Nothing at all. */
	a = json_array();
	assert_int_equal(proxy_siblings_pick(a, KEY_A1, 22, &s, &why), -1);
	json_decref(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_oldest_running_sibling_of_the_same_identity),
		cmocka_unit_test(test_who_reaches_nobody),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
