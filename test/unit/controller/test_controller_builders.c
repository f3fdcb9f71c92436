/* Reusable builders, their pure parts: the NixBuilder template and class
 * hash, the builder pod, the claim patch, and the builder table's state
 * machine (binding, scale-out, idleness, claims) with a fake clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "controller/controller_builder.h"
#include "controller/controller_builders.h"
#include "controller/controller_pod.h"
#include "controller_test_fixtures.h"
#include "json_field.h"

#define ID_A "0123456789abcdef0123456789abcdef"
#define ID_B "fedcba9876543210fedcba9876543210"



static void class_of(const char *request, char out[CONTROLLER_CLASS_LEN + 1])
{
	json_t *r = test_load_json(request);

	assert_int_equal(controller_builder_class(r, out), 0);
	json_decref(r);
}

static void test_class_ignores_order_and_empties(void **state)
{
	char a[CONTROLLER_CLASS_LEN + 1], b[CONTROLLER_CLASS_LEN + 1];
	char c[CONTROLLER_CLASS_LEN + 1], d[CONTROLLER_CLASS_LEN + 1];
	char e[CONTROLLER_CLASS_LEN + 1];

	(void)state;
	class_of("{\"spec\":{\"sessionId\":\"x\",\"image\":\"i\",\"nodeSelector\":{\"a\":\"1\","
	         "\"b\":\"2\"}}}", a);
	class_of("{\"spec\":{\"nodeSelector\":{\"b\":\"2\",\"a\":\"1\"},\"image\":\"i\","
	         "\"timeoutSeconds\":30,\"sessionId\":\"y\",\"identity\":\"" ID_A "\"}}", b);
	assert_string_equal(a, b);
	assert_int_equal(strlen(a), CONTROLLER_CLASS_LEN);
	/* Empty spec, no spec, and empty fields: one class, the pool's. */
	class_of("{\"spec\":{\"sessionId\":\"x\"}}", c);
	class_of("{\"spec\":{\"image\":\"\",\"resources\":{\"requests\":{}},"
	         "\"nodeSelector\":{}}}", d);
	assert_string_equal(c, d);
	assert_int_equal(controller_builder_class(NULL, e), 0);
	assert_string_equal(c, e);
	/* What shapes the pod changes the class. */
	class_of("{\"spec\":{\"image\":\"other\"}}", d);
	assert_string_not_equal(c, d);
	class_of("{\"spec\":{\"resources\":{\"limits\":{\"cpu\":\"2\"}}}}", d);
	assert_string_not_equal(c, d);
}

static void test_identity_validation(void **state)
{
	(void)state;
	assert_true(controller_builder_identity_valid(ID_A));
	assert_true(controller_builder_identity_valid("0"));
	assert_false(controller_builder_identity_valid(""));
	assert_false(controller_builder_identity_valid("ABCDEF"));
	assert_false(controller_builder_identity_valid("0123-"));
	assert_false(controller_builder_identity_valid(
	    "0123456789012345678901234567890123456789012345678901234567890123"));
}

static void test_builder_object_and_pod(void **state)
{
	json_t *req = test_load_json("{\"metadata\":{\"name\":\"build-1\",\"namespace\":\"ns\"},"
	                   "\"spec\":{\"sessionId\":\"s\",\"identity\":\"" ID_A "\","
	                   "\"image\":\"img:2\",\"timeoutSeconds\":60,"
	                   "\"nodeSelector\":{\"pool\":\"big\"}}}");
	char class[CONTROLLER_CLASS_LEN + 1];
	char *name;
	json_t *b, *pod, *meta, *ref;
	char *err = NULL;

	(void)state;
	assert_int_equal(controller_builder_class(req, class), 0);
	name = controller_builder_make_name(ID_A, class, 3);
	assert_non_null(strstr(name, "nb-0123456789abcdef-"));
	assert_non_null(strstr(name, "-3"));
	assert_true(strlen("nix-builder-") + strlen(name) <= 63);
	b = controller_builder_build("ns", name, ID_A, class, 4, req);
	assert_non_null(b);
	assert_string_equal(json_field_str(json_object_get(b, "spec"), "identity"), ID_A);
	assert_string_equal(json_field_str(json_object_get(b, "spec"), "image"), "img:2");
	assert_int_equal(controller_builder_slots(b), 4);
	/* timeoutSeconds bounds a request, not the builder. */
	assert_null(json_object_get(json_object_get(b, "spec"), "timeoutSeconds"));
	assert_null(json_object_get(json_object_get(b, "spec"), "sessionId"));

	/* Its pod: controlled by the builder, labelled with name and identity. */
	json_object_set_new(json_object_get(b, "metadata"), "uid", json_string("u-1"));
	pod = controller_pod_build_for_builder(b, &test_pod_options, "hk-secret",
	    "ecdsa-sha2-nistp256 AAAA", &err);
	assert_non_null(pod);
	meta = json_object_get(pod, "metadata");
	assert_string_equal(controller_pod_host_key(pod), "ecdsa-sha2-nistp256 AAAA");
	{
		/* public from the shared Secret, host-key from its own only. */
		const json_t *vol = json_array_get(json_object_get(json_object_get(pod, "spec"),
		    "volumes"), 0);
		const json_t *srcs = json_object_get(json_object_get(vol, "projected"), "sources");
		const json_t *shared = json_object_get(json_array_get(srcs, 0), "secret");
		const json_t *own = json_object_get(json_array_get(srcs, 1), "secret");

		assert_null(json_object_get(vol, "secret"));
		assert_int_equal(json_array_size(srcs), 2);
		assert_string_equal(json_field_str(shared, "name"), test_pod_options.ssh_key_secret);
		assert_int_equal(json_array_size(json_object_get(shared, "items")), 1);
		assert_string_equal(json_field_str(json_array_get(json_object_get(shared, "items"),
		    0), "key"), "public");
		assert_string_equal(json_field_str(own, "name"), "hk-secret");
		assert_string_equal(json_field_str(json_array_get(json_object_get(own, "items"),
		    0), "key"), "host-key");
	}
	ref = json_array_get(json_object_get(meta, "ownerReferences"), 0);
	assert_string_equal(json_field_str(ref, "kind"), "NixBuilder");
	assert_string_equal(json_field_str(ref, "uid"), "u-1");
	assert_string_equal(controller_pod_builder_name(pod), name);
	assert_true(controller_pod_owned_by_builder(pod, "u-1"));
	assert_null(controller_pod_owner_name(pod));
	assert_false(controller_pod_owned_by(pod, "u-1"));
	assert_string_equal(json_field_str(json_object_get(meta, "labels"),
	    CONTROLLER_POD_BUILDER_LABEL), name);
	assert_null(json_object_get(json_object_get(meta, "labels"), CONTROLLER_POD_REQUEST_LABEL));
	assert_null(json_object_get(json_object_get(pod, "spec"), "activeDeadlineSeconds"));
	assert_string_equal(json_field_str(json_array_get(json_object_get(json_object_get(pod,
	    "spec"), "containers"), 0), "image"), "img:2");
	json_decref(pod);
	json_decref(b);
	free(name);

	/* A pool builder: generateName, no identity. */
	b = controller_builder_build("ns", NULL, "", class, 2, NULL);
	assert_string_equal(json_field_str(json_object_get(b, "metadata"), "generateName"),
	    CONTROLLER_BUILDER_POOL_PREFIX);
	assert_null(json_object_get(json_object_get(b, "metadata"), "name"));
	assert_string_equal(controller_builder_identity(b), "");
	json_decref(b);
	json_decref(req);
}

static void test_claim_patch(void **state)
{
	json_t *b = test_load_json("{\"metadata\":{\"name\":\"nb-pool-x\",\"resourceVersion\":\"42\"},"
	                 "\"spec\":{\"identity\":\"\",\"class\":\"c\",\"slots\":4}}");
	json_t *p;

	(void)state;
	p = controller_builder_claim_patch(b, ID_B);
	assert_non_null(p);
	assert_string_equal(json_field_str(json_object_get(p, "metadata"), "resourceVersion"), "42");
	assert_string_equal(json_field_str(json_object_get(p, "spec"), "identity"), ID_B);
	json_decref(p);
	assert_null(controller_builder_claim_patch(b, "not hex"));
	json_object_del(json_object_get(b, "metadata"), "resourceVersion");
	assert_null(controller_builder_claim_patch(b, ID_B));
	json_decref(b);
}

static json_t *builder_obj(const char *name, const char *identity, long slots, bool deleting)
{
	json_t *b = json_pack("{s:{s:s,s:s,s:s},s:{s:s,s:s,s:i}}", "metadata", "name", name,
	    "namespace", "ns", "uid", name, "spec", "identity", identity, "class", "c",
	    "slots", (int)slots);

	if (deleting)
		json_object_set_new(json_object_get(b, "metadata"), "deletionTimestamp",
		    json_string("2026-01-01T00:00:00Z"));
	return b;
}

static struct controller_builder *seen(struct controller_builders *t, const char *name,
    const char *identity, long slots, uint64_t now)
{
	json_t *o = builder_obj(name, identity, slots, false);
	struct controller_builder *b = controller_builders_seen(t, o, now);

	json_decref(o);
	return b;
}

static void test_bind_fills_then_scales_out(void **state)
{
	struct controller_builders *t = controller_builders_create();
	struct controller_builder *b0, *b1, *p;
	char *name;
	char key[32];

	(void)state;
	/* Nothing yet: the first request makes builder 0. */
	assert_null(controller_builders_pick(t, "ns", ID_A, "c"));
	name = controller_builders_next_name(t, "ns", ID_A, "c");
	b0 = controller_builders_add(t, "ns", name, ID_A, "c", 2, 100);
	assert_int_equal(controller_builder_state(b0), BUILDER_CREATING);
	assert_int_equal(controller_builders_bind(t, b0, "ns/r1", 100), 0);
	/* A second request joins it while it is still being made... */
	assert_ptr_equal(controller_builders_pick(t, "ns", ID_A, "c"), b0);
	assert_int_equal(controller_builders_bind(t, b0, "ns/r2", 101), 0);
	/* ...and a third finds it full: a second builder, another name. */
	assert_null(controller_builders_pick(t, "ns", ID_A, "c"));
	free(name);
	name = controller_builders_next_name(t, "ns", ID_A, "c");
	assert_string_not_equal(name, controller_builder_name(b0));
	b1 = controller_builders_add(t, "ns", name, ID_A, "c", 2, 102);
	free(name);
	assert_int_equal(controller_builders_bind(t, b1, "ns/r3", 102), 0);
	assert_int_equal(controller_builders_sessions_total(t), 3);
	/* Another identity never gets these. */
	assert_null(controller_builders_pick(t, "ns", ID_B, "c"));
	/* Nor another class or namespace. */
	assert_null(controller_builders_pick(t, "ns", ID_A, "other"));
	assert_null(controller_builders_pick(t, "other", ID_A, "c"));
	/* Binding twice is one binding. */
	assert_int_equal(controller_builders_bind(t, b1, "ns/r3", 103), 0);
	assert_int_equal(controller_builder_sessions(b1), 1);
	assert_ptr_equal(controller_builders_serving(t, "ns/r3"), b1);
	/* The fullest with room is picked first: b0 after one leaves. */
	assert_ptr_equal(controller_builders_unbind(t, "ns/r1", 104), b0);
	p = controller_builders_pick(t, "ns", ID_A, "c");
	assert_non_null(p);
	/* b0 and b1 have 1 each; the older one wins. */
	assert_ptr_equal(p, b0);
	for (int i = 0; i < 3; i++) {
		snprintf(key, sizeof(key), "ns/x%d", i);
		assert_null(controller_builders_unbind(t, key, 105));
	}
	controller_builders_destroy(t);
}

/* Scale-out takes whichever is first: a Ready builder's freed slot, or the
 * builder started ahead of the key's next session once its pod is Ready. */
static void test_ready_first_and_the_builder_started_ahead(void **state)
{
	struct controller_builders *t = controller_builders_create();
	struct controller_builder *busy, *ahead;

	(void)state;
	busy = seen(t, "nb-busy", ID_A, 1, 1000);
	/* Learnt from the cache: it may have served before. */
	assert_true(controller_builder_bound_once(busy));
	controller_builder_observe_pod(busy, true, false, 1001);
	assert_int_equal(controller_builders_bind(t, busy, "ns/r1", 1002), 0);
	assert_int_equal(controller_builders_ready(t, "ns", ID_A, "c"), 1);
	assert_null(controller_builders_pick_ready(t, "ns", ID_A, "c"));
	/* Started ahead: added by us, no request on it yet. */
	ahead = controller_builders_add(t, "ns", "nb-ahead", ID_A, "c", 1, 1003);
	assert_false(controller_builder_bound_once(ahead));
	/* On its way: picked only by those that wait for anything... */
	assert_ptr_equal(controller_builders_pick(t, "ns", ID_A, "c"), ahead);
	assert_null(controller_builders_pick_ready(t, "ns", ID_A, "c"));
	assert_int_equal(controller_builders_ready(t, "ns", ID_A, "c"), 1);
	/* ...until its pod is Ready (seen, then observed Ready: an idle one). */
	{
		json_t *o = builder_obj("nb-ahead", ID_A, 1, false);

		controller_builders_seen(t, o, 1004);
		json_decref(o);
	}
	controller_builder_observe_pod(ahead, true, false, 1005);
	assert_int_equal(controller_builder_state(ahead), BUILDER_IDLE);
	assert_ptr_equal(controller_builders_pick_ready(t, "ns", ID_A, "c"), ahead);
	assert_int_equal(controller_builders_ready(t, "ns", ID_A, "c"), 2);
	assert_int_equal(controller_builders_bind(t, ahead, "ns/r2", 1006), 0);
	assert_true(controller_builder_bound_once(ahead));
	/* A freed slot on a Ready builder is as good. */
	assert_null(controller_builders_pick_ready(t, "ns", ID_A, "c"));
	assert_ptr_equal(controller_builders_unbind(t, "ns/r1", 1007), busy);
	assert_ptr_equal(controller_builders_pick_ready(t, "ns", ID_A, "c"), busy);
	/* Other identities count none of these. */
	assert_int_equal(controller_builders_ready(t, "ns", ID_B, "c"), 0);
	controller_builders_destroy(t);
}

static void test_idle_and_states(void **state)
{
	struct controller_builders *t = controller_builders_create();
	struct controller_builder *b;

	(void)state;
	b = seen(t, "nb-a", ID_A, 4, 1000);
	assert_int_equal(controller_builder_state(b), BUILDER_STARTING);
	controller_builder_observe_pod(b, true, false, 1100);
	/* Ready and nobody on it: idle since the pod was ready. */
	assert_int_equal(controller_builder_state(b), BUILDER_IDLE);
	assert_true(controller_builder_idle_since(b) > 0);
	assert_int_equal(controller_builders_bind(t, b, "ns/r", 1200), 0);
	assert_int_equal(controller_builder_state(b), BUILDER_READY);
	assert_int_equal(controller_builder_idle_since(b), 0);
	assert_ptr_equal(controller_builders_unbind(t, "ns/r", 1300), b);
	assert_int_equal(controller_builder_state(b), BUILDER_IDLE);
	assert_int_equal(controller_builder_idle_since(b), 1300);
	/* A pod that ended: nothing new binds to it. */
	controller_builder_observe_pod(b, false, true, 1400);
	assert_int_equal(controller_builder_state(b), BUILDER_FAILED);
	assert_null(controller_builders_pick(t, "ns", ID_A, "c"));
	controller_builder_observe_pod(b, true, false, 1500);
	assert_int_equal(controller_builder_state(b), BUILDER_FAILED);
	/* Deletion seen in the cache. */
	b = seen(t, "nb-b", ID_A, 4, 1600);
	{
		json_t *o = builder_obj("nb-b", ID_A, 4, true);

		controller_builders_seen(t, o, 1700);
		json_decref(o);
	}
	assert_int_equal(controller_builder_state(b), BUILDER_DELETING);
	assert_null(controller_builders_pick(t, "ns", ID_A, "c"));
	controller_builders_remove(t, "ns/nb-b");
	assert_null(controller_builders_get(t, "ns/nb-b"));
	assert_int_equal(controller_builders_count(t), 1);
	controller_builders_destroy(t);
}

/* A pod asked to stop: its sessions stay bound, nothing new is, a new
 * builder is called for; the pod's end then fails it. */
static void test_draining(void **state)
{
	struct controller_builders *t = controller_builders_create();
	struct controller_builder *b;

	(void)state;
	b = seen(t, "nb-a", ID_A, 4, 1000);
	controller_builder_observe_pod(b, true, false, 1100);
	assert_int_equal(controller_builders_bind(t, b, "ns/r", 1200), 0);
	assert_null(controller_builder_drain_reason(b));
	controller_builder_observe_drain(b, "evicted: EvictionByEvictionAPI");
	assert_int_equal(controller_builder_state(b), BUILDER_DRAINING);
	assert_string_equal(controller_builder_drain_reason(b), "evicted: EvictionByEvictionAPI");
	assert_null(controller_builders_pick(t, "ns", ID_A, "c"));
	assert_int_equal(controller_builders_usable(t, "ns", ID_A, "c"), 0);
	assert_ptr_equal(controller_builders_serving(t, "ns/r"), b);
	/* Readiness comes and goes while it drains: it stays DRAINING. */
	controller_builder_observe_pod(b, true, false, 1300);
	assert_int_equal(controller_builder_state(b), BUILDER_DRAINING);
	controller_builder_observe_pod(b, false, false, 1300);
	assert_int_equal(controller_builder_state(b), BUILDER_DRAINING);
	/* Its last session leaves: still draining, not idle. */
	assert_ptr_equal(controller_builders_unbind(t, "ns/r", 1400), b);
	assert_int_equal(controller_builder_state(b), BUILDER_DRAINING);
	controller_builder_observe_pod(b, false, true, 1500);
	assert_int_equal(controller_builder_state(b), BUILDER_FAILED);
	/* A failed one does not drain. */
	controller_builder_observe_drain(b, "deleted");
	assert_int_equal(controller_builder_state(b), BUILDER_FAILED);
	controller_builders_destroy(t);
}

static void test_pool_claim(void **state)
{
	struct controller_builders *t = controller_builders_create();
	struct controller_builder *p1, *p2;

	(void)state;
	p1 = seen(t, "nb-pool-1", "", 4, 10);
	p2 = seen(t, "nb-pool-2", "", 4, 11);
	controller_builder_observe_pod(p2, true, false, 12);
	assert_int_equal(controller_builder_state(p2), BUILDER_READY);
	assert_int_equal(controller_builders_pool_size(t, "ns", "c"), 2);
	/* Pool builders serve no identity until claimed; Ready ones first. */
	assert_null(controller_builders_pick(t, "ns", ID_A, "c"));
	assert_ptr_equal(controller_builders_pick_pool(t, "ns", "c"), p2);
	controller_builder_claim_start(p2, ID_A);
	/* Being claimed: not in the pool, not pickable, and A should wait. */
	assert_int_equal(controller_builders_pool_size(t, "ns", "c"), 1);
	assert_ptr_equal(controller_builders_pick_pool(t, "ns", "c"), p1);
	assert_null(controller_builders_pick(t, "ns", ID_A, "c"));
	assert_true(controller_builders_claim_pending(t, "ns", ID_A, "c"));
	assert_false(controller_builders_claim_pending(t, "ns", ID_B, "c"));
	/* A stale cache event during the claim keeps the claim. */
	seen(t, "nb-pool-2", "", 4, 13);
	controller_builder_claim_done(p2, true, 14);
	assert_string_equal(controller_builder_identity_of(p2), ID_A);
	assert_ptr_equal(controller_builders_pick(t, "ns", ID_A, "c"), p2);
	/* A cache a step behind the claim never hands it back to the pool. */
	seen(t, "nb-pool-2", "", 4, 15);
	assert_string_equal(controller_builder_identity_of(p2), ID_A);
	assert_int_equal(controller_builders_pool_size(t, "ns", "c"), 1);
	/* Only a done claim makes the builder A's to serve. */
	assert_true(controller_builder_serves(p2, "ns", ID_A, "c"));
	assert_false(controller_builder_serves(p2, "ns", ID_B, "c"));
	assert_false(controller_builder_serves(p2, "ns", ID_A, "other"));
	assert_false(controller_builder_serves(p2, "other", ID_A, "c"));
	assert_false(controller_builder_serves(p1, "ns", "", "c"));
	/* A failed claim leaves the builder unclaimed. */
	controller_builder_claim_start(p1, ID_B);
	controller_builder_claim_done(p1, false, 16);
	assert_string_equal(controller_builder_identity_of(p1), "");
	assert_int_equal(controller_builders_pool_size(t, "ns", "c"), 1);
	controller_builders_destroy(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_class_ignores_order_and_empties),
		cmocka_unit_test(test_identity_validation),
		cmocka_unit_test(test_builder_object_and_pod),
		cmocka_unit_test(test_claim_patch),
		cmocka_unit_test(test_bind_fills_then_scales_out),
		cmocka_unit_test(test_ready_first_and_the_builder_started_ahead),
		cmocka_unit_test(test_idle_and_states),
		cmocka_unit_test(test_pool_claim),
		cmocka_unit_test(test_draining),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
