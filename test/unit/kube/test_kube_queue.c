#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kube/kube_queue.h"

#define MAX_LOG 64

/* What the process callback saw, and how it should answer. */
struct fixture {
	uv_loop_t loop;
	struct kube_queue *q;
	char log[MAX_LOG][32];
	uint64_t at[MAX_LOG]; /* loop time of each call */
	int calls;
	int concurrent;
	int max_concurrent;
	int fail_first; /* answer RETRY this many times */
	bool async;     /* call done later from a timer */
	bool readd_during; /* re-add the key while processing, once */
	bool in_add;    /* set around kube_queue_add to catch re-entrancy */
	uv_timer_t done_timer;
	char pending[8][32];
	int npending;
};

static void finish(struct fixture *f, const char *key)
{
	enum kube_queue_result r = f->fail_first > 0 ? KUBE_QUEUE_RETRY : KUBE_QUEUE_FORGET;

	if (f->fail_first > 0)
		f->fail_first--;
	f->concurrent--;
	kube_queue_done(f->q, key, r);
}

static void on_done_timer(uv_timer_t *t)
{
	struct fixture *f = t->data;
	int n = f->npending;

	f->npending = 0;
	for (int i = 0; i < n; i++)
		finish(f, f->pending[i]);
}

static void process(struct kube_queue *q, const char *key, void *data)
{
	struct fixture *f = data;

	assert_false(f->in_add); /* never inside kube_queue_add */
	assert_true(f->calls < MAX_LOG);
	snprintf(f->log[f->calls], sizeof(f->log[0]), "%s", key);
	f->at[f->calls] = uv_now(&f->loop);
	f->calls++;
	f->concurrent++;
	if (f->concurrent > f->max_concurrent)
		f->max_concurrent = f->concurrent;
	if (f->readd_during) {
		f->readd_during = false;
		f->in_add = true;
		kube_queue_add(q, key);
		kube_queue_add(q, key);
		f->in_add = false;
	}
	if (f->async) {
		assert_true(f->npending < 8);
		snprintf(f->pending[f->npending++], sizeof(f->pending[0]), "%s", key);
		uv_timer_start(&f->done_timer, on_done_timer, 20, 0);
	} else {
		finish(f, key);
	}
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f || uv_loop_init(&f->loop) != 0)
		return -1;
	uv_timer_init(&f->loop, &f->done_timer);
	f->done_timer.data = f;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	kube_queue_destroy(f->q);
	uv_close((uv_handle_t *)&f->done_timer, NULL);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	free(f);
	return 0;
}

static void add(struct fixture *f, const char *key)
{
	f->in_add = true;
	kube_queue_add(f->q, key);
	f->in_add = false;
}

static void test_dedup(void **state)
{
	struct fixture *f = *state;

	f->q = kube_queue_create(&f->loop, 4, 10, 1000, process, f);
	assert_non_null(f->q);
	add(f, "ns/a");
	add(f, "ns/a");
	add(f, "ns/b");
	add(f, "ns/a");
	assert_int_equal(kube_queue_depth(f->q), 2);
	assert_int_equal(f->calls, 0); /* nothing runs inside add */
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->calls, 2);
	assert_string_equal(f->log[0], "ns/a"); /* FIFO */
	assert_string_equal(f->log[1], "ns/b");
	assert_int_equal(kube_queue_depth(f->q), 0);
	assert_int_equal(kube_queue_in_flight(f->q), 0);
}

static void test_no_concurrent_processing_and_readd(void **state)
{
	struct fixture *f = *state;

	f->q = kube_queue_create(&f->loop, 4, 10, 1000, process, f);
	f->async = true;
	f->readd_during = true;
	add(f, "ns/a");
	uv_run(&f->loop, UV_RUN_DEFAULT);
	/* Re-added (twice) while processing: exactly one more run, after done. */
	assert_int_equal(f->calls, 2);
	assert_int_equal(f->max_concurrent, 1);
	assert_true(f->at[1] >= f->at[0] + 20);
}

static void test_max_in_flight(void **state)
{
	struct fixture *f = *state;

	f->q = kube_queue_create(&f->loop, 2, 10, 1000, process, f);
	f->async = true;
	add(f, "a");
	add(f, "b");
	add(f, "c");
	add(f, "d");
	add(f, "e");
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->calls, 5);
	assert_int_equal(f->max_concurrent, 2);
}

static void test_backoff_growth_and_forget(void **state)
{
	struct fixture *f = *state;

	f->q = kube_queue_create(&f->loop, 1, 20, 60, process, f);
	f->fail_first = 4;
	add(f, "k");
	uv_run(&f->loop, UV_RUN_DEFAULT);
	/* 4 failures then a success: delays 20, 40, 60 (capped), 60. */
	assert_int_equal(f->calls, 5);
	assert_true(f->at[1] - f->at[0] >= 20);
	assert_true(f->at[2] - f->at[1] >= 40);
	assert_true(f->at[3] - f->at[2] >= 60);
	assert_true(f->at[4] - f->at[3] >= 60);
	assert_true(f->at[4] - f->at[3] < 120);
	/* FORGET reset the backoff: the next failure waits base_ms again. */
	f->fail_first = 1;
	add(f, "k");
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->calls, 7);
	assert_true(f->at[6] - f->at[5] >= 20);
	assert_true(f->at[6] - f->at[5] < 40);
}

static void test_add_after(void **state)
{
	struct fixture *f = *state;
	uint64_t start;

	f->q = kube_queue_create(&f->loop, 4, 10, 1000, process, f);
	uv_update_time(&f->loop);
	start = uv_now(&f->loop);
	kube_queue_add_after(f->q, "late", 80);
	kube_queue_add_after(f->q, "early", 30);
	kube_queue_add_after(f->q, "late", 200); /* the earlier time wins */
	kube_queue_add_after(f->q, "now", 0);
	assert_int_equal(kube_queue_depth(f->q), 1);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->calls, 3);
	assert_string_equal(f->log[0], "now");
	assert_string_equal(f->log[1], "early");
	assert_string_equal(f->log[2], "late");
	assert_true(f->at[1] - start >= 30);
	assert_true(f->at[2] - start >= 80);
	assert_true(f->at[2] - start < 200);
}

/* The first waiting key moved earlier: it must not end up linked to
 * itself (the walk once began at the stale head and spun forever). */
static void test_add_after_moves_the_head_earlier(void **state)
{
	struct fixture *f = *state;

	f->q = kube_queue_create(&f->loop, 4, 10, 1000, process, f);
	kube_queue_add_after(f->q, "head", 200);
	kube_queue_add_after(f->q, "head", 20);
	kube_queue_add_after(f->q, "other", 40);
	kube_queue_add_after(f->q, "head", 10);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->calls, 2);
	assert_string_equal(f->log[0], "head");
	assert_string_equal(f->log[1], "other");
}

static void test_add_after_of_queued_key_dedups(void **state)
{
	struct fixture *f = *state;

	f->q = kube_queue_create(&f->loop, 4, 10, 1000, process, f);
	add(f, "x");
	kube_queue_add_after(f->q, "x", 30);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	/* Processed at once, then once more when the delay expired. */
	assert_int_equal(f->calls, 2);
}

static void test_pause(void **state)
{
	struct fixture *f = *state;

	f->q = kube_queue_create(&f->loop, 4, 10, 1000, process, f);
	add(f, "a");
	kube_queue_pause(f->q);
	add(f, "b");
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->calls, 0);
	assert_int_equal(kube_queue_depth(f->q), 2);
}

static void test_done_for_unknown_key_is_ignored(void **state)
{
	struct fixture *f = *state;

	f->q = kube_queue_create(&f->loop, 4, 10, 1000, process, f);
	kube_queue_done(f->q, "never-added", KUBE_QUEUE_FORGET);
	assert_int_equal(kube_queue_in_flight(f->q), 0);
}

static void test_many_keys(void **state)
{
	struct fixture *f = *state;
	char key[32];

	f->q = kube_queue_create(&f->loop, 8, 10, 1000, process, f);
	/* Past the initial hash size, with duplicates. */
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 60; i++) {
			snprintf(key, sizeof(key), "ns/k%d", i);
			add(f, key);
		}
	}
	assert_int_equal(kube_queue_depth(f->q), 60);
	kube_queue_pause(f->q); /* keep the log small: only count depth */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_concurrent_processing_and_readd, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_max_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_after_moves_the_head_earlier, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_backoff_growth_and_forget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_after, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_after_of_queued_key_dedups, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_pause, setup, teardown),
		cmocka_unit_test_setup_teardown(test_done_for_unknown_key_is_ignored, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_many_keys, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
