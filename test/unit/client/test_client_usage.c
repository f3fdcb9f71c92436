/* `nrbc usage`'s pure parts: rows from a NixUsageList (sorted, malformed
 * objects left out and named), the table, and the human formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "client/client_usage.h"

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, 0, &e);

	if (!v)
		fail_msg("bad test JSON: %s", e.text);
	return v;
}

static void test_formats(void **state)
{
	char out[32];

	(void)state;
	client_usage_format_seconds(12, out);
	assert_string_equal(out, "12s");
	client_usage_format_seconds(245, out);
	assert_string_equal(out, "4m05s");
	client_usage_format_seconds(3720, out);
	assert_string_equal(out, "1h02m");
	client_usage_format_seconds(3 * 86400 + 4 * 3600 + 5, out);
	assert_string_equal(out, "3d04h");
	client_usage_format_bytes(512, out);
	assert_string_equal(out, "512 B");
	client_usage_format_bytes(1536, out);
	assert_string_equal(out, "1.5 KiB");
	client_usage_format_bytes(12897485, out);
	assert_string_equal(out, "12.3 MiB");
}

static void test_rows_sorted_and_malformed_left_out(void **state)
{
	json_t *list = load("{\"items\":["
	    "{\"metadata\":{\"name\":\"aa\"},\"spec\":{\"identity\":\"aa\"},\"status\":"
	    "{\"sessionsServed\":2,\"builderSeconds\":10,\"bytesUp\":2048,"
	    "\"lastUpdate\":\"2026-12-07T12:00:00Z\"}},"
	    "{\"metadata\":{\"name\":\"bb\"},\"spec\":{\"identity\":\"bb\"},\"status\":"
	    "{\"sessionsServed\":9,\"sessionsFailed\":1,\"builders\":2,\"builderSeconds\":3720}},"
	    "{\"metadata\":{\"name\":\"cc\"},\"spec\":{\"identity\":\"cc\"}},"
	    "{\"metadata\":{\"name\":\"dd\"},\"spec\":{\"identity\":\"dd\"},\"status\":"
	    "{\"bytesDown\":\"lots\"}}]}");
	struct client_usage_row *rows;
	size_t n;
	char *warnings, *err = NULL, *table;

	(void)state;
	assert_int_equal(client_usage_rows(list, &rows, &n, &warnings, &err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(rows[0].identity, "bb");
	assert_string_equal(rows[1].identity, "aa");
	/* No status yet: a row of zeros. */
	assert_string_equal(rows[2].identity, "cc");
	assert_int_equal(rows[2].served, 0);
	assert_string_equal(rows[2].updated, "-");
	assert_non_null(warnings);
	assert_non_null(strstr(warnings, "NixUsage dd: status.bytesDown is malformed"));
	table = client_usage_table(rows, n);
	assert_non_null(table);
	assert_true(strncmp(table, "IDENTITY", 8) == 0);
	assert_non_null(strstr(table, "1h02m"));
	assert_non_null(strstr(table, "2.0 KiB"));
	assert_non_null(strstr(table, "2026-12-07T12:00:00Z"));
	free(table);
	free(warnings);
	free(rows);
	json_decref(list);
}

static void test_not_a_list(void **state)
{
	json_t *v = load("{\"kind\":\"Status\"}");
	struct client_usage_row *rows;
	size_t n;
	char *warnings, *err = NULL;

	(void)state;
	assert_int_equal(client_usage_rows(v, &rows, &n, &warnings, &err), -1);
	assert_non_null(strstr(err, "NixUsageList"));
	free(err);
	json_decref(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_formats),
		cmocka_unit_test(test_rows_sorted_and_malformed_left_out),
		cmocka_unit_test(test_not_a_list),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
