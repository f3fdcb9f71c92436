#include "controller_usage_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller_builder.h"
#include "json_field.h"

enum usage_series {
	SERIES_SERVED,
	SERIES_FAILED,
	SERIES_BUILDER_SECONDS,
	SERIES_BYTES_UP,
	SERIES_BYTES_DOWN,
	SERIES_BUILDERS,
	SERIES_COUNT,
};

/* status field of each series */
static const char *const series_field[SERIES_COUNT] = {
	[SERIES_SERVED] = "sessionsServed",
	[SERIES_FAILED] = "sessionsFailed",
	[SERIES_BUILDER_SECONDS] = "builderSeconds",
	[SERIES_BYTES_UP] = "bytesUp",
	[SERIES_BYTES_DOWN] = "bytesDown",
	[SERIES_BUILDERS] = "builders",
};

struct label_slot {
	char identity[CONTROLLER_IDENTITY_MAX + 1];
	struct metric *m[SERIES_COUNT];
	double builders_of_others; /* "other": the builders gauge is a sum */
};

struct usage_metrics {
	struct metrics *reg;
	size_t max;
	size_t n;
	struct label_slot *slots; /* max of them, then "other" */
	size_t unlabelled;        /* identities in "other" (distinct, as seen) */
	struct metric *identities_labelled;
	struct metric *identities_unlabelled;
};

static int slot_init(struct usage_metrics *u, struct label_slot *s, const char *identity)
{
	char l[160];

	snprintf(s->identity, sizeof(s->identity), "%s", identity);
	snprintf(l, sizeof(l), "identity=\"%s\",outcome=\"served\"", identity);
	s->m[SERIES_SERVED] = metrics_counter(u->reg, "nrbc_usage_sessions_total",
	    "Sessions of each identity that ended, by outcome (from its NixUsage).", l);
	snprintf(l, sizeof(l), "identity=\"%s\",outcome=\"failed\"", identity);
	s->m[SERIES_FAILED] = metrics_counter(u->reg, "nrbc_usage_sessions_total",
	    "Sessions of each identity that ended, by outcome (from its NixUsage).", l);
	snprintf(l, sizeof(l), "identity=\"%s\"", identity);
	s->m[SERIES_BUILDER_SECONDS] = metrics_counter(u->reg, "nrbc_usage_builder_seconds_total",
	    "Seconds each identity's builders existed (from its NixUsage).", l);
	s->m[SERIES_BUILDERS] = metrics_gauge(u->reg, "nrbc_usage_builders",
	    "Each identity's NixBuilders now (from its NixUsage).", l);
	snprintf(l, sizeof(l), "identity=\"%s\",direction=\"up\"", identity);
	s->m[SERIES_BYTES_UP] = metrics_counter(u->reg, "nrbc_usage_bytes_total",
	    "Payload bytes through the proxy for each identity, by direction.", l);
	snprintf(l, sizeof(l), "identity=\"%s\",direction=\"down\"", identity);
	s->m[SERIES_BYTES_DOWN] = metrics_counter(u->reg, "nrbc_usage_bytes_total",
	    "Payload bytes through the proxy for each identity, by direction.", l);
	for (int i = 0; i < SERIES_COUNT; i++) {
		if (!s->m[i])
			return -1;
	}
	return 0;
}

struct usage_metrics *usage_metrics_create(struct metrics *reg, size_t max_identities)
{
	struct usage_metrics *u = calloc(1, sizeof(*u));

	if (!u)
		return NULL;
	u->reg = reg;
	u->max = max_identities;
	u->slots = calloc(max_identities + 1, sizeof(*u->slots));
	u->identities_labelled = metrics_gauge(reg, "nrbc_usage_identities",
	    "Identities with a NixUsage, by whether they have series of their own (the rest "
	    "are in identity=\"other\").", "labelled=\"true\"");
	u->identities_unlabelled = metrics_gauge(reg, "nrbc_usage_identities",
	    "Identities with a NixUsage, by whether they have series of their own (the rest "
	    "are in identity=\"other\").", "labelled=\"false\"");
	if (!u->slots || !u->identities_labelled || !u->identities_unlabelled ||
	    slot_init(u, &u->slots[max_identities], USAGE_METRICS_OTHER) < 0) {
		usage_metrics_destroy(u);
		return NULL;
	}
	return u;
}

void usage_metrics_destroy(struct usage_metrics *u)
{
	if (!u)
		return;
	free(u->slots);
	free(u);
}

/* The identity's slot; a new one while there is room, else "other". */
static struct label_slot *slot_of(struct usage_metrics *u, const char *identity, bool *other)
{
	*other = false;
	for (size_t i = 0; i < u->n; i++) {
		if (strcmp(u->slots[i].identity, identity) == 0)
			return &u->slots[i];
	}
	if (u->n < u->max && slot_init(u, &u->slots[u->n], identity) == 0) {
		metric_set(u->identities_labelled, (double)++u->n);
		return &u->slots[u->n - 1];
	}
	*other = true;
	return &u->slots[u->max];
}

static double value(const json_t *obj, const char *field)
{
	json_t *v = json_object_get(json_object_get(obj, "status"), field);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (double)json_integer_value(v) : 0;
}

void usage_metrics_update(struct usage_metrics *u, const json_t *old_obj, const json_t *new_obj)
{
	const json_t *obj = new_obj ? new_obj : old_obj;
	const char *identity = json_string_value(json_object_get(json_object_get(obj, "spec"),
	    "identity"));
	struct label_slot *s;
	bool other;

	if (!u || !identity || !controller_builder_identity_valid(identity))
		return;
	s = slot_of(u, identity, &other);
	if (other && !old_obj && new_obj)
		metric_set(u->identities_unlabelled, (double)++u->unlabelled);
	if (other && old_obj && !new_obj && u->unlabelled > 0)
		metric_set(u->identities_unlabelled, (double)--u->unlabelled);
	for (int i = 0; i < SERIES_COUNT; i++) {
		double before = old_obj ? value(old_obj, series_field[i]) : 0;
		double after = new_obj ? value(new_obj, series_field[i]) : 0;

		if (i == SERIES_BUILDERS) {
			if (other) {
				s->builders_of_others += after - before;
				metric_set(s->m[i], s->builders_of_others);
			} else {
				metric_set(s->m[i], after);
			}
			continue;
		}
		/* Counters: a delete (or a status that shrank) takes nothing back. */
		if (new_obj && after > before)
			metric_add(s->m[i], after - before);
	}
}
