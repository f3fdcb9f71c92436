#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/proxy_authorized_keys.h"

#define KEY_A "AAAAC3NzaC1lZDI1NTE5AAAAILBVeEs5mXf+r203J3lV8otv9KpEnwyckNUxFjKOiwzv"
#define KEY_B "AAAAC3NzaC1lZDI1NTE5AAAAIIl3Hoa6s99JU++qG/c5AY1ALEyQZEz5AqFeBV5XrqWh"
#define KEY_EC "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNeWbkCEDL1oM1yuyGbk0z3po46XdDqgCxE2ZSvLirBY5Trje53N9KPhdPJEJTgYYrUHkFrBuaSx5oWBMmKEr4c="

static void parse_ok(const char *text, struct proxy_authorized_keys *out)
{
	char *err = NULL;

	assert_int_equal(proxy_authorized_keys_parse(text, strlen(text), out, &err), 0);
	assert_null(err);
}

static void test_plain_lines(void **state)
{
	struct proxy_authorized_keys k;

	parse_ok("# a comment\n\nssh-ed25519 " KEY_A " test-a\r\n"
	         "  ecdsa-sha2-nistp256\t" KEY_EC "\n"
	         "ssh-ed25519 " KEY_B " two words  \n", &k);
	assert_int_equal(k.n, 3);
	assert_int_equal(k.skipped, 0);
	assert_null(k.warnings);
	assert_string_equal(k.keys[0].type, "ssh-ed25519");
	assert_string_equal(k.keys[0].comment, "test-a");
	assert_int_equal(k.keys[0].line, 3);
	assert_int_equal(k.keys[0].blob_len, 51);
	assert_string_equal(k.keys[1].type, "ecdsa-sha2-nistp256");
	assert_string_equal(k.keys[1].comment, "");
	assert_string_equal(k.keys[2].comment, "two words");
	assert_string_equal(k.keys[2].base64, KEY_B);
	proxy_authorized_keys_finish(&k);
}

static void test_bad_lines_are_skipped_with_warnings(void **state)
{
	struct proxy_authorized_keys k;

	parse_ok("from=\"10.0.0.1\" ssh-ed25519 " KEY_A " opts\n"
	         "ssh-dss AAAAB3NzaC1kc3M= old\n"
	         "ssh-ed25519 not*base64 x\n"
	         "ssh-rsa " KEY_A " type mismatch\n"
	         "ssh-ed25519\n"
	         "ssh-ed25519 " KEY_B " ok\n"
	         "ssh-ed25519 " KEY_A " bell\a\n", &k);
	assert_int_equal(k.n, 1);
	assert_string_equal(k.keys[0].comment, "ok");
	assert_int_equal(k.keys[0].line, 6);
	assert_int_equal(k.skipped, 6);
	assert_non_null(strstr(k.warnings, "line 1: options"));
	assert_non_null(strstr(k.warnings, "line 2: unknown"));
	assert_non_null(strstr(k.warnings, "line 3: key data is not valid base64"));
	assert_non_null(strstr(k.warnings, "line 4: key data does not match"));
	assert_non_null(strstr(k.warnings, "line 5: key type without key data"));
	assert_non_null(strstr(k.warnings, "line 7: control characters"));
	proxy_authorized_keys_finish(&k);
}

static void test_max_sessions_option(void **state)
{
	struct proxy_authorized_keys k;

	parse_ok("nrbc-max-sessions=4 ssh-ed25519 " KEY_A " limited\n"
	         "ssh-ed25519 " KEY_B " default\n"
	         "nrbc-max-sessions=0 ssh-ed25519 " KEY_A " zero\n"
	         "nrbc-max-sessions=10001 ssh-ed25519 " KEY_A " big\n"
	         "nrbc-max-sessions=4,from=\"x\" ssh-ed25519 " KEY_A " more\n"
	         "nrbc-max-sessions=99999999999999999999 ssh-ed25519 " KEY_A " huge\n"
	         "nrbc-max-sessions= ssh-ed25519 " KEY_A " empty\n", &k);
	assert_int_equal(k.n, 2);
	assert_string_equal(k.keys[0].comment, "limited");
	assert_int_equal(k.keys[0].max_sessions, 4);
	assert_int_equal(k.keys[1].max_sessions, 0);
	assert_int_equal(k.skipped, 5);
	assert_non_null(strstr(k.warnings, "line 3: nrbc-max-sessions="));
	assert_non_null(strstr(k.warnings, "line 4: nrbc-max-sessions="));
	assert_non_null(strstr(k.warnings, "line 5: options other than"));
	assert_non_null(strstr(k.warnings, "line 6: nrbc-max-sessions="));
	proxy_authorized_keys_finish(&k);
}

static void test_max_builders_option(void **state)
{
	struct proxy_authorized_keys k;

	(void)state;
	parse_ok("nrbc-max-builders=2 ssh-ed25519 " KEY_A " two\n"
	         "nrbc-max-sessions=8,nrbc-max-builders=\"1\" ssh-ed25519 " KEY_B " both\n"
	         "ssh-ed25519 " KEY_B " default\n"
	         "nrbc-max-builders=0 ssh-ed25519 " KEY_A " zero\n"
	         "nrbc-max-builders=10001 ssh-ed25519 " KEY_A " big\n"
	         "nrbc-max-builders=1,nrbc-max-builders=2 ssh-ed25519 " KEY_A " twice\n"
	         "nrbc-max-builders=x ssh-ed25519 " KEY_A " word\n", &k);
	assert_int_equal(k.n, 3);
	assert_int_equal(k.keys[0].max_builders, 2);
	assert_int_equal(k.keys[0].max_sessions, 0);
	assert_int_equal(k.keys[1].max_builders, 1);
	assert_int_equal(k.keys[1].max_sessions, 8);
	assert_int_equal(k.keys[2].max_builders, 0);
	assert_int_equal(k.skipped, 4);
	assert_non_null(strstr(k.warnings, "line 4: nrbc-max-builders="));
	assert_non_null(strstr(k.warnings, "line 5: nrbc-max-builders="));
	assert_non_null(strstr(k.warnings, "line 6: nrbc-max-builders="));
	assert_non_null(strstr(k.warnings, "line 7: nrbc-max-builders="));
	proxy_authorized_keys_finish(&k);
}

static void test_classes_option(void **state)
{
	struct proxy_authorized_keys k;

	(void)state;
	parse_ok("nrbc-classes=\"nixbld,big\" ssh-ed25519 " KEY_A " two\n"
	         "nrbc-max-sessions=3,nrbc-classes=arm ssh-ed25519 " KEY_B " both\n"
	         "nrbc-classes=\"big\",nrbc-max-sessions=2 ssh-ed25519 " KEY_A " other order\n"
	         "ssh-ed25519 " KEY_B " any\n"
	         "nrbc-classes=\"Big\" ssh-ed25519 " KEY_A " upper\n"
	         "nrbc-classes=\"big,\" ssh-ed25519 " KEY_A " trailing comma\n"
	         "nrbc-classes=\"big ssh-ed25519 " KEY_A " unclosed\n"
	         "nrbc-classes= ssh-ed25519 " KEY_A " empty\n"
	         "nrbc-classes=a,nrbc-classes=b ssh-ed25519 " KEY_A " twice\n"
	         "nrbc-classes=\"-x\" ssh-ed25519 " KEY_A " dash\n"
	         "nrbc-classes=\"a\"b ssh-ed25519 " KEY_A " junk after quote\n", &k);
	assert_int_equal(k.n, 4);
	assert_string_equal(k.keys[0].classes, "nixbld,big");
	assert_int_equal(k.keys[0].max_sessions, 0);
	assert_string_equal(k.keys[1].classes, "arm");
	assert_int_equal(k.keys[1].max_sessions, 3);
	assert_string_equal(k.keys[2].classes, "big");
	assert_int_equal(k.keys[2].max_sessions, 2);
	assert_string_equal(k.keys[2].comment, "other order");
	assert_null(k.keys[3].classes);
	assert_int_equal(k.skipped, 7);
	for (int line = 5; line <= 11; line++) {
		char want[32];

		snprintf(want, sizeof(want), "line %d: nrbc-classes=", line);
		assert_non_null(strstr(k.warnings, want));
	}
	proxy_authorized_keys_finish(&k);
}

static void test_whole_text_errors(void **state)
{
	struct proxy_authorized_keys k;
	char *err = NULL;
	char nul[] = "ssh-ed25519 " KEY_A "\0 x\n";
	size_t big = PROXY_AUTHORIZED_KEYS_MAX_TEXT + 1;
	char *text = malloc(big);

	assert_int_equal(proxy_authorized_keys_parse(nul, sizeof(nul) - 1, &k, &err), -1);
	assert_non_null(strstr(err, "NUL"));
	free(err);
	assert_non_null(text);
	memset(text, '#', big);
	assert_int_equal(proxy_authorized_keys_parse(text, big, &k, &err), -1);
	assert_non_null(strstr(err, "over the limit"));
	free(err);
	free(text);
}

static void test_too_many_keys(void **state)
{
	size_t line_len = strlen("ssh-ed25519 " KEY_A "\n");
	size_t n = PROXY_AUTHORIZED_KEYS_MAX_KEYS + 1;
	char *text = malloc(line_len * n + 1);
	struct proxy_authorized_keys k;
	char *err = NULL;

	assert_non_null(text);
	for (size_t i = 0; i < n; i++)
		memcpy(text + i * line_len, "ssh-ed25519 " KEY_A "\n", line_len);
	assert_int_equal(proxy_authorized_keys_parse(text, line_len * n, &k, &err), -1);
	assert_non_null(strstr(err, "more than"));
	free(err);
	/* Exactly the maximum is fine. */
	assert_int_equal(proxy_authorized_keys_parse(text, line_len * (n - 1), &k, &err), 0);
	assert_int_equal(k.n, PROXY_AUTHORIZED_KEYS_MAX_KEYS);
	proxy_authorized_keys_finish(&k);
	free(text);
}

static void test_empty_and_unterminated(void **state)
{
	struct proxy_authorized_keys k;

	parse_ok("", &k);
	assert_int_equal(k.n, 0);
	proxy_authorized_keys_finish(&k);
	parse_ok("ssh-ed25519 " KEY_A, &k);
	assert_int_equal(k.n, 1);
	proxy_authorized_keys_finish(&k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_lines),
		cmocka_unit_test(test_bad_lines_are_skipped_with_warnings),
		cmocka_unit_test(test_max_sessions_option),
		cmocka_unit_test(test_max_builders_option),
		cmocka_unit_test(test_classes_option),
		cmocka_unit_test(test_whole_text_errors),
		cmocka_unit_test(test_too_many_keys),
		cmocka_unit_test(test_empty_and_unterminated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
