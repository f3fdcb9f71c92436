#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "flags.h"

static char *opt_name;
static long opt_port;
static uint64_t opt_timeout;
static bool opt_verbose;

static const struct flag test_flags[] = {
	{ "name", "TEST_NRBC_NAME", FLAG_STRING, &opt_name, NULL, "a name", true },
	{ "port", "TEST_NRBC_PORT", FLAG_INT, &opt_port, "2222", "a port", false },
	{ "timeout", NULL, FLAG_DURATION, &opt_timeout, "30s", "a timeout", false },
	{ "verbose", NULL, FLAG_BOOL, &opt_verbose, "false", "chatty", false },
};
#define N (sizeof(test_flags) / sizeof(test_flags[0]))

static void test_defaults_env_and_flags(void **state)
{
	char *argv[] = { "--name", "x", "--timeout=250ms", "--verbose" };

	setenv("TEST_NRBC_PORT", "2201", 1);
	assert_int_equal(flags_parse(test_flags, N, 4, argv, "t", "test"), FLAGS_OK);
	assert_string_equal(opt_name, "x");
	assert_int_equal(opt_port, 2201);
	assert_int_equal(opt_timeout, 250);
	assert_true(opt_verbose);
	flags_free(test_flags, N);
	unsetenv("TEST_NRBC_PORT");
}

static void test_errors(void **state)
{
	char *missing[] = { "--port", "1" };
	char *bad_int[] = { "--name", "x", "--port", "12ab" };
	char *unknown[] = { "--name", "x", "--nope" };
	char *no_value[] = { "--name" };

	assert_int_equal(flags_parse(test_flags, N, 2, missing, "t", "test"), FLAGS_ERROR);
	flags_free(test_flags, N);
	assert_int_equal(flags_parse(test_flags, N, 4, bad_int, "t", "test"), FLAGS_ERROR);
	flags_free(test_flags, N);
	assert_int_equal(flags_parse(test_flags, N, 3, unknown, "t", "test"), FLAGS_ERROR);
	flags_free(test_flags, N);
	assert_int_equal(flags_parse(test_flags, N, 1, no_value, "t", "test"), FLAGS_ERROR);
	flags_free(test_flags, N);
}

static void test_durations(void **state)
{
	uint64_t ms;

	assert_int_equal(flags_parse_duration("30", &ms), 0);
	assert_int_equal(ms, 30000);
	assert_int_equal(flags_parse_duration("5m", &ms), 0);
	assert_int_equal(ms, 300000);
	assert_int_equal(flags_parse_duration("1.5s", &ms), 0);
	assert_int_equal(ms, 1500);
	assert_int_equal(flags_parse_duration("-1s", &ms), -1);
	assert_int_equal(flags_parse_duration("10parsecs", &ms), -1);
	assert_int_equal(flags_parse_duration("", &ms), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_env_and_flags),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_durations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
