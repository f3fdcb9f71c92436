#include "proxy_siblings.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_field.h"
#include "kube/kube_client.h"
#include "kube/kube_informer.h"
#include "log.h"

struct proxy_siblings {
	struct kube_informer *informer;
	int port;
};

/* What one scan over the builders looks for: first the builder with the
 * key (its identity), then the oldest other Running one of that identity. */
struct sibling_scan {
	const char *key_line;
	json_t *self;   /* a reference, when it could be its own target */
	char identity[64];
	char self_name[64];
	json_t *target; /* a reference */
	const char *why;
};

/* "type base64" of a.b equal to key_line's, whatever follows (a comment). */
static int same_key(const char *a, const char *key_line)
{
	size_t type = strcspn(a, " "), blob;

	if (!a[type] || strncmp(a, key_line, type + 1) != 0)
		return 0;
	blob = strcspn(a + type + 1, " \n");
	return blob > 0 && strncmp(a + type + 1, key_line + type + 1, blob) == 0 &&
	    (key_line[type + 1 + blob] == '\0' || key_line[type + 1 + blob] == ' ');
}

static const char *builder_identity(const json_t *b)
{
	return json_field_str(json_object_get(b, "spec"), "identity");
}

/* Running, reachable, its host key known, not going. */
static bool usable_target(const json_t *b)
{
	const json_t *st = json_object_get(b, "status");

	return strcmp(json_field_str(st, "phase"), "Running") == 0 &&
	    *json_field_str(st, "podIP") && *json_field_str(st, "hostKey") &&
	    !json_object_get(json_object_get(b, "metadata"), "deletionTimestamp");
}

static void scan_self(json_t *b, void *data)
{
	struct sibling_scan *sc = data;
	const char *key = json_field_str(json_object_get(b, "status"), "hostKey");

	if (sc->identity[0] || !*key || !same_key(key, sc->key_line))
		return;
	if (!*builder_identity(b)) {
		sc->why = "this builder belongs to no client key yet";
		return;
	}
	snprintf(sc->identity, sizeof(sc->identity), "%s", builder_identity(b));
	snprintf(sc->self_name, sizeof(sc->self_name), "%s", kube_object_name(b));
	if (usable_target(b))
		sc->self = json_incref(b);
}

static const char *created(const json_t *b)
{
	return json_field_str(json_object_get(b, "metadata"), "creationTimestamp");
}

static void scan_target(json_t *b, void *data)
{
	struct sibling_scan *sc = data;

	if (strcmp(builder_identity(b), sc->identity) != 0 ||
	    strcmp(kube_object_name(b), sc->self_name) == 0 || !usable_target(b))
		return;
	if (sc->target && strcmp(created(b), created(sc->target)) >= 0)
		return;
	json_decref(sc->target);
	sc->target = json_incref(b);
}

static int scan_result(struct sibling_scan *sc, int port, struct proxy_sibling *out,
    const char **why)
{
	const json_t *st;

	memset(out, 0, sizeof(*out));
	/* A key's only builder is its own sibling: asked for what it lacks,
	 * it has none of it, and says so (an error would be printed on the
	 * client's terminal for every lookup). */
	if (!sc->target && sc->self)
		sc->target = json_incref((json_t *)sc->self);
	if (!sc->target) {
		json_decref(sc->self);
		sc->self = NULL;
		*why = "this builder is not Running";
		return -1;
	}
	st = json_object_get(sc->target, "status");
	snprintf(out->identity, sizeof(out->identity), "%s", sc->identity);
	snprintf(out->source, sizeof(out->source), "%s", sc->self_name);
	snprintf(out->name, sizeof(out->name), "%s", kube_object_name(sc->target));
	snprintf(out->host, sizeof(out->host), "%s", json_field_str(st, "podIP"));
	out->port = port;
	out->host_key = strdup(json_field_str(st, "hostKey"));
	json_decref(sc->target);
	sc->target = NULL;
	json_decref(sc->self);
	sc->self = NULL;
	if (!out->host_key) {
		*why = "out of memory";
		return -1;
	}
	return 0;
}

int proxy_siblings_pick(const json_t *builders, const char *key_line, int port,
    struct proxy_sibling *out, const char **why)
{
	struct sibling_scan sc = { .key_line = key_line, .why = "not the host key of a builder" };
	size_t i;
	json_t *b;

	json_array_foreach(builders, i, b)
		scan_self(b, &sc);
	if (!sc.identity[0]) {
		*why = sc.why;
		memset(out, 0, sizeof(*out));
		return -1;
	}
	json_array_foreach(builders, i, b)
		scan_target(b, &sc);
	return scan_result(&sc, port, out, why);
}

int proxy_siblings_find(const struct proxy_siblings *s, const char *key_line,
    struct proxy_sibling *out, const char **why)
{
	struct sibling_scan sc = { .key_line = key_line, .why = "not the host key of a builder" };

	memset(out, 0, sizeof(*out));
	if (!kube_informer_synced(s->informer)) {
		*why = "the proxy does not know the builders yet";
		return -1;
	}
	kube_informer_foreach(s->informer, scan_self, &sc);
	if (!sc.identity[0]) {
		*why = sc.why;
		return -1;
	}
	kube_informer_foreach(s->informer, scan_target, &sc);
	return scan_result(&sc, s->port, out, why);
}

/* Only what a lookup reads: a NixBuilder is mostly its status conditions. */
static json_t *slim_builder(json_t *obj, void *data)
{
	const json_t *meta = json_object_get(obj, "metadata"), *st = json_object_get(obj, "status");
	json_t *out;

	(void)data;
	out = json_pack("{s:{s:s,s:s,s:s,s:s},s:{s:s},s:{s:s,s:s,s:s}}",
	    "metadata", "name", json_field_str(meta, "name"),
	    "namespace", json_field_str(meta, "namespace"),
	    "resourceVersion", json_field_str(meta, "resourceVersion"),
	    "creationTimestamp", json_field_str(meta, "creationTimestamp"),
	    "spec", "identity", builder_identity(obj),
	    "status", "phase", json_field_str(st, "phase"), "podIP", json_field_str(st, "podIP"),
	    "hostKey", json_field_str(st, "hostKey"));
	if (out && json_object_get(meta, "deletionTimestamp"))
		json_object_set(json_object_get(out, "metadata"), "deletionTimestamp",
		    json_object_get(meta, "deletionTimestamp"));
	return out;
}

struct proxy_siblings *proxy_siblings_create(struct kube_client *client, const char *ns,
    int port)
{
	static const struct kube_informer_handlers handlers = { .transform = slim_builder };
	struct proxy_siblings *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->port = port;
	s->informer = kube_informer_create(client, &kube_resource_nixbuilders, ns, NULL,
	    &handlers, s);
	if (!s->informer || kube_informer_start(s->informer) < 0) {
		proxy_siblings_destroy(s);
		return NULL;
	}
	return s;
}

void proxy_siblings_destroy(struct proxy_siblings *s)
{
	if (!s)
		return;
	kube_informer_destroy(s->informer);
	free(s);
}
