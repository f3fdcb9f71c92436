#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base64.h"

static void test_round_trip(void **state)
{
	const char *inputs[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	const char *encoded[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };

	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		size_t len = 0;
		char *e = base64_encode(inputs[i], strlen(inputs[i]));
		char *d = base64_decode(encoded[i], strlen(encoded[i]), &len);

		assert_string_equal(e, encoded[i]);
		assert_non_null(d);
		assert_int_equal(len, strlen(inputs[i]));
		assert_memory_equal(d, inputs[i], len);
		free(e);
		free(d);
	}
}

static void test_binary(void **state)
{
	unsigned char all[256];
	size_t len = 0;
	char *e, *d;

	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	e = base64_encode(all, sizeof(all));
	d = base64_decode(e, strlen(e), &len);
	assert_int_equal(len, sizeof(all));
	assert_memory_equal(d, all, sizeof(all));
	free(e);
	free(d);
}

static void test_rejects_malformed(void **state)
{
	const char *bad[] = { "Zg=", "Zg", "Z===", "Zm9v\n", "Zm 9", "Z=g=", "=Zg=", "Zm9v*A==",
		"Zg==Zg==" };
	size_t len;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_null(base64_decode(bad[i], strlen(bad[i]), &len));
}

static void test_lenient_skips_space_and_missing_padding(void **state)
{
	const char *ok[] = { "Zm9v", "Zm9v\n", " Zm\n9v\r\n", "Zg==", "Zg", "Zm8", "Zm8=" };
	const char *want[] = { "foo", "foo", "foo", "f", "f", "fo", "fo" };
	const char *bad[] = { "Z", "Zm9v*A==", "Zg==Zg", "Zg===", "Z\x80" };
	size_t len;
	char *d;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		d = base64_decode_lenient(ok[i], strlen(ok[i]), &len);
		assert_non_null(d);
		assert_int_equal(len, strlen(want[i]));
		assert_string_equal(d, want[i]);
		free(d);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_null(base64_decode_lenient(bad[i], strlen(bad[i]), &len));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lenient_skips_space_and_missing_padding),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_binary),
		cmocka_unit_test(test_rejects_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
