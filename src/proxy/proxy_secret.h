/* The proxy's key material from the SSH key Secret. */
#ifndef NRBC_PROXY_SECRET_H
#define NRBC_PROXY_SECRET_H

#include <uv.h>

struct kube_client;

/* Decoded Secret entries; NULL when the key is absent. */
struct proxy_key_texts {
	char *host_key;        /* "host-key": the proxy's and the builders' host key */
	char *authorized_keys; /* "authorized-keys": client keys allowed in */
	char *private_key;     /* "private": the key the proxy uses towards builders */
	char *public_key;      /* "public": its public half */
};

/* Fetches the Secret once, at start-up, running the loop until it answers
 * (nothing else is served yet). 0, or -1 with *err set (heap). */
int proxy_secret_load(uv_loop_t *loop, struct kube_client *client, const char *ns,
    const char *name, struct proxy_key_texts *out, char **err);
/* Fills out from a Secret object (pure; for tests). */
int proxy_secret_decode(const void *secret_json, struct proxy_key_texts *out, char **err);
void proxy_key_texts_finish(struct proxy_key_texts *t);

#endif
