/* Usage per identity, its pure parts: the NixUsage status a pass writes
 * (counters added, live builders' time moved on, gone builders retired
 * exactly once, malformed statuses refused), what a request's end adds, and
 * the ledger (pending counts set aside for a write, put back when it
 * fails, builders' totals seeded once from the cache). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "controller/controller_usage.h"
#include "controller/controller_usage_ledger.h"
#include "controller/controller_usage_metrics.h"
#include "buf.h"
#include "metrics.h"
#include "controller_test_fixtures.h"
#include "json_field.h"
#include "rfc3339.h"

#define ID_A "0123456789abcdef0123456789abcdef"
/* 2026-12-07T12:00:00Z */
#define T0 1796644800000LL

static json_int_t int_of(const json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	if (!json_is_integer(v))
		fail_msg("%s is not an integer", k);
	return json_integer_value(v);
}

/* One pass: old status text (NULL: none) to new status. */
static json_t *pass(const char *old_text, const struct usage_counts *add,
    const struct usage_live *live, size_t n_live, const struct usage_ended *ended,
    size_t n_ended, int64_t now, bool *changed)
{
	json_t *old = old_text ? test_load_json(old_text) : NULL;
	struct usage_input in = { old, add, live, n_live, ended, n_ended, now };
	json_t *out = NULL;
	char *err = NULL;
	bool ch;

	assert_int_equal(controller_usage_status(&in, &out, changed ? changed : &ch, &err), 0);
	assert_null(err);
	json_decref(old);
	return out;
}

static void test_first_pass_counts_and_lists_builders(void **state)
{
	struct usage_counts add = { .served = 3, .failed = 1, .bytes_up = 100, .bytes_down = 7 };
	struct usage_live live[] = { { "nb-a-1", "u1", T0 - 5000 } };
	bool changed = false;
	json_t *st = pass(NULL, &add, live, 1, NULL, 0, T0, &changed);
	json_t *act = json_object_get(st, "activeBuilders");

	(void)state;
	assert_true(changed);
	assert_int_equal(int_of(st, "sessionsServed"), 3);
	assert_int_equal(int_of(st, "sessionsFailed"), 1);
	assert_int_equal(int_of(st, "bytesUp"), 100);
	assert_int_equal(int_of(st, "bytesDown"), 7);
	assert_int_equal(int_of(st, "builders"), 1);
	assert_int_equal(int_of(st, "builderSeconds"), 5);
	assert_int_equal(int_of(st, "retiredBuilderSeconds"), 0);
	assert_int_equal(json_array_size(act), 1);
	assert_string_equal(json_field_str(json_array_get(act, 0), "since"), "2026-12-07T11:59:55Z");
	assert_string_equal(json_field_str(st, "lastUpdate"), "2026-12-07T12:00:00Z");
	json_decref(st);
}

static const char *const OLD = "{\"sessionsServed\":10,\"sessionsFailed\":2,\"bytesUp\":5,"
    "\"bytesDown\":6,\"retiredBuilderSeconds\":100,\"builderSeconds\":160,"
    "\"activeBuilders\":[{\"name\":\"nb-a-1\",\"uid\":\"u1\",\"since\":\"2026-12-07T11:59:00Z\","
    "\"lastSeen\":\"2026-12-07T11:59:30Z\"}],\"lastUpdate\":\"2026-12-07T11:59:30Z\"}";

static void test_live_builder_time_moves_on_times_only_is_no_change(void **state)
{
	struct usage_counts zero = { 0 };
	struct usage_live live[] = { { "nb-a-1", "u1", T0 } };
	bool changed = true;
	json_t *st = pass(OLD, &zero, live, 1, NULL, 0, T0, &changed);

	(void)state;
	/* The same builder: its since is kept, lastSeen moves to now. */
	assert_false(changed);
	assert_int_equal(int_of(st, "sessionsServed"), 10);
	assert_int_equal(int_of(st, "builderSeconds"), 160);
	assert_string_equal(json_field_str(json_array_get(json_object_get(st, "activeBuilders"), 0),
	    "lastSeen"), "2026-12-07T12:00:00Z");
	json_decref(st);
}

static void test_gone_builder_retired_once_at_its_end(void **state)
{
	struct usage_counts add = { .served = 1 };
	struct usage_ended ended[] = { { "nb-a-1", "u1", T0 - 20000 } };
	json_t *st, *again;
	char *text;
	bool changed = false;

	(void)state;
	/* Ended 20 s before now, 40 s after since: 40 s retired. */
	st = pass(OLD, &add, NULL, 0, ended, 1, T0, &changed);
	assert_true(changed);
	assert_int_equal(int_of(st, "retiredBuilderSeconds"), 140);
	assert_int_equal(int_of(st, "builderSeconds"), 140);
	assert_int_equal(int_of(st, "builders"), 0);
	assert_int_equal(json_array_size(json_object_get(st, "activeBuilders")), 0);
	assert_int_equal(int_of(st, "sessionsServed"), 11);
	/* The next pass (a restart, the same end reported again): nothing more. */
	text = json_dumps(st, JSON_COMPACT);
	again = pass(text, NULL, NULL, 0, ended, 1, T0 + 60000, &changed);
	assert_false(changed);
	assert_int_equal(int_of(again, "builderSeconds"), 140);
	free(text);
	json_decref(again);
	json_decref(st);
}

static void test_gone_builder_without_seen_end_counts_to_last_seen(void **state)
{
	json_t *st;

	(void)state;
	st = pass(OLD, NULL, NULL, 0, NULL, 0, T0, NULL);
	/* 11:59:00 to the last sighting 11:59:30. */
	assert_int_equal(int_of(st, "retiredBuilderSeconds"), 130);
	json_decref(st);
}

static void test_same_name_new_uid_is_another_builder(void **state)
{
	struct usage_live live[] = { { "nb-a-1", "u2", T0 } };
	bool changed = false;
	json_t *st = pass(OLD, NULL, live, 1, NULL, 0, T0, &changed);
	json_t *act = json_object_get(st, "activeBuilders");

	(void)state;
	assert_true(changed);
	assert_int_equal(int_of(st, "retiredBuilderSeconds"), 130);
	assert_int_equal(json_array_size(act), 1);
	assert_string_equal(json_field_str(json_array_get(act, 0), "uid"), "u2");
	json_decref(st);
}

static void test_builder_listed_twice_counted_once(void **state)
{
	struct usage_live live[] = { { "nb-a-1", "u1", T0 } };
	const char *twice = "{\"activeBuilders\":["
	    "{\"name\":\"nb-a-1\",\"uid\":\"u1\",\"since\":\"2026-12-07T11:59:00Z\","
	    "\"lastSeen\":\"2026-12-07T11:59:30Z\"},"
	    "{\"name\":\"nb-a-1\",\"uid\":\"u1\",\"since\":\"2026-12-07T11:58:00Z\","
	    "\"lastSeen\":\"2026-12-07T11:59:30Z\"}]}";
	bool changed = false;
	json_t *st = pass(twice, NULL, live, 1, NULL, 0, T0, &changed);

	(void)state;
	assert_true(changed);
	assert_int_equal(int_of(st, "builders"), 1);
	assert_int_equal(int_of(st, "builderSeconds"), 60);
	json_decref(st);
}

static void malformed(const char *old_text, const char *field)
{
	json_t *old = test_load_json(old_text), *out = NULL;
	struct usage_counts add = { .served = 1 };
	struct usage_input in = { old, &add, NULL, 0, NULL, 0, T0 };
	char *err = NULL;
	bool changed;

	assert_int_equal(controller_usage_status(&in, &out, &changed, &err), -1);
	assert_null(out);
	assert_non_null(err);
	if (!strstr(err, field))
		fail_msg("error \"%s\" does not name %s", err, field);
	free(err);
	json_decref(old);
}

static void test_malformed_status_is_refused_with_the_field(void **state)
{
	(void)state;
	malformed("{\"sessionsServed\":\"ten\"}", "sessionsServed");
	malformed("{\"bytesUp\":-1}", "bytesUp");
	malformed("{\"retiredBuilderSeconds\":1.5}", "retiredBuilderSeconds");
	malformed("{\"activeBuilders\":{}}", "activeBuilders");
	malformed("{\"activeBuilders\":[{\"name\":\"x\",\"uid\":\"u\",\"since\":\"yesterday\","
	          "\"lastSeen\":\"2026-12-07T11:59:30Z\"}]}", "activeBuilders[0]");
	malformed("[1]", "not an object");
}

static void test_request_end_adds_phase_and_bytes(void **state)
{
	json_t *ok = test_load_json("{\"status\":{\"phase\":\"Completed\",\"bytesUp\":10,"
	                            "\"bytesDown\":20}}");
	json_t *bad = test_load_json("{\"status\":{\"phase\":\"Failed\",\"bytesUp\":\"x\"}}");
	struct usage_counts c;

	(void)state;
	controller_usage_of_request(ok, true, &c);
	assert_int_equal(c.served, 1);
	assert_int_equal(c.failed, 0);
	assert_int_equal(c.bytes_up, 10);
	assert_int_equal(c.bytes_down, 20);
	controller_usage_of_request(bad, false, &c);
	assert_int_equal(c.served, 0);
	assert_int_equal(c.failed, 1);
	assert_int_equal(c.bytes_up, 0);
	json_decref(ok);
	json_decref(bad);
}

static void test_build_object(void **state)
{
	json_t *o = controller_usage_build("nrbc", ID_A);

	(void)state;
	assert_string_equal(json_field_str(json_object_get(o, "metadata"), "name"), ID_A);
	assert_string_equal(json_field_str(json_object_get(o, "spec"), "identity"), ID_A);
	assert_string_equal(json_field_str(o, "kind"), "NixUsage");
	assert_null(json_object_get(o, "status"));
	json_decref(o);
}

static void test_builder_quota_override_and_line(void **state)
{
	json_t *u = test_load_json("{\"spec\":{\"identity\":\"aa\",\"maxBuilders\":2}}");
	json_t *zero = test_load_json("{\"spec\":{\"identity\":\"aa\",\"maxBuilders\":0}}");
	const char *source;
	char *msg;

	(void)state;
	json_t *req = test_load_json("{\"spec\":{\"identity\":\"aa\",\"maxBuilders\":3}}");

	assert_int_equal(controller_usage_max_builders(u, NULL, 5, &source), 2);
	assert_non_null(strstr(source, "spec.maxBuilders"));
	assert_int_equal(controller_usage_max_builders(zero, NULL, 5, &source), 5);
	assert_string_equal(source, "--quota-max-builders");
	assert_int_equal(controller_usage_max_builders(NULL, NULL, 0, &source), 0);
	/* The key's option (in the request) over the flag; the NixUsage over both. */
	assert_int_equal(controller_usage_max_builders(NULL, req, 5, &source), 3);
	assert_string_equal(source, "its authorized_keys option nrbc-max-builders");
	assert_int_equal(controller_usage_max_builders(zero, req, 0, &source), 3);
	assert_int_equal(controller_usage_max_builders(u, req, 5, &source), 2);
	assert_non_null(strstr(source, "NixUsage"));
	json_decref(req);
	msg = controller_usage_quota_message(1, 1, "--quota-max-builders");
	assert_string_equal(msg, "quota: this key may hold at most 1 builder at once "
	    "(--quota-max-builders) and holds 1, every slot busy: refused until one of its "
	    "sessions ends");
	free(msg);
	json_decref(u);
	json_decref(zero);
}

/* ---------- the ledger ---------- */

static void test_ledger_write_lands_or_is_put_back(void **state)
{
	struct usage_ledger *l = usage_ledger_create();
	struct usage_counts one = { .served = 1, .bytes_up = 5 }, add;
	const struct usage_ended *ended;
	size_t n;

	(void)state;
	assert_false(usage_ledger_pending(l, "nrbc", ID_A));
	assert_int_equal(usage_ledger_session_ended(l, "nrbc", ID_A, NULL, NULL, &one), 0);
	assert_int_equal(usage_ledger_session_ended(l, "nrbc", ID_A, NULL, NULL, &one), 0);
	assert_true(usage_ledger_pending(l, "nrbc", ID_A));
	usage_ledger_begin(l, "nrbc", ID_A, &add, &ended, &n);
	assert_int_equal(add.served, 2);
	assert_int_equal(add.bytes_up, 10);
	/* A session ends while the write is in flight; a second begin adds nothing. */
	assert_int_equal(usage_ledger_session_ended(l, "nrbc", ID_A, NULL, NULL, &one), 0);
	{
		struct usage_counts again;

		usage_ledger_begin(l, "nrbc", ID_A, &again, &ended, &n);
		assert_true(usage_counts_zero(&again));
	}
	/* 409: everything is still to be written. */
	usage_ledger_end(l, "nrbc", ID_A, false);
	usage_ledger_begin(l, "nrbc", ID_A, &add, &ended, &n);
	assert_int_equal(add.served, 3);
	usage_ledger_end(l, "nrbc", ID_A, true);
	assert_false(usage_ledger_pending(l, "nrbc", ID_A));
	usage_ledger_begin(l, "nrbc", ID_A, &add, &ended, &n);
	assert_true(usage_counts_zero(&add));
	usage_ledger_end(l, "nrbc", ID_A, true);
	usage_ledger_destroy(l);
}

static void test_ledger_builder_ends_settled_by_the_write(void **state)
{
	struct usage_ledger *l = usage_ledger_create();
	struct usage_counts add;
	const struct usage_ended *ended;
	size_t n;

	(void)state;
	assert_int_equal(usage_ledger_builder_ended(l, "nrbc", ID_A, "nb-1", "u1", 1000), 0);
	/* The first sighting is the end. */
	assert_int_equal(usage_ledger_builder_ended(l, "nrbc", ID_A, "nb-1", "u1", 9000), 0);
	usage_ledger_begin(l, "nrbc", ID_A, &add, &ended, &n);
	assert_int_equal(n, 1);
	assert_string_equal(ended[0].name, "nb-1");
	assert_int_equal(ended[0].end_ms, 1000);
	assert_int_equal(usage_ledger_builder_ended(l, "nrbc", ID_A, "nb-2", "u2", 2000), 0);
	usage_ledger_end(l, "nrbc", ID_A, true);
	/* nb-2 came during the write: still pending. */
	usage_ledger_begin(l, "nrbc", ID_A, &add, &ended, &n);
	assert_int_equal(n, 1);
	assert_string_equal(ended[0].name, "nb-2");
	usage_ledger_end(l, "nrbc", ID_A, true);
	assert_false(usage_ledger_pending(l, "nrbc", ID_A));
	/* Bounded: the oldest go. */
	for (int i = 0; i < USAGE_LEDGER_MAX_ENDED + 5; i++) {
		char name[16];

		snprintf(name, sizeof(name), "nb-%d", i);
		assert_int_equal(usage_ledger_builder_ended(l, "nrbc", ID_A, name, "u", i), 0);
	}
	usage_ledger_begin(l, "nrbc", ID_A, &add, &ended, &n);
	assert_int_equal(n, USAGE_LEDGER_MAX_ENDED);
	assert_string_equal(ended[0].name, "nb-5");
	usage_ledger_end(l, "nrbc", ID_A, true);
	usage_ledger_destroy(l);
}

static void test_ledger_builder_totals_seeded_once(void **state)
{
	struct usage_ledger *l = usage_ledger_create();
	struct usage_counts cached = { .served = 5, .bytes_down = 50 }, one = { .served = 1 };
	struct usage_counts out, stale = { .served = 5 };

	(void)state;
	/* A restart: the cache says 5; a session ends on it: 6. */
	assert_int_equal(usage_ledger_session_ended(l, "nrbc", ID_A, "nrbc/nb-1", &cached, &one), 0);
	assert_int_equal(usage_ledger_builder_counts(l, "nrbc/nb-1", &stale, &out), 0);
	assert_int_equal(out.served, 6);
	assert_int_equal(out.bytes_down, 50);
	/* A builder first met by its pass. */
	assert_int_equal(usage_ledger_builder_counts(l, "nrbc/nb-2", &cached, &out), 0);
	assert_int_equal(out.served, 5);
	/* Leadership won again: totals come from the cache once more. */
	usage_ledger_reseed_builders(l);
	cached.served = 9;
	assert_int_equal(usage_ledger_builder_counts(l, "nrbc/nb-1", &cached, &out), 0);
	assert_int_equal(out.served, 9);
	usage_ledger_builder_forget(l, "nrbc/nb-1");
	assert_int_equal(usage_ledger_builder_counts(l, "nrbc/nb-1", NULL, &out), 0);
	assert_int_equal(out.served, 0);
	usage_ledger_destroy(l);
}

/* ---------- the metrics ---------- */

static double series(struct metrics *reg, const char *line_start)
{
	struct buf b;
	char *p;
	double v = -1;

	buf_init(&b, 1 << 20);
	assert_int_equal(metrics_render(reg, &b), 0);
	for (p = b.data; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, line_start, strlen(line_start)) == 0 && p[strlen(line_start)] == ' ') {
			v = strtod(p + strlen(line_start) + 1, NULL);
			break;
		}
	}
	buf_finish(&b);
	return v;
}

static json_t *usage_obj(const char *identity, int served, int bytes_up, int builders)
{
	return json_pack("{s:{s:s},s:{s:i,s:i,s:i}}", "spec", "identity", identity, "status",
	    "sessionsServed", served, "bytesUp", bytes_up, "builders", builders);
}

static void test_metrics_follow_the_objects_with_a_bound(void **state)
{
	struct metrics *reg = metrics_create();
	struct usage_metrics *u = usage_metrics_create(reg, 2);
	json_t *a1 = usage_obj("aa", 3, 100, 1), *a2 = usage_obj("aa", 5, 150, 0);
	json_t *b1 = usage_obj("bb", 1, 10, 2), *c1 = usage_obj("cc", 4, 40, 1);
	json_t *d1 = usage_obj("dd", 6, 60, 2), *bad = usage_obj("NOT-HEX", 9, 9, 9);

	(void)state;
	usage_metrics_update(u, NULL, a1);
	usage_metrics_update(u, a1, a2);
	usage_metrics_update(u, NULL, b1);
	usage_metrics_update(u, NULL, c1);
	usage_metrics_update(u, NULL, d1);
	usage_metrics_update(u, NULL, bad);
	assert_true(series(reg, "nrbc_usage_sessions_total{identity=\"aa\",outcome=\"served\"}")
	    == 5);
	assert_true(series(reg, "nrbc_usage_bytes_total{identity=\"aa\",direction=\"up\"}") ==
	    150);
	assert_true(series(reg, "nrbc_usage_builders{identity=\"aa\"}") == 0);
	assert_true(series(reg, "nrbc_usage_builders{identity=\"bb\"}") == 2);
	/* Beyond 2 identities: into "other", summed. */
	assert_true(series(reg, "nrbc_usage_sessions_total{identity=\"cc\",outcome=\"served\"}")
	    == -1);
	assert_true(series(reg,
	    "nrbc_usage_sessions_total{identity=\"other\",outcome=\"served\"}") == 10);
	assert_true(series(reg, "nrbc_usage_builders{identity=\"other\"}") == 3);
	assert_true(series(reg, "nrbc_usage_identities{labelled=\"true\"}") == 2);
	assert_true(series(reg, "nrbc_usage_identities{labelled=\"false\"}") == 2);
	/* A deletion takes nothing back from counters, the gauge follows. */
	usage_metrics_update(u, d1, NULL);
	assert_true(series(reg,
	    "nrbc_usage_sessions_total{identity=\"other\",outcome=\"served\"}") == 10);
	assert_true(series(reg, "nrbc_usage_builders{identity=\"other\"}") == 1);
	assert_true(series(reg, "nrbc_usage_identities{labelled=\"false\"}") == 1);
	json_decref(a1);
	json_decref(a2);
	json_decref(b1);
	json_decref(c1);
	json_decref(d1);
	json_decref(bad);
	usage_metrics_destroy(u);
	metrics_destroy(reg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_pass_counts_and_lists_builders),
		cmocka_unit_test(test_live_builder_time_moves_on_times_only_is_no_change),
		cmocka_unit_test(test_gone_builder_retired_once_at_its_end),
		cmocka_unit_test(test_gone_builder_without_seen_end_counts_to_last_seen),
		cmocka_unit_test(test_same_name_new_uid_is_another_builder),
		cmocka_unit_test(test_builder_listed_twice_counted_once),
		cmocka_unit_test(test_malformed_status_is_refused_with_the_field),
		cmocka_unit_test(test_request_end_adds_phase_and_bytes),
		cmocka_unit_test(test_build_object),
		cmocka_unit_test(test_builder_quota_override_and_line),
		cmocka_unit_test(test_ledger_write_lands_or_is_put_back),
		cmocka_unit_test(test_ledger_builder_ends_settled_by_the_write),
		cmocka_unit_test(test_ledger_builder_totals_seeded_once),
		cmocka_unit_test(test_metrics_follow_the_objects_with_a_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
