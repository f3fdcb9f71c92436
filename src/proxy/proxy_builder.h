/* Where a session's builder comes from. The proxy asks for a builder per
 * session id and is told, asynchronously and by id, that it is ready (an
 * address to connect to), failed, or still on its way (progress text the
 * Nix user sees on stderr). Backends: a fixed address (tests, benchmarks,
 * one static builder) and Kubernetes (a NixBuildRequest per session). */
#ifndef NRBC_PROXY_BUILDER_H
#define NRBC_PROXY_BUILDER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct kube_client;
struct metrics;

/* Never called from inside proxy_builder_acquire/release: always later,
 * from the loop, so the session may be gone; look it up by id. */
struct proxy_builder_events {
	void (*progress)(uint64_t session_id, const char *message, void *data);
	/* name: what the user is told the builder is (its pod, or address).
	 * host_key: the one host key ("type base64") this builder may present,
	 * or NULL when the backend knows none (then the shared builder host
	 * key). */
	void (*ready)(uint64_t session_id, const char *host, int port, const char *name,
	    const char *host_key, void *data);
	void (*failed)(uint64_t session_id, const char *message, void *data);
};

struct proxy_builder;

/* Where a builder that logged in as a sibling (proxy_siblings.h) goes. */
struct proxy_sibling {
	char identity[64];
	char source[64]; /* the NixBuilder that logged in */
	char name[64];   /* the NixBuilder it is bridged to */
	char host[64];
	int port;
	char *host_key;  /* the target's "type base64", heap */
};
void proxy_sibling_finish(struct proxy_sibling *s);

/* Every session gets host:port at once (on the next loop turn). */
struct proxy_builder *proxy_builder_static_create(uv_loop_t *loop, const char *host, int port,
    const struct proxy_builder_events *events, void *data);

struct proxy_builder_kube_options {
	const char *namespace;
	const char *proxy_id;      /* label value that marks this proxy's requests */
	const char *owner_pod;     /* POD_NAME for the ownerReference, or NULL */
	const char *owner_uid;     /* POD_UID, or NULL */
	const char *image;         /* spec.image, or NULL for the controller default */
	long timeout_seconds;      /* spec.timeoutSeconds, 0 for none */
	uint64_t sweep_interval_ms; /* sweep for unheld requests this often; 0: at start only */
	struct metrics *metrics;   /* or NULL; must outlive the backend */
	int remote_port;           /* port on the pod's IP */
};
struct proxy_builder *proxy_builder_kube_create(uv_loop_t *loop, struct kube_client *client,
    const struct proxy_builder_kube_options *opts, const struct proxy_builder_events *events,
    void *data);

/* What a session asks a builder for. */
struct proxy_builder_want {
	/* The client identity (a hash of the key it logged in with: builders
	 * are reused across the sessions of one identity and never shared
	 * between two). */
	const char *identity;
	/* "" for the default class; else the user name the client logged in as. */
	const char *builder_class;
	/* The key's own builder quota (nrbc-max-builders=); 0: the controller's. */
	long max_builders;
};

/* Starts getting a builder as want says for session_id; 0, or -1 when it
 * cannot start (no event follows then). */
int proxy_builder_acquire(struct proxy_builder *b, uint64_t session_id,
    const struct proxy_builder_want *want);
/* The session is over (or gave up waiting): ok tells Completed from Failed,
 * message says why, bytes_up and bytes_down are the payload it moved each
 * way (recorded for the identity's usage). No event for session_id follows. */
void proxy_builder_release(struct proxy_builder *b, uint64_t session_id, bool ok,
    const char *message, uint64_t bytes_up, uint64_t bytes_down);
/* Whether everything the backend still had to tell the cluster (the ends
 * of finished sessions' requests: status, delete) has landed. If not,
 * done(data) follows from the loop once it has (never from inside this
 * call, nor from inside a reply: done may destroy the backend);
 * proxy_builder_destroy before then gives up on what is left. */
bool proxy_builder_flush(struct proxy_builder *b, void (*done)(void *data), void *data);
/* The builder whose host key is key_line ("type base64") and a Running
 * builder of the same identity to bridge it to. 0 with *out filled
 * (proxy_sibling_finish), or -1 with *why (static text): a backend without
 * builders of its own has no siblings. */
int proxy_builder_sibling(struct proxy_builder *b, const char *key_line,
    struct proxy_sibling *out, const char **why);
/* False until the backend can serve (e.g. its informer has synced). */
bool proxy_builder_is_ready(const struct proxy_builder *b);
/* Closes everything; pending sessions get no events. Accepts NULL. */
void proxy_builder_destroy(struct proxy_builder *b);

#endif
