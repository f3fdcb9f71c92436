#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"

static void test_append_and_consume(void **state)
{
	struct buf b;

	buf_init(&b, 1024);
	assert_int_equal(buf_append_str(&b, "hello "), 0);
	assert_int_equal(buf_printf(&b, "%s %d", "world", 42), 0);
	assert_string_equal(b.data, "hello world 42");
	buf_consume(&b, 6);
	assert_string_equal(b.data, "world 42");
	assert_int_equal(b.len, 8);
	buf_consume(&b, 100);
	assert_int_equal(b.len, 0);
	buf_finish(&b);
}

static void test_cap_is_enforced(void **state)
{
	struct buf b;
	char big[64];

	memset(big, 'x', sizeof(big));
	buf_init(&b, 100);
	assert_int_equal(buf_append(&b, big, 64), 0);
	assert_int_equal(buf_append(&b, big, 36), 0);
	assert_int_equal(buf_append(&b, big, 1), -1);
	assert_int_equal(b.len, 100);
	assert_int_equal(buf_printf(&b, "y"), -1);
	buf_finish(&b);
}

static void test_steal(void **state)
{
	struct buf b;
	char *s;

	buf_init(&b, 16);
	s = buf_steal(&b);
	assert_string_equal(s, "");
	free(s);
	buf_append_str(&b, "abc");
	s = buf_steal(&b);
	assert_string_equal(s, "abc");
	assert_null(b.data);
	free(s);
	s = str_printf("%d-%s", 7, "x");
	assert_string_equal(s, "7-x");
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append_and_consume),
		cmocka_unit_test(test_cap_is_enforced),
		cmocka_unit_test(test_steal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
