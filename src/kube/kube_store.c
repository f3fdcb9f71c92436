#include "kube_store.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

struct kube_store {
	json_t *texts; /* key -> JSON string holding the object's compact text */
	json_t *loans; /* objects handed out since the last release */
	size_t text_bytes;
};

struct kube_store *kube_store_create(void)
{
	struct kube_store *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->texts = json_object();
	s->loans = json_array();
	if (!s->texts || !s->loans) {
		kube_store_destroy(s);
		return NULL;
	}
	return s;
}

void kube_store_destroy(struct kube_store *s)
{
	if (!s)
		return;
	json_decref(s->texts);
	json_decref(s->loans);
	free(s);
}

static size_t text_len(const json_t *text)
{
	return text ? json_string_length(text) : 0;
}

int kube_store_put(struct kube_store *s, const char *key, const json_t *obj)
{
	char *dump = json_dumps(obj, JSON_COMPACT);
	json_t *text;
	size_t old;

	if (!dump)
		return -1;
	text = json_string_nocheck(dump);
	free(dump);
	if (!text)
		return -1;
	old = text_len(json_object_get(s->texts, key));
	if (json_object_set_new(s->texts, key, text) < 0)
		return -1;
	s->text_bytes += json_string_length(text) - old;
	return 0;
}

static json_t *parse(const char *key, const json_t *text)
{
	json_error_t err;
	json_t *obj = json_loadb(json_string_value(text), json_string_length(text), 0, &err);

	if (!obj)
		log_error("kube: cached %s does not parse (%s); treating it as absent", key,
		    err.text);
	return obj;
}

json_t *kube_store_get(struct kube_store *s, const char *key)
{
	const json_t *text = json_object_get(s->texts, key);
	json_t *obj;

	if (!text || !(obj = parse(key, text)))
		return NULL;
	if (json_array_append_new(s->loans, obj) < 0)
		return NULL; /* freed by the failed append */
	return obj;
}

bool kube_store_has(const struct kube_store *s, const char *key)
{
	return json_object_get(s->texts, key) != NULL;
}

void kube_store_del(struct kube_store *s, const char *key)
{
	s->text_bytes -= text_len(json_object_get(s->texts, key));
	json_object_del(s->texts, key);
}

size_t kube_store_size(const struct kube_store *s)
{
	return json_object_size(s->texts);
}

size_t kube_store_text_bytes(const struct kube_store *s)
{
	return s->text_bytes;
}

void kube_store_foreach(struct kube_store *s,
    bool (*fn)(const char *key, json_t *obj, void *data), void *data)
{
	const char *key;
	json_t *text, *obj;
	bool more;

	json_object_foreach(s->texts, key, text) {
		obj = parse(key, text);
		if (!obj)
			continue;
		more = fn(key, obj, data);
		json_decref(obj);
		if (!more)
			break;
	}
}

void kube_store_release(struct kube_store *s)
{
	if (json_array_size(s->loans))
		json_array_clear(s->loans);
}
