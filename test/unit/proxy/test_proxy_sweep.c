#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "proxy/proxy_sweep.h"

static void test_never_at_first_sight(void **state)
{
	struct proxy_sweep *s = proxy_sweep_create();

	assert_non_null(s);
	assert_false(proxy_sweep_see(s, "build-a"));
	proxy_sweep_end(s);
	assert_int_equal(proxy_sweep_remembered(s), 1);
	/* The next pass: still unheld, so it goes. */
	assert_true(proxy_sweep_see(s, "build-a"));
	proxy_sweep_end(s);
	assert_int_equal(proxy_sweep_remembered(s), 0);
	proxy_sweep_destroy(s);
}

static void test_held_in_between_starts_over(void **state)
{
	struct proxy_sweep *s = proxy_sweep_create();

	assert_false(proxy_sweep_see(s, "build-a"));
	assert_false(proxy_sweep_see(s, "build-b"));
	proxy_sweep_end(s);
	/* build-a was held in this pass (not seen): it starts over. */
	assert_true(proxy_sweep_see(s, "build-b"));
	proxy_sweep_end(s);
	assert_false(proxy_sweep_see(s, "build-a"));
	assert_false(proxy_sweep_see(s, "build-c"));
	proxy_sweep_end(s);
	assert_true(proxy_sweep_see(s, "build-a"));
	assert_true(proxy_sweep_see(s, "build-c"));
	proxy_sweep_end(s);
	proxy_sweep_destroy(s);
}

static void test_many_names(void **state)
{
	struct proxy_sweep *s = proxy_sweep_create();
	char name[32];

	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "build-%d", i);
		assert_false(proxy_sweep_see(s, name));
	}
	proxy_sweep_end(s);
	assert_int_equal(proxy_sweep_remembered(s), 1000);
	for (int i = 999; i >= 0; i--) {
		snprintf(name, sizeof(name), "build-%d", i);
		assert_true(proxy_sweep_see(s, name));
	}
	/* Destroyed mid-pass: nothing leaks. */
	proxy_sweep_destroy(s);
	proxy_sweep_destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_never_at_first_sight),
		cmocka_unit_test(test_held_in_between_starts_over),
		cmocka_unit_test(test_many_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
