#include "controller_usage.h"

#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "controller_builder.h"
#include "json_field.h"
#include "rfc3339.h"

/* Far beyond any builder bound; a status listing more is not ours. */
#define USAGE_MAX_ACTIVE 1024

static const char *const count_fields[] = { "sessionsServed", "sessionsFailed", "bytesUp",
	"bytesDown" };

static int64_t *count_slot(struct usage_counts *c, size_t i)
{
	int64_t *slots[] = { &c->served, &c->failed, &c->bytes_up, &c->bytes_down };

	return slots[i];
}

#define COUNT_FIELDS (sizeof(count_fields) / sizeof(count_fields[0]))

/* Counters stop at INT64_MAX rather than wrap (a hand-written status may
 * start anywhere). Both are non-negative. */
static int64_t sat_add(int64_t a, int64_t b)
{
	return a > INT64_MAX - b ? INT64_MAX : a + b;
}

void usage_counts_add(struct usage_counts *to, const struct usage_counts *d)
{
	to->served = sat_add(to->served, d->served);
	to->failed = sat_add(to->failed, d->failed);
	to->bytes_up = sat_add(to->bytes_up, d->bytes_up);
	to->bytes_down = sat_add(to->bytes_down, d->bytes_down);
}

bool usage_counts_zero(const struct usage_counts *c)
{
	return !c->served && !c->failed && !c->bytes_up && !c->bytes_down;
}

void usage_counts_max(struct usage_counts *to, const struct usage_counts *other)
{
	struct usage_counts o = *other;

	for (size_t i = 0; i < COUNT_FIELDS; i++) {
		if (*count_slot(&o, i) > *count_slot(to, i))
			*count_slot(to, i) = *count_slot(&o, i);
	}
}

/* obj[field]: absent is 0; else a non-negative integer. */
static int parse_nonneg(const json_t *obj, const char *field, int64_t *out, char **err)
{
	json_t *v = json_object_get(obj, field);

	*out = 0;
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		*err = str_printf("status.%s is not a non-negative integer", field);
		return -1;
	}
	*out = (int64_t)json_integer_value(v);
	return 0;
}

int controller_usage_counts_parse(const json_t *obj, struct usage_counts *c, char **err)
{
	memset(c, 0, sizeof(*c));
	if (obj && !json_is_object(obj)) {
		*err = str_printf("the usage status is not an object");
		return -1;
	}
	for (size_t i = 0; i < COUNT_FIELDS; i++) {
		if (parse_nonneg(obj, count_fields[i], count_slot(c, i), err) < 0)
			return -1;
	}
	return 0;
}

json_t *controller_usage_counts_json(const struct usage_counts *c)
{
	return json_pack("{s:I,s:I,s:I,s:I}", "sessionsServed", (json_int_t)c->served,
	    "sessionsFailed", (json_int_t)c->failed, "bytesUp", (json_int_t)c->bytes_up,
	    "bytesDown", (json_int_t)c->bytes_down);
}

json_t *controller_usage_build(const char *ns, const char *identity)
{
	return json_pack("{s:s,s:s,s:{s:s,s:s,s:{s:s,s:s}},s:{s:s}}",
	    "apiVersion", "nix.io/v1alpha1", "kind", "NixUsage",
	    "metadata", "name", identity, "namespace", ns, "labels",
	    "app.kubernetes.io/part-of", "nrbc", CONTROLLER_IDENTITY_LABEL, identity,
	    "spec", "identity", identity);
}

static int64_t request_bytes(const json_t *status, const char *field)
{
	json_t *v = json_object_get(status, field);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (int64_t)json_integer_value(v) :
	    0;
}

void controller_usage_of_request(const json_t *nbr, bool completed, struct usage_counts *c)
{
	const json_t *st = json_object_get(nbr, "status");

	memset(c, 0, sizeof(*c));
	if (completed)
		c->served = 1;
	else
		c->failed = 1;
	c->bytes_up = request_bytes(st, "bytesUp");
	c->bytes_down = request_bytes(st, "bytesDown");
}

long controller_usage_max_builders(const json_t *usage, const json_t *request,
    long flag_default, const char **source)
{
	json_t *v = json_object_get(json_object_get(usage, "spec"), "maxBuilders");

	if (json_is_integer(v) && json_integer_value(v) > 0) {
		*source = "its NixUsage's spec.maxBuilders";
		return (long)json_integer_value(v);
	}
	v = json_object_get(json_object_get(request, "spec"), "maxBuilders");
	if (json_is_integer(v) && json_integer_value(v) > 0) {
		*source = "its authorized_keys option nrbc-max-builders";
		return (long)json_integer_value(v);
	}
	*source = "--quota-max-builders";
	return flag_default > 0 ? flag_default : 0;
}

char *controller_usage_quota_message(long max, size_t have, const char *source)
{
	return str_printf("quota: this key may hold at most %ld builder%s at once (%s) and holds "
	    "%zu, every slot busy: refused until one of its sessions ends", max,
	    max == 1 ? "" : "s", source, have);
}

int64_t controller_usage_last_update(const json_t *status)
{
	return rfc3339_parse_ms(json_string_value(json_object_get(status, "lastUpdate")));
}

/* One entry of status.activeBuilders, checked. */
struct active {
	const char *name;
	const char *uid;
	int64_t since;
	int64_t last_seen;
};

static int parse_active(const json_t *el, size_t i, struct active *a, char **err)
{
	a->name = json_string_value(json_object_get(el, "name"));
	a->uid = json_string_value(json_object_get(el, "uid"));
	a->since = rfc3339_parse_ms(json_string_value(json_object_get(el, "since")));
	a->last_seen = rfc3339_parse_ms(json_string_value(json_object_get(el, "lastSeen")));
	if (!json_is_object(el) || !a->name || !a->uid || a->since < 0 || a->last_seen < 0) {
		*err = str_printf("status.activeBuilders[%zu] needs name, uid, since and lastSeen "
		    "(RFC 3339)", i);
		return -1;
	}
	return 0;
}

static const struct usage_live *find_live(const struct usage_input *in, const struct active *a)
{
	for (size_t i = 0; i < in->n_live; i++) {
		if (strcmp(in->live[i].name, a->name) == 0 && strcmp(in->live[i].uid, a->uid) == 0)
			return &in->live[i];
	}
	return NULL;
}

/* When a builder no longer live ended: as the controller saw it, else its
 * last sighting; never before since nor after now. */
static int64_t end_of(const struct usage_input *in, const struct active *a)
{
	int64_t end = a->last_seen;

	for (size_t i = 0; i < in->n_ended; i++) {
		if (strcmp(in->ended[i].name, a->name) == 0 && strcmp(in->ended[i].uid, a->uid) == 0)
			end = in->ended[i].end_ms;
	}
	if (end > in->now_ms)
		end = in->now_ms;
	return end < a->since ? a->since : end;
}

static json_t *active_json(const char *name, const char *uid, int64_t since, int64_t seen)
{
	char s[32], l[32];

	rfc3339_format_ms(since, s);
	rfc3339_format_ms(seen, l);
	return json_pack("{s:s,s:s,s:s,s:s}", "name", name, "uid", uid, "since", s, "lastSeen", l);
}

static bool listed(const json_t *arr, const char *name, const char *uid)
{
	size_t i;
	json_t *el;

	json_array_foreach(arr, i, el) {
		if (strcmp(json_field_str(el, "name"), name) == 0 &&
		    strcmp(json_field_str(el, "uid"), uid) == 0)
			return true;
	}
	return false;
}

/* The old entries still live (lastSeen now) and the new live builders go to
 * active; the others are retired into *retired (whole seconds). */
static int fold_builders(const struct usage_input *in, const json_t *old_active, json_t *active,
    int64_t *retired, int64_t *live_seconds, bool *changed, char **err)
{
	size_t i;
	json_t *el;

	if (old_active && (!json_is_array(old_active) ||
	    json_array_size(old_active) > USAGE_MAX_ACTIVE)) {
		*err = str_printf("status.activeBuilders is not an array of at most %d entries",
		    USAGE_MAX_ACTIVE);
		return -1;
	}
	json_array_foreach(old_active, i, el) {
		struct active a;

		if (parse_active(el, i, &a, err) < 0)
			return -1;
		if (listed(active, a.name, a.uid)) {
			/* Listed twice (by hand): one builder, counted once. */
			*changed = true;
			continue;
		}
		if (!find_live(in, &a)) {
			*retired = sat_add(*retired, (end_of(in, &a) - a.since) / 1000);
			*changed = true;
			continue;
		}
		if (a.since > in->now_ms)
			a.since = in->now_ms; /* a clock ahead of ours: counted from now */
		if (a.last_seen < in->now_ms)
			a.last_seen = in->now_ms;
		if (json_array_append_new(active, active_json(a.name, a.uid, a.since,
		    a.last_seen)) < 0)
			goto nomem;
		*live_seconds = sat_add(*live_seconds, (a.last_seen - a.since) / 1000);
	}
	for (i = 0; i < in->n_live; i++) {
		const struct usage_live *l = &in->live[i];
		int64_t since = l->since_ms > 0 && l->since_ms <= in->now_ms ? l->since_ms :
		    in->now_ms;

		if (listed(active, l->name, l->uid))
			continue;
		if (json_array_size(active) >= USAGE_MAX_ACTIVE)
			break;
		if (json_array_append_new(active, active_json(l->name, l->uid, since,
		    in->now_ms)) < 0)
			goto nomem;
		*live_seconds = sat_add(*live_seconds, (in->now_ms - since) / 1000);
		*changed = true;
	}
	return 0;
nomem:
	*err = str_printf("out of memory");
	return -1;
}

int controller_usage_status(const struct usage_input *in, json_t **out, bool *changed,
    char **err)
{
	struct usage_counts c;
	int64_t retired = 0, live_seconds = 0;
	json_t *st = NULL, *active = json_array();
	char now[32];

	*out = NULL;
	*changed = false;
	*err = NULL;
	if (!active)
		goto nomem;
	if (controller_usage_counts_parse(in->old_status, &c, err) < 0 ||
	    parse_nonneg(in->old_status, "retiredBuilderSeconds", &retired, err) < 0 ||
	    fold_builders(in, json_object_get(in->old_status, "activeBuilders"), active,
	        &retired, &live_seconds, changed, err) < 0) {
		json_decref(active);
		return -1;
	}
	if (in->add && !usage_counts_zero(in->add)) {
		usage_counts_add(&c, in->add);
		*changed = true;
	}
	if (!in->old_status)
		*changed = true;
	rfc3339_format_ms(in->now_ms, now);
	st = controller_usage_counts_json(&c);
	if (!st || json_object_set_new(st, "builders",
	    json_integer((json_int_t)json_array_size(active))) < 0)
		goto nomem;
	/* st owns active from here on, whatever the call says. */
	if (json_object_set_new(st, "activeBuilders", active) < 0) {
		active = NULL;
		goto nomem;
	}
	active = NULL;
	if (json_object_set_new(st, "builderSeconds", json_integer(sat_add(retired, live_seconds))) < 0 ||
	    json_object_set_new(st, "retiredBuilderSeconds", json_integer(retired)) < 0 ||
	    json_object_set_new(st, "lastUpdate", json_string(now)) < 0)
		goto nomem;
	*out = st;
	return 0;
nomem:
	json_decref(active);
	json_decref(st);
	*err = str_printf("out of memory");
	return -1;
}
