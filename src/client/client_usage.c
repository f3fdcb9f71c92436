#include "client_usage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

void client_usage_format_seconds(int64_t s, char out[32])
{
	if (s < 0)
		s = 0;
	if (s >= 86400)
		snprintf(out, 32, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
	else if (s >= 3600)
		snprintf(out, 32, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
	else if (s >= 60)
		snprintf(out, 32, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
	else
		snprintf(out, 32, "%llds", (long long)s);
}

void client_usage_format_bytes(int64_t b, char out[32])
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)b;
	int u = -1;

	if (b < 1024) {
		snprintf(out, 32, "%lld B", (long long)(b < 0 ? 0 : b));
		return;
	}
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(out, 32, "%.1f %s", v, units[u]);
}

static int field(const json_t *st, const char *name, int64_t *out)
{
	json_t *v = json_object_get(st, name);

	*out = 0;
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (int64_t)json_integer_value(v);
	return 0;
}

/* One NixUsage; NULL when it parses, else which part does not. */
static const char *row_of(const json_t *obj, struct client_usage_row *r)
{
	const json_t *st = json_object_get(obj, "status");
	const char *identity = json_string_value(json_object_get(json_object_get(obj, "spec"),
	    "identity"));
	const char *updated = json_string_value(json_object_get(st, "lastUpdate"));

	memset(r, 0, sizeof(*r));
	if (!identity || !*identity || strlen(identity) >= sizeof(r->identity))
		return "spec.identity";
	if (st && !json_is_object(st))
		return "status";
	snprintf(r->identity, sizeof(r->identity), "%s", identity);
	snprintf(r->updated, sizeof(r->updated), "%s", updated && *updated ? updated : "-");
	if (field(st, "sessionsServed", &r->served) < 0)
		return "status.sessionsServed";
	if (field(st, "sessionsFailed", &r->failed) < 0)
		return "status.sessionsFailed";
	if (field(st, "builders", &r->builders) < 0)
		return "status.builders";
	if (field(st, "builderSeconds", &r->builder_seconds) < 0)
		return "status.builderSeconds";
	if (field(st, "bytesUp", &r->bytes_up) < 0)
		return "status.bytesUp";
	if (field(st, "bytesDown", &r->bytes_down) < 0)
		return "status.bytesDown";
	return NULL;
}

static int by_builder_time(const void *a, const void *b)
{
	const struct client_usage_row *x = a, *y = b;

	if (x->builder_seconds != y->builder_seconds)
		return x->builder_seconds > y->builder_seconds ? -1 : 1;
	return strcmp(x->identity, y->identity);
}

int client_usage_rows(const json_t *list, struct client_usage_row **rows, size_t *n,
    char **warnings, char **err)
{
	json_t *items = json_object_get(list, "items");
	struct buf w;
	size_t i;
	json_t *obj;

	*rows = NULL;
	*n = 0;
	*warnings = NULL;
	if (!json_is_array(items)) {
		*err = str_printf("the API's answer is not a NixUsageList (no items)");
		return -1;
	}
	buf_init(&w, 64 * 1024);
	*rows = calloc(json_array_size(items) + 1, sizeof(**rows));
	if (!*rows)
		goto nomem;
	json_array_foreach(items, i, obj) {
		const char *bad = row_of(obj, &(*rows)[*n]);

		if (!bad) {
			(*n)++;
			continue;
		}
		buf_printf(&w, "NixUsage %s: %s is malformed; left out\n",
		    json_string_value(json_object_get(json_object_get(obj, "metadata"), "name")) ?
		    json_string_value(json_object_get(json_object_get(obj, "metadata"), "name")) :
		    "(no name)", bad);
	}
	qsort(*rows, *n, sizeof(**rows), by_builder_time);
	if (w.len)
		*warnings = buf_steal(&w);
	buf_finish(&w);
	return 0;
nomem:
	buf_finish(&w);
	*err = str_printf("out of memory");
	return -1;
}

char *client_usage_table(const struct client_usage_row *rows, size_t n)
{
	struct buf b;
	int rc;

	buf_init(&b, 16 * 1024 * 1024);
	rc = buf_printf(&b, "%-32s %7s %7s %8s %12s %11s %11s  %s\n", "IDENTITY", "SERVED",
	    "FAILED", "BUILDERS", "BUILDER-TIME", "BYTES-UP", "BYTES-DOWN", "UPDATED");
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char t[32], up[32], down[32];

		client_usage_format_seconds(rows[i].builder_seconds, t);
		client_usage_format_bytes(rows[i].bytes_up, up);
		client_usage_format_bytes(rows[i].bytes_down, down);
		rc = buf_printf(&b, "%-32s %7lld %7lld %8lld %12s %11s %11s  %s\n", rows[i].identity,
		    (long long)rows[i].served, (long long)rows[i].failed, (long long)rows[i].builders,
		    t, up, down, rows[i].updated);
	}
	if (rc < 0) {
		buf_finish(&b);
		return NULL;
	}
	return buf_steal(&b);
}
