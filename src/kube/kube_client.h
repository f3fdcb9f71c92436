/* Asynchronous Kubernetes REST requests on libcurl multi, driven by libuv.
 * Each request has an id; its callback runs exactly once unless the request
 * is cancelled first. One thing blocks the loop: a kubeconfig whose user is
 * an exec credential plugin runs it synchronously (kube_exec.h, bounded by
 * its timeout) when a request needs a credential and none is cached, at
 * start and again only when the credential expires or the API answers 401.
 * In-cluster configurations (the shipped Deployments) never run one. */
#ifndef NRBC_KUBE_CLIENT_H
#define NRBC_KUBE_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kube_config.h"

struct kube_client;

/* Which resource a request is about. */
struct kube_resource {
	const char *group;   /* "" for the core group */
	const char *version; /* "v1", "v1alpha1" */
	const char *plural;  /* "pods", "nixbuildrequests" */
	const char *kind;    /* "Pod" */
	bool namespaced;
};

extern const struct kube_resource kube_resource_pods;
extern const struct kube_resource kube_resource_secrets;
extern const struct kube_resource kube_resource_configmaps;
extern const struct kube_resource kube_resource_events;
extern const struct kube_resource kube_resource_leases;
extern const struct kube_resource kube_resource_nixbuildrequests;
extern const struct kube_resource kube_resource_nixbuilders;
extern const struct kube_resource kube_resource_nixbuilderclasses;
extern const struct kube_resource kube_resource_nixusages;

struct kube_response {
	long status;         /* HTTP status; 0 when the request never got one */
	json_t *body;        /* parsed JSON body or NULL; borrowed for the callback */
	const char *reason;  /* Status.reason ("NotFound", "Conflict"...) or "" */
	const char *message; /* Status.message, a transport error, or "" */
};

typedef void (*kube_response_cb)(const struct kube_response *resp, void *data);

/* Whether a DELETE is over: the object is gone or going (200, 202), was
 * gone already (404), or, for a delete with a uid precondition, the name
 * now holds a newer object than the one meant (409), which is not the
 * caller's to delete. */
static inline bool kube_delete_done(const struct kube_response *resp, bool uid_precondition)
{
	return resp->status == 200 || resp->status == 202 || resp->status == 404 ||
	    (uid_precondition && resp->status == 409);
}

struct kube_client *kube_client_create(uv_loop_t *loop, struct kube_config *cfg);
/* Cancels every request without calling its callback. Accepts NULL. Destroy
 * informers and watches first: they cancel their requests through the
 * client. Safe inside a callback; memory goes once the loop has closed the
 * client's handles. */
void kube_client_destroy(struct kube_client *c);
struct kube_config *kube_client_config(struct kube_client *c);
uv_loop_t *kube_client_loop(struct kube_client *c);

/* The URL path of a resource: /api/v1/namespaces/NS/pods/NAME/SUB?QUERY.
 * ns NULL or "" on a namespaced resource means all namespaces. Heap string. */
char *kube_path(const struct kube_resource *r, const char *ns, const char *name,
    const char *subresource, const char *query);

/* Percent-encodes everything but RFC 3986 unreserved characters; for
 * query values such as label selectors. Heap string, NULL on failure. */
char *kube_url_escape(const char *s);

/* A raw request. body may be NULL; content_type NULL means JSON. The
 * timeout is per request (0: the client default, 30 s). Returns the
 * request id (> 0), or 0 when it could not be started (cb is not called).
 * At most 64 ordinary requests are with libcurl at once (so a burst
 * multiplexes over one HTTP/2 connection); the rest wait in order.
 * Response bodies are capped at 64 MiB; a Status body fills reason and
 * message. Callbacks never run inside the call that started a request. */
uint64_t kube_client_request(struct kube_client *c, const char *method, const char *path,
    const json_t *body, const char *content_type, uint64_t timeout_ms, kube_response_cb cb,
    void *data);
/* A streaming GET (watches): the body of a 2xx response goes to on_data as
 * it arrives instead of being buffered (return -1 to abort the transfer);
 * any other response is buffered and decoded as usual. cb then runs once
 * (body NULL after a 2xx stream) unless cancelled. timeout_ms 0: none.
 * on_data may cancel its own request or start others. */
typedef int (*kube_data_cb)(const char *bytes, size_t len, void *data);
uint64_t kube_client_stream(struct kube_client *c, const char *path, uint64_t timeout_ms,
    kube_data_cb on_data, kube_response_cb cb, void *data);

/* The callback of a cancelled request is never called. Unknown ids are ignored.
 * Callbacks may start new requests, cancel others, or destroy the client. */
void kube_client_cancel(struct kube_client *c, uint64_t id);

/* Typed helpers; all return a request id as above. */
uint64_t kube_get(struct kube_client *c, const struct kube_resource *r, const char *ns,
    const char *name, kube_response_cb cb, void *data);
uint64_t kube_list(struct kube_client *c, const struct kube_resource *r, const char *ns,
    const char *label_selector, const char *continue_token, long limit, kube_response_cb cb,
    void *data);
uint64_t kube_create(struct kube_client *c, const struct kube_resource *r, const char *ns,
    const json_t *obj, kube_response_cb cb, void *data);
/* PUT of obj (its metadata.resourceVersion gives optimistic concurrency). */
uint64_t kube_update(struct kube_client *c, const struct kube_resource *r, const char *ns,
    const char *name, const json_t *obj, kube_response_cb cb, void *data);
uint64_t kube_update_status(struct kube_client *c, const struct kube_resource *r,
    const char *ns, const char *name, const json_t *obj, kube_response_cb cb, void *data);
/* JSON merge patch; status_subresource patches /status. */
uint64_t kube_patch_merge(struct kube_client *c, const struct kube_resource *r,
    const char *ns, const char *name, const json_t *patch, bool status_subresource,
    kube_response_cb cb, void *data);
/* precondition_uid may be NULL; propagation NULL, "Background" or "Foreground". */
uint64_t kube_delete(struct kube_client *c, const struct kube_resource *r, const char *ns,
    const char *name, const char *precondition_uid, const char *propagation,
    kube_response_cb cb, void *data);

#endif
