#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static char *render(const struct metrics *m)
{
	struct buf b;

	buf_init(&b, 1 << 20);
	assert_int_equal(metrics_render(m, &b), 0);
	return buf_steal(&b);
}

static void test_counter(void **state)
{
	struct metrics *m = metrics_create();
	struct metric *c;
	char *text;

	assert_non_null(m);
	c = metrics_counter(m, "nrbc_sessions_total", "Sessions started.", NULL);
	assert_non_null(c);
	metric_add(c, 1);
	metric_add(c, 2.5);
	metric_add(c, -1); /* counters never go down */
	metric_set(c, 100); /* not for counters */
	assert_true(metric_value(c) == 3.5);
	/* The same name and labels is the same series. */
	assert_ptr_equal(metrics_counter(m, "nrbc_sessions_total", "other help", NULL), c);
	text = render(m);
	assert_string_equal(text,
	    "# HELP nrbc_sessions_total Sessions started.\n"
	    "# TYPE nrbc_sessions_total counter\n"
	    "nrbc_sessions_total 3.5\n");
	free(text);
	metrics_destroy(m);
}

static void test_labelled_gauges_share_a_block(void **state)
{
	struct metrics *m = metrics_create();
	struct metric *x86, *arm, *c;
	char *text;

	x86 = metrics_gauge(m, "nrbc_builders", "Builder pods by system.\nSecond \\ line.",
	    "system=\"x86_64-linux\"");
	c = metrics_counter(m, "nrbc_errors_total", NULL, "kind=\"a \\\"quoted\\\" one\"");
	arm = metrics_gauge(m, "nrbc_builders", NULL, "system=\"aarch64-linux\"");
	assert_non_null(x86);
	assert_non_null(arm);
	assert_non_null(c);
	metric_set(x86, 4);
	metric_add(x86, -1);
	metric_set(arm, 0.1);
	metric_add(c, 1e21);
	text = render(m);
	assert_string_equal(text,
	    "# HELP nrbc_builders Builder pods by system.\\nSecond \\\\ line.\n"
	    "# TYPE nrbc_builders gauge\n"
	    "nrbc_builders{system=\"x86_64-linux\"} 3\n"
	    "nrbc_builders{system=\"aarch64-linux\"} 0.1\n"
	    "# TYPE nrbc_errors_total counter\n"
	    "nrbc_errors_total{kind=\"a \\\"quoted\\\" one\"} 1e+21\n");
	free(text);
	metrics_destroy(m);
}

static void test_histogram(void **state)
{
	static const double bounds[] = { 0.005, 0.1, 1, 10 };
	struct metrics *m = metrics_create();
	struct metric *h, *h2;
	char *text;

	h = metrics_histogram(m, "nrbc_pod_start_seconds", "Time to a running builder.", NULL,
	    bounds, 4);
	h2 = metrics_histogram(m, "nrbc_pod_start_seconds", NULL, "pool=\"big\"", bounds, 4);
	assert_non_null(h);
	assert_non_null(h2);
	metric_observe(h, 0.005); /* on a bound: counts in that bucket */
	metric_observe(h, 0.05);
	metric_observe(h, 2);
	metric_observe(h, 20);
	metric_observe(h, 0.25);
	metric_observe(h2, 11);
	assert_true(metric_value(h) == 5);
	text = render(m);
	assert_string_equal(text,
	    "# HELP nrbc_pod_start_seconds Time to a running builder.\n"
	    "# TYPE nrbc_pod_start_seconds histogram\n"
	    "nrbc_pod_start_seconds_bucket{le=\"0.005\"} 1\n"
	    "nrbc_pod_start_seconds_bucket{le=\"0.1\"} 2\n"
	    "nrbc_pod_start_seconds_bucket{le=\"1\"} 3\n"
	    "nrbc_pod_start_seconds_bucket{le=\"10\"} 4\n"
	    "nrbc_pod_start_seconds_bucket{le=\"+Inf\"} 5\n"
	    "nrbc_pod_start_seconds_sum 22.305\n"
	    "nrbc_pod_start_seconds_count 5\n"
	    "nrbc_pod_start_seconds_bucket{pool=\"big\",le=\"0.005\"} 0\n"
	    "nrbc_pod_start_seconds_bucket{pool=\"big\",le=\"0.1\"} 0\n"
	    "nrbc_pod_start_seconds_bucket{pool=\"big\",le=\"1\"} 0\n"
	    "nrbc_pod_start_seconds_bucket{pool=\"big\",le=\"10\"} 0\n"
	    "nrbc_pod_start_seconds_bucket{pool=\"big\",le=\"+Inf\"} 1\n"
	    "nrbc_pod_start_seconds_sum{pool=\"big\"} 11\n"
	    "nrbc_pod_start_seconds_count{pool=\"big\"} 1\n");
	free(text);
	metrics_destroy(m);
}

static void test_rejects_bad_registrations(void **state)
{
	static const double bounds[] = { 1, 2 };
	static const double unsorted[] = { 2, 1 };
	struct metrics *m = metrics_create();

	assert_null(metrics_counter(m, "", NULL, NULL));
	assert_null(metrics_counter(m, "9lives", NULL, NULL));
	assert_null(metrics_counter(m, "has-dash", NULL, NULL));
	assert_non_null(metrics_counter(m, "ns:sub_total", NULL, NULL));
	assert_null(metrics_counter(m, "x", NULL, "a=b"));
	assert_null(metrics_counter(m, "x", NULL, "a=\"b"));
	assert_null(metrics_counter(m, "x", NULL, "a=\"b\","));
	assert_null(metrics_counter(m, "x", NULL, "a=\"b\",a=\"c\""));
	assert_null(metrics_counter(m, "x", NULL, "__name__=\"b\""));
	assert_null(metrics_counter(m, "x", NULL, "a=\"b\\t\""));
	assert_null(metrics_counter(m, "x", NULL, "a=\"line\nbreak\""));
	assert_non_null(metrics_counter(m, "x", NULL, "a=\"b\",c=\"\\n\""));
	/* One name, one type. */
	assert_null(metrics_gauge(m, "x", NULL, NULL));
	assert_null(metrics_histogram(m, "h", NULL, "le=\"1\"", bounds, 2));
	assert_null(metrics_histogram(m, "h", NULL, NULL, unsorted, 2));
	assert_non_null(metrics_histogram(m, "h", NULL, NULL, bounds, 2));
	assert_null(metrics_histogram(m, "h", NULL, "a=\"1\"", bounds, 1));
	/* Updating a failed registration is harmless. */
	metric_add(NULL, 1);
	metric_observe(NULL, 1);
	metrics_destroy(m);
	metrics_destroy(NULL);
}

static void test_render_fails_at_cap(void **state)
{
	struct metrics *m = metrics_create();
	struct buf b;

	metric_add(metrics_counter(m, "a_rather_long_metric_name_total", "help", NULL), 1);
	buf_init(&b, 40);
	assert_int_equal(metrics_render(m, &b), -1);
	buf_finish(&b);
	metrics_destroy(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counter),
		cmocka_unit_test(test_labelled_gauges_share_a_block),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_rejects_bad_registrations),
		cmocka_unit_test(test_render_fails_at_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
