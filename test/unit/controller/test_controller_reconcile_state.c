#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "controller/controller_reconcile_state.h"

static void test_get_makes_once_and_keeps_fields(void **unused)
{
	struct reconcile_state_table *t = reconcile_state_table_create();
	struct reconcile_state *s;

	(void)unused;
	assert_non_null(t);
	assert_null(reconcile_state_find(t, "ns/a"));
	s = reconcile_state_get(t, "ns/a", "uid-1", 100);
	assert_non_null(s);
	assert_int_equal(s->first_seen, 100);
	s->stale_rv = strdup("7");
	s->running_timed = true;
	/* Seen again later: the same entry, first sighting unchanged. */
	assert_ptr_equal(reconcile_state_get(t, "ns/a", "uid-1", 900), s);
	assert_ptr_equal(reconcile_state_find(t, "ns/a"), s);
	assert_int_equal(s->first_seen, 100);
	assert_string_equal(s->stale_rv, "7");
	assert_true(s->running_timed);
	assert_int_equal(reconcile_state_age_ms(t, "ns/a", 350), 250);
	assert_int_equal(reconcile_state_age_ms(t, "ns/other", 350), 0);
	reconcile_state_table_destroy(t);
}

/* The request deleted and made again under its name: nothing of the old
 * one's carries over. */
static void test_new_uid_starts_afresh(void **unused)
{
	struct reconcile_state_table *t = reconcile_state_table_create();
	struct reconcile_state *s = reconcile_state_get(t, "ns/a", "uid-1", 100);

	(void)unused;
	s->stale_rv = strdup("7");
	s->expected_pod = json_pack("{s:s}", "kind", "Pod");
	s->pod_created_timed = s->running_timed = true;
	s = reconcile_state_get(t, "ns/a", "uid-2", 500);
	assert_non_null(s);
	assert_string_equal(s->uid, "uid-2");
	assert_null(s->stale_rv);
	assert_null(s->expected_pod);
	assert_false(s->pod_created_timed);
	assert_false(s->running_timed);
	assert_int_equal(s->first_seen, 500);
	reconcile_state_table_destroy(t);
}

static void test_remove_and_clear_expected(void **unused)
{
	struct reconcile_state_table *t = reconcile_state_table_create();
	struct reconcile_state *s = reconcile_state_get(t, "ns/a", "u", 1);

	(void)unused;
	s->expected_pod = json_pack("{s:s}", "kind", "Pod");
	reconcile_state_clear_expected(s);
	assert_null(s->expected_pod);
	reconcile_state_remove(t, "ns/a");
	assert_null(reconcile_state_find(t, "ns/a"));
	reconcile_state_remove(t, "ns/a"); /* not there: nothing */
	reconcile_state_table_destroy(t);
	reconcile_state_table_destroy(NULL);
}

/* Past the first buckets the table grows; every entry stays findable. */
static void test_many_entries(void **unused)
{
	struct reconcile_state_table *t = reconcile_state_table_create();
	char key[32];

	(void)unused;
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "ns/r-%d", i);
		assert_non_null(reconcile_state_get(t, key, "u", (uint64_t)i));
	}
	for (int i = 0; i < 1000; i += 2) {
		snprintf(key, sizeof(key), "ns/r-%d", i);
		reconcile_state_remove(t, key);
	}
	for (int i = 0; i < 1000; i++) {
		struct reconcile_state *s;

		snprintf(key, sizeof(key), "ns/r-%d", i);
		s = reconcile_state_find(t, key);
		if (i % 2 == 0) {
			assert_null(s);
		} else {
			assert_non_null(s);
			assert_int_equal(s->first_seen, i);
		}
	}
	reconcile_state_table_destroy(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_makes_once_and_keeps_fields),
		cmocka_unit_test(test_new_uid_starts_afresh),
		cmocka_unit_test(test_remove_and_clear_expected),
		cmocka_unit_test(test_many_entries),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
