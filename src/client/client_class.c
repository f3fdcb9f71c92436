#include "client_class.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "csv_list.h"
#include "dns_label.h"
#include "json_field.h"

/* Warnings name at most this much of a name they quote. */
#define CLIENT_CLASS_NAME_SHOWN 64

static void class_finish(struct client_class *c)
{
	free(c->name);
	free(c->systems);
	free(c->supported);
	free(c->mandatory);
	memset(c, 0, sizeof(*c));
}

void client_class_list_finish(struct client_class_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		class_finish(&l->items[i]);
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

long client_class_max_jobs(const struct client_class *c)
{
	return c->slots * c->per_key;
}

long client_class_list_max_jobs(const struct client_class_list *l)
{
	long sum = 0;

	for (size_t i = 0; i < l->n; i++)
		sum += client_class_max_jobs(&l->items[i]);
	return sum;
}

char *client_class_features(const struct client_class *c)
{
	const char *m = c->mandatory;
	struct buf b;

	buf_init(&b, 1 << 16);
	if (buf_append_str(&b, c->supported) < 0)
		goto nomem;
	while (*m) {
		size_t n = strcspn(m, ",");

		if (n && !csv_list_has(c->supported, m, n) &&
		    buf_printf(&b, "%s%.*s", b.len ? "," : "", (int)n, m) < 0)
			goto nomem;
		m += n;
		if (*m == ',')
			m++;
	}
	return buf_steal(&b);
nomem:
	buf_finish(&b);
	return NULL;
}

/* The CRD's patterns: systems ^[a-z0-9_]+-[a-z0-9_]+$, features
 * ^[A-Za-z0-9_.+-]+$. Neither lets a space, comma, quote or `$` through
 * into a builders line or a Nix string. */
static bool is_system(const char *s)
{
	size_t a = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_");

	return a > 0 && s[a] == '-' && s[a + 1] &&
	    strspn(s + a + 1, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(s + a + 1);
}

static bool is_feature(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789_.+-") == n;
}

/* A name safe to quote in a warning, cut and with odd bytes as '?'. */
static void shown_name(const char *name, char out[CLIENT_CLASS_NAME_SHOWN + 1])
{
	size_t i;

	for (i = 0; name[i] && i < CLIENT_CLASS_NAME_SHOWN; i++)
		out[i] = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789-_.", name[i]) ? name[i] : '?';
	out[i] = '\0';
}

enum field_result { FIELD_OK, FIELD_BAD, FIELD_NOMEM };

/* spec[key], an array of at most max strings that pass valid, joined by
 * ",". Absent or empty: def. */
static enum field_result field_list(const json_t *spec, const char *key, size_t max,
    bool (*valid)(const char *), const char *def, char **out)
{
	json_t *arr = json_object_get(spec, key), *v;
	struct buf b;
	size_t i;

	*out = NULL;
	if (arr && (!json_is_array(arr) || json_array_size(arr) > max))
		return FIELD_BAD;
	buf_init(&b, 1 << 16);
	json_array_foreach(arr, i, v) {
		if (!json_is_string(v) || !valid(json_string_value(v))) {
			buf_finish(&b);
			return FIELD_BAD;
		}
		if (buf_printf(&b, "%s%s", i ? "," : "", json_string_value(v)) < 0) {
			buf_finish(&b);
			return FIELD_NOMEM;
		}
	}
	if (b.len == 0 && buf_append_str(&b, def) < 0) {
		buf_finish(&b);
		return FIELD_NOMEM;
	}
	*out = buf_steal(&b);
	return *out ? FIELD_OK : FIELD_NOMEM;
}

/* spec[key], an integer in [min, max]; absent (or equal to zero_means_def
 * when that is set): def. */
static enum field_result field_long(const json_t *spec, const char *key, long min, long max,
    bool zero_means_def, long def, long *out)
{
	json_t *v = json_object_get(spec, key);
	json_int_t i;

	*out = def;
	if (!v)
		return FIELD_OK;
	if (!json_is_integer(v))
		return FIELD_BAD;
	i = json_integer_value(v);
	if (i == 0 && zero_means_def)
		return FIELD_OK;
	if (i < min || i > max)
		return FIELD_BAD;
	*out = (long)i;
	return FIELD_OK;
}

/* One item of the list into c: FIELD_BAD with *why saying what is wrong. */
static enum field_result class_from_item(const json_t *item, const char *name,
    const struct client_class_defaults *d, struct client_class *c, const char **why)
{
	const json_t *spec = json_object_get(item, "spec");
	enum field_result r;

	memset(c, 0, sizeof(*c));
	*why = "";
	if (spec && !json_is_object(spec)) {
		*why = "spec is not an object";
		return FIELD_BAD;
	}
	if ((r = field_list(spec, "systems", 16, is_system, "x86_64-linux", &c->systems)) !=
	    FIELD_OK)
		*why = "spec.systems is not a list of Nix systems";
	else if ((r = field_list(spec, "supportedFeatures", 32, is_feature, "",
	    &c->supported)) != FIELD_OK)
		*why = "spec.supportedFeatures is not a list of feature names";
	else if ((r = field_list(spec, "mandatoryFeatures", 32, is_feature, "",
	    &c->mandatory)) != FIELD_OK)
		*why = "spec.mandatoryFeatures is not a list of feature names";
	else if ((r = field_long(spec, "speedFactor", 1, 1000, false, 1, &c->speed_factor)) !=
	    FIELD_OK)
		*why = "spec.speedFactor is not an integer 1..1000";
	else if ((r = field_long(spec, "slots", 1, 256, false, d->slots, &c->slots)) != FIELD_OK)
		*why = "spec.slots is not an integer 1..256";
	else if ((r = field_long(spec, "maxBuildersPerIdentity", 1, 1000, true, d->per_key,
	    &c->per_key)) != FIELD_OK)
		*why = "spec.maxBuildersPerIdentity is not an integer 0..1000";
	else if (!(c->name = strdup(name)))
		r = FIELD_NOMEM;
	if (r != FIELD_OK)
		class_finish(c);
	return r;
}

static bool list_has(const struct client_class_list *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->items[i].name, name) == 0)
			return true;
	return false;
}

/* Parses one item into l, or says in w why it is skipped. */
static int parse_item(const json_t *item, size_t index, const struct client_class_defaults *d,
    struct client_class_list *l, struct buf *w)
{
	const char *name = json_field_str(json_object_get(item, "metadata"), "name"), *why;
	char shown[CLIENT_CLASS_NAME_SHOWN + 1];
	enum field_result r;

	shown_name(name, shown);
	if (!dns_label_valid(name, strlen(name)))
		return buf_printf(w, "NixBuilderClass %zu \"%s\" skipped: its name is not a DNS "
		    "label (a-z, 0-9, '-'; 1 to 63)\n", index, shown);
	if (strcmp(name, d->user) == 0)
		return buf_printf(w, "NixBuilderClass %s skipped: %s is the default class's user, "
		    "which always means the default class\n", shown, d->user);
	if (list_has(l, name))
		return buf_printf(w, "NixBuilderClass %s skipped: listed twice\n", shown);
	r = class_from_item(item, name, d, &l->items[l->n], &why);
	if (r == FIELD_NOMEM)
		return -1;
	if (r == FIELD_BAD)
		return buf_printf(w, "NixBuilderClass %s skipped: %s\n", shown, why);
	l->n++;
	return 0;
}

int client_class_list_parse(const json_t *list, const struct client_class_defaults *d,
    struct client_class_list *out, char **warnings)
{
	json_t *items = json_object_get(list, "items"), *item;
	struct client_class_list l = { NULL, 0 };
	struct buf w;
	size_t i, count;

	*warnings = NULL;
	out->items = NULL;
	out->n = 0;
	buf_init(&w, 1 << 20);
	if (!json_is_array(items)) {
		if (buf_append_str(&w, "the NixBuilderClass list is not a list object: no classes\n")
		    < 0)
			goto nomem;
		*warnings = buf_steal(&w);
		return *warnings ? 0 : -1;
	}
	count = json_array_size(items);
	/* Only the first CLIENT_CLASS_MAX items are read: bounded work and
	 * warnings whatever the list holds (client_cluster asks for one more,
	 * to know there are more). */
	if (count > CLIENT_CLASS_MAX) {
		if (buf_printf(&w, "more than %d NixBuilderClasses: only the first %d are used\n",
		    CLIENT_CLASS_MAX, CLIENT_CLASS_MAX) < 0)
			goto nomem;
		count = CLIENT_CLASS_MAX;
	}
	if (count && !(l.items = calloc(count, sizeof(*l.items))))
		goto nomem;
	for (i = 0; i < count; i++) {
		item = json_array_get(items, i);
		if (parse_item(item, i, d, &l, &w) < 0)
			goto nomem;
	}
	if (w.len && !(*warnings = buf_steal(&w)))
		goto nomem;
	buf_finish(&w);
	*out = l;
	return 0;
nomem:
	buf_finish(&w);
	client_class_list_finish(&l);
	*warnings = NULL;
	return -1;
}

int client_class_list_add_default(struct client_class_list *l,
    const struct client_class_defaults *d, const char *systems, const char *features)
{
	struct client_class c = { strdup(d->user), strdup(systems), strdup(features ? features : ""),
		strdup(""), 1, d->slots, d->per_key };
	struct client_class *items;

	if (!c.name || !c.systems || !c.supported || !c.mandatory)
		goto nomem;
	items = realloc(l->items, (l->n + 1) * sizeof(*items));
	if (!items)
		goto nomem;
	memmove(items + 1, items, l->n * sizeof(*items));
	items[0] = c;
	l->items = items;
	l->n++;
	return 0;
nomem:
	class_finish(&c);
	return -1;
}

/* "nixbld, big, arm" for an error message. */
static char *list_names(const struct client_class_list *l)
{
	struct buf b;

	buf_init(&b, 1 << 16);
	if (buf_append(&b, "", 0) < 0)
		return NULL;
	for (size_t i = 0; i < l->n; i++)
		if (buf_printf(&b, "%s%s", i ? ", " : "", l->items[i].name) < 0) {
			buf_finish(&b);
			return NULL;
		}
	return buf_steal(&b);
}

static char *unknown_class(const struct client_class_list *l, const char *name, size_t len)
{
	char *names = list_names(l), *err;

	if (len == 0)
		err = str_printf("--classes: an empty class name (the classes are: %s)",
		    names ? names : "?");
	else
		err = str_printf("--classes: no class \"%.*s\" (the classes are: %s)",
		    (int)(len > CLIENT_CLASS_NAME_SHOWN ? CLIENT_CLASS_NAME_SHOWN : len), name,
		    names ? names : "?");
	free(names);
	return err ? err : strdup("out of memory");
}

int client_class_list_select(struct client_class_list *l, const char *names, char **err)
{
	bool *keep;
	const char *p = names;
	size_t kept = 0;

	if (!names)
		return 0;
	keep = calloc(l->n + 1, sizeof(*keep));
	if (!keep) {
		*err = strdup("out of memory");
		return -1;
	}
	for (;;) {
		size_t n = strcspn(p, ","), i;

		for (i = 0; i < l->n; i++)
			if (strlen(l->items[i].name) == n && strncmp(l->items[i].name, p, n) == 0)
				break;
		if (i == l->n) {
			*err = unknown_class(l, p, n);
			free(keep);
			return -1;
		}
		keep[i] = true;
		p += n;
		if (!*p)
			break;
		p++;
	}
	for (size_t i = 0; i < l->n; i++) {
		if (keep[i])
			l->items[kept++] = l->items[i];
		else
			class_finish(&l->items[i]);
	}
	l->n = kept;
	free(keep);
	return 0;
}
