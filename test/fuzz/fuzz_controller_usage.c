/*
 * libFuzzer target for what reads NixUsage objects from the API: the
 * controller's status pass (controller_usage_status) and `nrbc usage`'s
 * rows (client_usage_rows). Input: a status object as JSON. Besides memory
 * safety it checks what the ledger relies on: a status that parses never
 * loses counts, retired time never shrinks, and a second pass over the
 * first's output (same builders, the same end reported again, nothing
 * added) changes nothing.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client/client_usage.h"
#include "controller/controller_usage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 2026-12-07T12:00:00Z */
#define NOW 1796644800000LL

static json_int_t int_of(const json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static void check_rows(json_t *status)
{
	json_t *list = json_pack("{s:[{s:{s:s},s:{s:s},s:O}]}", "items", "metadata", "name", "x",
	    "spec", "identity", "aa", "status", status);
	struct client_usage_row *rows = NULL;
	size_t n = 0;
	char *warnings = NULL, *err = NULL, *table;

	if (!list)
		return;
	if (client_usage_rows(list, &rows, &n, &warnings, &err) == 0) {
		if (n + (warnings ? 1 : 0) != 1)
			abort();
		table = client_usage_table(rows, n);
		free(table);
	}
	free(rows);
	free(warnings);
	free(err);
	json_decref(list);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct usage_live live[] = { { "nb-a-1", "u1", NOW - 5000 }, { "nb-a-2", "u2", 0 } };
	struct usage_ended ended[] = { { "nb-a-3", "u3", NOW - 1000 } };
	struct usage_counts add = { 1, 2, 3, 4 };
	struct usage_input in = { NULL, &add, live, 2, ended, 1, NOW };
	json_t *old = json_loadb((const char *)data, size, 0, NULL), *out = NULL, *again = NULL;
	bool changed;
	char *err = NULL;

	if (!old)
		return 0;
	check_rows(old);
	in.old_status = old;
	if (controller_usage_status(&in, &out, &changed, &err) < 0) {
		if (!err || out)
			abort();
		free(err);
		json_decref(old);
		return 0;
	}
	if (int_of(out, "sessionsServed") < int_of(old, "sessionsServed") + 1 ||
	    int_of(out, "bytesDown") < int_of(old, "bytesDown") + 4 ||
	    int_of(out, "retiredBuilderSeconds") < int_of(old, "retiredBuilderSeconds") ||
	    int_of(out, "builderSeconds") < int_of(out, "retiredBuilderSeconds") ||
	    int_of(out, "builders") != 2)
		abort();
	in.old_status = out;
	in.add = NULL;
	if (controller_usage_status(&in, &again, &changed, &err) < 0 || changed ||
	    int_of(again, "retiredBuilderSeconds") != int_of(out, "retiredBuilderSeconds") ||
	    int_of(again, "sessionsServed") != int_of(out, "sessionsServed"))
		abort();
	json_decref(again);
	json_decref(out);
	json_decref(old);
	return 0;
}
