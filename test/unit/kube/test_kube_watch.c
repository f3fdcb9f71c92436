#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "kube/kube_watch.h"

struct seen {
	int count;
	enum kube_watch_event_type types[16];
	char names[16][64];
	long codes[16];
};

static void record(enum kube_watch_event_type type, json_t *obj, void *data)
{
	struct seen *s = data;
	const char *name;

	assert_true(s->count < 16);
	s->types[s->count] = type;
	name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
	snprintf(s->names[s->count], sizeof(s->names[0]), "%s", name ? name : "");
	s->codes[s->count] = (long)json_integer_value(json_object_get(obj, "code"));
	s->count++;
}

static const char stream[] =
    "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\","
    "\"resourceVersion\":\"10\"}}}\n"
    "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"b\",\"note\":\"new\\nline\"}}}\n"
    "\n"
    "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"12\"}}}\r\n"
    "{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"c\"}}}\n"
    "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,"
    "\"reason\":\"Expired\",\"message\":\"too old resource version: 1 (5)\"}}\n";

static void check_stream(const struct seen *s)
{
	assert_int_equal(s->count, 5);
	assert_int_equal(s->types[0], KUBE_WATCH_ADDED);
	assert_string_equal(s->names[0], "a");
	assert_int_equal(s->types[1], KUBE_WATCH_MODIFIED);
	assert_string_equal(s->names[1], "b");
	assert_int_equal(s->types[2], KUBE_WATCH_BOOKMARK);
	assert_int_equal(s->types[3], KUBE_WATCH_DELETED);
	assert_string_equal(s->names[3], "c");
	assert_int_equal(s->types[4], KUBE_WATCH_ERROR);
	assert_int_equal(s->codes[4], 410);
}

static void test_whole_stream(void **state)
{
	struct seen s = { 0 };
	struct kube_watch_parser *p = kube_watch_parser_create(0, record, &s);
	const char *err = NULL;

	assert_non_null(p);
	assert_int_equal(kube_watch_parser_feed(p, stream, strlen(stream), &err), 0);
	check_stream(&s);
	assert_int_equal(kube_watch_parser_pending(p), 0);
	kube_watch_parser_destroy(p);
}

/* Every split point, in two pieces. */
static void test_split_at_every_byte(void **state)
{
	size_t len = strlen(stream);

	for (size_t cut = 0; cut <= len; cut++) {
		struct seen s = { 0 };
		struct kube_watch_parser *p = kube_watch_parser_create(0, record, &s);
		const char *err = NULL;

		assert_int_equal(kube_watch_parser_feed(p, stream, cut, &err), 0);
		assert_int_equal(kube_watch_parser_feed(p, stream + cut, len - cut, &err), 0);
		check_stream(&s);
		kube_watch_parser_destroy(p);
	}
}

/* One byte at a time. */
static void test_byte_by_byte(void **state)
{
	struct seen s = { 0 };
	struct kube_watch_parser *p = kube_watch_parser_create(0, record, &s);
	const char *err = NULL;

	for (size_t i = 0; i < strlen(stream); i++) {
		assert_int_equal(kube_watch_parser_feed(p, stream + i, 1, &err), 0);
	}
	assert_int_equal(kube_watch_parser_pending(p), 0);
	check_stream(&s);
	kube_watch_parser_destroy(p);
}

static void test_truncated_event_is_pending(void **state)
{
	struct seen s = { 0 };
	struct kube_watch_parser *p = kube_watch_parser_create(0, record, &s);
	const char *err = NULL;
	const char *part = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"na";

	assert_int_equal(kube_watch_parser_feed(p, part, strlen(part), &err), 0);
	assert_int_equal(s.count, 0);
	assert_int_equal(kube_watch_parser_pending(p), strlen(part));
	kube_watch_parser_destroy(p);
}

static void expect_error(const char *input, size_t max_line, const char *fragment)
{
	struct seen s = { 0 };
	struct kube_watch_parser *p = kube_watch_parser_create(max_line, record, &s);
	const char *err = NULL;

	assert_int_equal(kube_watch_parser_feed(p, input, strlen(input), &err), -1);
	assert_non_null(err);
	if (!strstr(err, fragment))
		fail_msg("error \"%s\" does not contain \"%s\"", err, fragment);
	/* A failed parser stays failed. */
	err = NULL;
	assert_int_equal(kube_watch_parser_feed(p, "\n", 1, &err), -1);
	assert_non_null(err);
	kube_watch_parser_destroy(p);
}

static void test_malformed_lines(void **state)
{
	expect_error("not json\n", 0, "not valid JSON");
	expect_error("[1,2]\n", 0, "not a JSON object");
	expect_error("{\"object\":{}}\n", 0, "no \"type\"");
	expect_error("{\"type\":7,\"object\":{}}\n", 0, "no \"type\"");
	expect_error("{\"type\":\"ADDED\"}\n", 0, "no \"object\"");
	expect_error("{\"type\":\"ADDED\",\"object\":\"x\"}\n", 0, "no \"object\"");
	expect_error("{\"type\":\"SYNC\",\"object\":{}}\n", 0, "unknown watch event type \"SYNC\"");
	expect_error("{\"type\":\"ADDED\",\"object\":{}} trailing\n", 0, "not valid JSON");
}

static void test_good_events_before_a_bad_one_are_delivered(void **state)
{
	struct seen s = { 0 };
	struct kube_watch_parser *p = kube_watch_parser_create(0, record, &s);
	const char *err = NULL;
	const char *in = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"ok\"}}}\n"
			 "{broken\n"
			 "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"never\"}}}\n";

	assert_int_equal(kube_watch_parser_feed(p, in, strlen(in), &err), -1);
	assert_int_equal(s.count, 1);
	assert_string_equal(s.names[0], "ok");
	kube_watch_parser_destroy(p);
}

static void test_oversized_line(void **state)
{
	struct seen s = { 0 };
	struct kube_watch_parser *p = kube_watch_parser_create(64, record, &s);
	const char *err = NULL;
	char big[100];

	/* Without a newline the limit must still hold, across feeds. */
	memset(big, ' ', sizeof(big));
	assert_int_equal(kube_watch_parser_feed(p, big, 40, &err), 0);
	assert_int_equal(kube_watch_parser_feed(p, big, 40, &err), -1);
	assert_non_null(strstr(err, "longer than 64 bytes"));
	kube_watch_parser_destroy(p);

	/* A complete line in one chunk. */
	memset(big, 'x', sizeof(big));
	big[sizeof(big) - 1] = '\n';
	s.count = 0;
	p = kube_watch_parser_create(64, record, &s);
	assert_int_equal(kube_watch_parser_feed(p, big, sizeof(big), &err), -1);
	assert_non_null(strstr(err, "longer than 64 bytes"));
	kube_watch_parser_destroy(p);

	/* Exactly at the limit is fine. */
	{
		struct buf b;

		buf_init(&b, 1024);
		assert_int_equal(buf_append_str(&b, "{\"type\":\"ADDED\",\"object\":{}}"), 0);
		while (b.len < 64)
			assert_int_equal(buf_append_str(&b, " "), 0);
		assert_int_equal(buf_append_str(&b, "\n"), 0);
		p = kube_watch_parser_create(64, record, &s);
		s.count = 0;
		assert_int_equal(kube_watch_parser_feed(p, b.data, 30, &err), 0);
		assert_int_equal(kube_watch_parser_feed(p, b.data + 30, b.len - 30, &err), 0);
		assert_int_equal(s.count, 1);
		kube_watch_parser_destroy(p);
		buf_finish(&b);
	}
}

static void test_type_names(void **state)
{
	assert_string_equal(kube_watch_event_type_name(KUBE_WATCH_ADDED), "ADDED");
	assert_string_equal(kube_watch_event_type_name(KUBE_WATCH_BOOKMARK), "BOOKMARK");
	assert_string_equal(kube_watch_event_type_name(KUBE_WATCH_ERROR), "ERROR");
	assert_string_equal(kube_watch_event_type_name((enum kube_watch_event_type)99), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_stream),
		cmocka_unit_test(test_split_at_every_byte),
		cmocka_unit_test(test_byte_by_byte),
		cmocka_unit_test(test_truncated_event_is_pending),
		cmocka_unit_test(test_malformed_lines),
		cmocka_unit_test(test_good_events_before_a_bad_one_are_delivered),
		cmocka_unit_test(test_oversized_line),
		cmocka_unit_test(test_type_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
