#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "proxy/proxy_secret.h"

static json_t *secret(const char *data_json)
{
	json_error_t e;
	json_t *s = json_loads(data_json, 0, &e);

	assert_non_null(s);
	return s;
}

static void test_decodes_every_key(void **state)
{
	/* "priv", "pub", "host", "client" */
	json_t *s = secret("{\"data\":{\"private\":\"cHJpdg==\",\"public\":\"cHVi\","
	    "\"host-key\":\"aG9zdA==\",\"authorized-keys\":\"Y2xpZW50\"}}");
	struct proxy_key_texts t;
	char *err = NULL;

	assert_int_equal(proxy_secret_decode(s, &t, &err), 0);
	assert_string_equal(t.private_key, "priv");
	assert_string_equal(t.public_key, "pub");
	assert_string_equal(t.host_key, "host");
	assert_string_equal(t.authorized_keys, "client");
	proxy_key_texts_finish(&t);
	json_decref(s);
}

static void test_absent_keys_stay_null(void **state)
{
	json_t *s = secret("{\"data\":{\"private\":\"cHJpdg==\"}}");
	struct proxy_key_texts t;
	char *err = NULL;

	assert_int_equal(proxy_secret_decode(s, &t, &err), 0);
	assert_null(t.public_key);
	assert_null(t.host_key);
	assert_null(t.authorized_keys);
	proxy_key_texts_finish(&t);
	json_decref(s);
}

static void expect_error(const char *json, const char *needle)
{
	json_t *s = secret(json);
	struct proxy_key_texts t;
	char *err = NULL;

	assert_int_equal(proxy_secret_decode(s, &t, &err), -1);
	assert_non_null(err);
	assert_non_null(strstr(err, needle));
	assert_null(t.private_key);
	free(err);
	json_decref(s);
}

static void test_errors_name_the_problem(void **state)
{
	expect_error("{\"kind\":\"Secret\"}", "no data");
	expect_error("{\"data\":{\"public\":\"cHVi\"}}", "\"private\"");
	expect_error("{\"data\":{\"private\":\"not base64!\"}}", "\"private\" is not valid base64");
	expect_error("{\"data\":{\"private\":\"cHJpdg==\",\"host-key\":7}}", "\"host-key\"");
	/* "a\0b": a key file never holds NUL bytes. */
	expect_error("{\"data\":{\"private\":\"YQBi\"}}", "binary");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decodes_every_key),
		cmocka_unit_test(test_absent_keys_stay_null),
		cmocka_unit_test(test_errors_name_the_problem),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
