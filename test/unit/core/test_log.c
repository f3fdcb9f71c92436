#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"

static void test_escape_keeps_printable(void **state)
{
	char out[LOG_ESCAPE_MAX];

	assert_string_equal(log_escape(out, sizeof(out), "nix-store --serve", (size_t)-1),
	    "nix-store --serve");
	assert_string_equal(log_escape(out, sizeof(out), "a\"b\\c", (size_t)-1), "a\\\"b\\\\c");
	assert_string_equal(log_escape(out, sizeof(out), NULL, 0), "");
}

static void test_escape_control_and_8bit(void **state)
{
	char out[LOG_ESCAPE_MAX];

	assert_string_equal(log_escape(out, sizeof(out), "x\ny\x1b[31m\x7f\xc3\xa9", (size_t)-1),
	    "x\\x0ay\\x1b[31m\\x7f\\xc3\\xa9");
	/* Explicit length: a NUL is escaped too. */
	assert_string_equal(log_escape(out, sizeof(out), "a\0b", 3), "a\\x00b");
}

static void test_escape_truncates_with_dots(void **state)
{
	char out[12];

	assert_string_equal(log_escape(out, sizeof(out), "0123456789abcdef", (size_t)-1),
	    "01234567...");
	assert_int_equal(strlen(out), 11);
	/* An escape is never cut in half. */
	assert_string_equal(log_escape(out, sizeof(out), "0123456\n89abcdef", (size_t)-1),
	    "0123456...");
	/* Exactly fits: no dots. */
	assert_string_equal(log_escape(out, sizeof(out), "0123456789a", (size_t)-1),
	    "0123456789a");
	assert_string_equal(log_escape(out, 3, "abcdef", (size_t)-1), "ab");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_keeps_printable),
		cmocka_unit_test(test_escape_control_and_8bit),
		cmocka_unit_test(test_escape_truncates_with_dots),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
