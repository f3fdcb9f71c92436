#include "proxy_secret.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "buf.h"
#include "kube/kube_client.h"

/* Decodes data[key] into *out; absent keys leave *out NULL. */
static int secret_entry(json_t *data, const char *key, char **out, char **err)
{
	json_t *v = json_object_get(data, key);
	const char *s;
	size_t len;

	*out = NULL;
	if (!v)
		return 0;
	s = json_string_value(v);
	if (!s || !(*out = base64_decode(s, strlen(s), &len))) {
		*err = str_printf("Secret key \"%s\" is not valid base64", key);
		return -1;
	}
	if (strlen(*out) != len) {
		free(*out);
		*out = NULL;
		*err = str_printf("Secret key \"%s\" holds binary data, not a key", key);
		return -1;
	}
	return 0;
}

int proxy_secret_decode(const void *secret_json, struct proxy_key_texts *out, char **err)
{
	json_t *data = json_object_get((const json_t *)secret_json, "data");

	memset(out, 0, sizeof(*out));
	if (!json_is_object(data)) {
		*err = str_printf("Secret has no data");
		return -1;
	}
	if (secret_entry(data, "host-key", &out->host_key, err) < 0 ||
	    secret_entry(data, "authorized-keys", &out->authorized_keys, err) < 0 ||
	    secret_entry(data, "private", &out->private_key, err) < 0 ||
	    secret_entry(data, "public", &out->public_key, err) < 0)
		goto bad;
	if (!out->private_key) {
		*err = str_printf("Secret has no \"private\" key (the key the proxy uses towards builders)");
		goto bad;
	}
	return 0;
bad:
	proxy_key_texts_finish(out);
	return -1;
}

void proxy_key_texts_finish(struct proxy_key_texts *t)
{
	free(t->host_key);
	free(t->authorized_keys);
	free(t->private_key);
	free(t->public_key);
	memset(t, 0, sizeof(*t));
}

struct secret_fetch {
	bool done;
	int rc;
	struct proxy_key_texts *out;
	char *err;
};

static void secret_on_response(const struct kube_response *resp, void *data)
{
	struct secret_fetch *f = data;

	f->done = true;
	if (resp->status != 200) {
		f->err = str_printf("HTTP %ld %s: %s", resp->status, resp->reason, resp->message);
		f->rc = -1;
		return;
	}
	f->rc = proxy_secret_decode(resp->body, f->out, &f->err);
}

int proxy_secret_load(uv_loop_t *loop, struct kube_client *client, const char *ns,
    const char *name, struct proxy_key_texts *out, char **err)
{
	struct secret_fetch f = { .out = out };
	uint64_t id;

	memset(out, 0, sizeof(*out));
	id = kube_get(client, &kube_resource_secrets, ns, name, secret_on_response, &f);
	if (!id) {
		*err = str_printf("cannot read Secret %s/%s: request failed to start", ns, name);
		return -1;
	}
	while (!f.done && uv_run(loop, UV_RUN_ONCE))
		;
	if (!f.done) {
		kube_client_cancel(client, id);
		f.err = str_printf("no answer");
		f.rc = -1;
	}
	if (f.rc < 0) {
		*err = str_printf("cannot read Secret %s/%s: %s", ns, name, f.err ? f.err : "?");
		free(f.err);
		return -1;
	}
	return 0;
}
