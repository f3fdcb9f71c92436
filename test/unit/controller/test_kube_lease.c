#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "kube/kube_lease.h"

/* 2025-01-15T10:30:00.123456Z */
#define NOW_US 1736937000123456LL

static json_t *lease_held_by(const char *holder)
{
	json_t *l = json_pack("{s:s,s:s,s:{s:s,s:s,s:s},s:{s:s,s:i,s:s,s:s,s:i}}",
	    "apiVersion", "coordination.k8s.io/v1", "kind", "Lease",
	    "metadata", "name", "nrbc-controller", "namespace", "ns", "resourceVersion", "42",
	    "spec", "holderIdentity", holder, "leaseDurationSeconds", 15,
	    "acquireTime", "2025-01-15T10:00:00.000000Z", "renewTime", "2025-01-15T10:29:58.000000Z",
	    "leaseTransitions", 3);

	assert_non_null(l);
	return l;
}

static const char *spec_str(const json_t *l, const char *k)
{
	const char *s = json_string_value(json_object_get(json_object_get(l, "spec"), k));

	assert_non_null(s);
	return s;
}

static long long spec_int(const json_t *l, const char *k)
{
	return json_integer_value(json_object_get(json_object_get(l, "spec"), k));
}

static void test_decide(void **state)
{
	json_t *mine = lease_held_by("me_1");
	json_t *theirs = lease_held_by("them_2");
	json_t *released = lease_held_by("");
	json_t *no_spec = json_pack("{s:{s:s}}", "metadata", "name", "x");

	assert_int_equal(kube_lease_decide(mine, "me_1", false), KUBE_LEASE_RENEW);
	assert_int_equal(kube_lease_decide(mine, "me_1", true), KUBE_LEASE_RENEW);
	assert_int_equal(kube_lease_decide(theirs, "me_1", false), KUBE_LEASE_WAIT);
	assert_int_equal(kube_lease_decide(theirs, "me_1", true), KUBE_LEASE_ACQUIRE);
	assert_int_equal(kube_lease_decide(released, "me_1", false), KUBE_LEASE_ACQUIRE);
	assert_int_equal(kube_lease_decide(no_spec, "me_1", false), KUBE_LEASE_ACQUIRE);
	json_decref(mine);
	json_decref(theirs);
	json_decref(released);
	json_decref(no_spec);
}

static void test_build_create(void **state)
{
	json_t *l = kube_lease_build(NULL, "ns", "nrbc-controller", "me_1", 15000,
	    KUBE_LEASE_WRITE_ACQUIRE, NOW_US);

	assert_non_null(l);
	assert_string_equal(json_string_value(json_object_get(l, "kind")), "Lease");
	assert_string_equal(json_string_value(json_object_get(l, "apiVersion")),
	    "coordination.k8s.io/v1");
	assert_string_equal(json_string_value(json_object_get(json_object_get(l, "metadata"),
	    "namespace")), "ns");
	assert_string_equal(spec_str(l, "holderIdentity"), "me_1");
	assert_int_equal(spec_int(l, "leaseDurationSeconds"), 15);
	assert_string_equal(spec_str(l, "renewTime"), "2025-01-15T10:30:00.123456Z");
	assert_string_equal(spec_str(l, "acquireTime"), "2025-01-15T10:30:00.123456Z");
	assert_int_equal(spec_int(l, "leaseTransitions"), 0);
	json_decref(l);
}

static void test_build_acquire_takeover(void **state)
{
	json_t *theirs = lease_held_by("them_2");
	json_t *l = kube_lease_build(theirs, "ns", "nrbc-controller", "me_1", 15000,
	    KUBE_LEASE_WRITE_ACQUIRE, NOW_US);

	assert_string_equal(spec_str(l, "holderIdentity"), "me_1");
	assert_int_equal(spec_int(l, "leaseTransitions"), 4);
	assert_string_equal(spec_str(l, "acquireTime"), "2025-01-15T10:30:00.123456Z");
	assert_string_equal(spec_str(l, "renewTime"), "2025-01-15T10:30:00.123456Z");
	/* The resourceVersion read is what makes a rival's write fail. */
	assert_string_equal(json_string_value(json_object_get(json_object_get(l, "metadata"),
	    "resourceVersion")), "42");
	/* The input is not modified. */
	assert_string_equal(spec_str(theirs, "holderIdentity"), "them_2");
	json_decref(l);
	json_decref(theirs);
}

static void test_build_renew_keeps_acquire(void **state)
{
	json_t *mine = lease_held_by("me_1");
	json_t *l = kube_lease_build(mine, "ns", "nrbc-controller", "me_1", 15000,
	    KUBE_LEASE_WRITE_RENEW, NOW_US);

	assert_string_equal(spec_str(l, "holderIdentity"), "me_1");
	assert_int_equal(spec_int(l, "leaseTransitions"), 3);
	assert_string_equal(spec_str(l, "acquireTime"), "2025-01-15T10:00:00.000000Z");
	assert_string_equal(spec_str(l, "renewTime"), "2025-01-15T10:30:00.123456Z");
	json_decref(l);
	/* Acquiring a lease we already hold is not a transition. */
	l = kube_lease_build(mine, "ns", "nrbc-controller", "me_1", 15000,
	    KUBE_LEASE_WRITE_ACQUIRE, NOW_US);
	assert_int_equal(spec_int(l, "leaseTransitions"), 3);
	assert_string_equal(spec_str(l, "acquireTime"), "2025-01-15T10:00:00.000000Z");
	json_decref(l);
	json_decref(mine);
}

static void test_build_release(void **state)
{
	json_t *mine = lease_held_by("me_1");
	json_t *l = kube_lease_build(mine, "ns", "nrbc-controller", "me_1", 15000,
	    KUBE_LEASE_WRITE_RELEASE, NOW_US);

	assert_string_equal(spec_str(l, "holderIdentity"), "");
	assert_int_equal(spec_int(l, "leaseDurationSeconds"), 1);
	/* A released lease is free for anyone at once. */
	assert_int_equal(kube_lease_decide(l, "them_2", false), KUBE_LEASE_ACQUIRE);
	json_decref(l);
	json_decref(mine);
}

static void test_duration_rounds_up(void **state)
{
	json_t *l = kube_lease_build(NULL, "ns", "n", "me", 1500, KUBE_LEASE_WRITE_ACQUIRE, NOW_US);

	assert_int_equal(spec_int(l, "leaseDurationSeconds"), 2);
	json_decref(l);
}

static void test_record_changes_with_renewal(void **state)
{
	json_t *a = lease_held_by("them_2");
	json_t *b = kube_lease_build(a, "ns", "n", "them_2", 15000, KUBE_LEASE_WRITE_RENEW, NOW_US);
	char *ra = kube_lease_record(a);
	char *ra2 = kube_lease_record(a);
	char *rb = kube_lease_record(b);

	assert_string_equal(ra, ra2);
	assert_string_not_equal(ra, rb);
	free(ra);
	free(ra2);
	free(rb);
	json_decref(a);
	json_decref(b);
}

static void test_identity(void **state)
{
	char *a, *b;

	setenv("POD_NAME", "nrbc-controller-7d9f", 1);
	a = kube_lease_identity();
	b = kube_lease_identity();
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(strncmp(a, "nrbc-controller-7d9f_", 21), 0);
	assert_int_equal(strlen(a), 21 + 16);
	/* Two processes in one pod (a restart) never share an identity. */
	assert_string_not_equal(a, b);
	free(a);
	free(b);
	unsetenv("POD_NAME");
	a = kube_lease_identity();
	assert_non_null(strchr(a, '_'));
	free(a);
}

static void test_format_time(void **state)
{
	char out[40];

	kube_lease_format_time(NOW_US, out);
	assert_string_equal(out, "2025-01-15T10:30:00.123456Z");
	kube_lease_format_time(0, out);
	assert_string_equal(out, "1970-01-01T00:00:00.000000Z");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decide),
		cmocka_unit_test(test_build_create),
		cmocka_unit_test(test_build_acquire_takeover),
		cmocka_unit_test(test_build_renew_keeps_acquire),
		cmocka_unit_test(test_build_release),
		cmocka_unit_test(test_duration_rounds_up),
		cmocka_unit_test(test_record_changes_with_renewal),
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_format_time),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
