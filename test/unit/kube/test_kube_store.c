/* The informers' compact cache: text in, parsed loans out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kube/kube_store.h"

static json_t *pod(const char *name, const char *rv)
{
	return json_pack("{s:{s:s, s:s, s:s}, s:{s:s, s:[{s:s, s:b}]}}", "metadata", "name", name,
	    "namespace", "ns", "resourceVersion", rv, "status", "phase", "Running", "conditions",
	    "type", "Ready", "status", true);
}

static void test_put_get_replace_delete(void **state)
{
	struct kube_store *s = kube_store_create();
	json_t *a = pod("a", "1"), *a2 = pod("a", "2"), *got, *again;
	size_t bytes;

	(void)state;
	assert_non_null(s);
	assert_null(kube_store_get(s, "ns/a"));
	assert_int_equal(kube_store_put(s, "ns/a", a), 0);
	assert_true(kube_store_has(s, "ns/a"));
	assert_int_equal(kube_store_size(s), 1);
	bytes = kube_store_text_bytes(s);
	assert_true(bytes > 0);

	/* A loan equal to what was put, and a new object on each get. */
	got = kube_store_get(s, "ns/a");
	assert_non_null(got);
	assert_true(json_equal(got, a));
	again = kube_store_get(s, "ns/a");
	assert_true(again != got && json_equal(again, got));

	/* Replacing keeps the count and the old loan intact. */
	assert_int_equal(kube_store_put(s, "ns/a", a2), 0);
	assert_int_equal(kube_store_size(s), 1);
	assert_true(json_equal(got, a));
	assert_true(json_equal(kube_store_get(s, "ns/a"), a2));
	assert_int_equal(kube_store_text_bytes(s), bytes);

	/* The store kept text, not the caller's object. */
	json_object_set_new(a2, "extra", json_true());
	assert_null(json_object_get(kube_store_get(s, "ns/a"), "extra"));

	kube_store_del(s, "ns/a");
	assert_false(kube_store_has(s, "ns/a"));
	assert_int_equal(kube_store_size(s), 0);
	assert_int_equal(kube_store_text_bytes(s), 0);
	kube_store_del(s, "ns/missing"); /* no-op */

	/* A loan kept with json_incref outlives the release. */
	json_incref(got);
	kube_store_release(s);
	assert_string_equal(json_string_value(json_object_get(json_object_get(got, "metadata"),
	    "resourceVersion")), "1");
	json_decref(got);
	kube_store_destroy(s);
	json_decref(a);
	json_decref(a2);
}

struct walk {
	int seen;
	int stop_after;
	size_t names_len;
};

static bool count_ready(const char *key, json_t *obj, void *data)
{
	struct walk *w = data;

	assert_non_null(strstr(key, "ns/"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(obj, "status"),
	    "phase")), "Running");
	w->seen++;
	return w->seen != w->stop_after;
}

static void test_foreach_and_stop(void **state)
{
	struct kube_store *s = kube_store_create();
	struct walk w = { 0 };
	char key[32], name[16];

	(void)state;
	for (int i = 0; i < 100; i++) {
		json_t *p;

		snprintf(name, sizeof(name), "p%d", i);
		snprintf(key, sizeof(key), "ns/%s", name);
		p = pod(name, "1");
		assert_int_equal(kube_store_put(s, key, p), 0);
		json_decref(p);
	}
	kube_store_foreach(s, count_ready, &w);
	assert_int_equal(w.seen, 100);
	w = (struct walk){ .stop_after = 7 };
	kube_store_foreach(s, count_ready, &w);
	assert_int_equal(w.seen, 7);
	kube_store_destroy(s);
	kube_store_destroy(NULL);
}

static void test_text_bytes_count_the_compact_text(void **state)
{
	struct kube_store *s = kube_store_create();
	json_t *p = pod("a-builder-pod-name", "123456");
	char *dump = json_dumps(p, JSON_COMPACT);

	(void)state;
	assert_int_equal(kube_store_put(s, "ns/a-builder-pod-name", p), 0);
	assert_int_equal(kube_store_text_bytes(s), strlen(dump));
	free(dump);
	json_decref(p);
	kube_store_destroy(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_replace_delete),
		cmocka_unit_test(test_foreach_and_stop),
		cmocka_unit_test(test_text_bytes_count_the_compact_text),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
