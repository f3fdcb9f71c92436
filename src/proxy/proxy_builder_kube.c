/* Builders from Kubernetes: one NixBuildRequest per session, created here,
 * watched through an informer (never polled) until the controller reports
 * Running with a pod IP, then marked Completed or Failed and deleted when
 * the session ends. Requests carry this proxy's id as a label, so the
 * requests an earlier run of this proxy left behind (kill -9) are found and
 * deleted once the informer has synced, and the sweep deletes, while the
 * proxy runs, any of its requests that no live session holds. The ends
 * (status, then delete) are proxy_endings': tried until they land. */
#include <jansson.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "json_field.h"
#include "kube/kube_client.h"
#include "kube/kube_informer.h"
#include "log.h"
#include "metrics.h"
#include "proxy_builder_backend.h"
#include "proxy_endings.h"
#include "proxy_keys.h"
#include "proxy_siblings.h"
#include "proxy_sweep.h"

enum kube_wait_state {
	KUBE_WAIT_CREATING, /* create request in flight */
	KUBE_WAIT_WAITING,  /* created; waiting for phase Running */
	KUBE_WAIT_READY,    /* ready event delivered; bridging */
	KUBE_WAIT_DONE,     /* failed event delivered; no more events */
};

static const char *const kube_wait_state_names[] = {
	[KUBE_WAIT_CREATING] = "creating",
	[KUBE_WAIT_WAITING] = "waiting",
	[KUBE_WAIT_READY] = "ready",
	[KUBE_WAIT_DONE] = "done",
};

struct kube_wait {
	uint64_t session_id;
	char name[64];
	enum kube_wait_state state;
	uint64_t started_ms;
	char *last_progress;
	/* Until the create went through: the object to create again when the
	 * API could not be reached (an outage), when to, and how long the
	 * next wait is. */
	json_t *create_body;
	uint64_t retry_at;
	uint64_t retry_delay;
	unsigned attempts;
	bool unanswered;  /* a try got no answer (or 429, 5xx): the API was away */
	/* Set when the session ended before its create request answered. */
	bool released;
	bool release_ok;
	char *release_message;
	struct kube_wait *next;
};

/* One create in flight; the reply finds its session by name, since the
 * session may be gone by then. */
struct kube_op {
	struct proxy_builder_kube *owner;
	uint64_t id;
	char name[64];
	struct kube_op *next;
};

struct proxy_builder_kube {
	struct proxy_builder base;
	uv_loop_t *loop;
	struct kube_client *client;
	struct kube_informer *informer;
	struct proxy_siblings *siblings;
	char *namespace;
	char *proxy_id;
	char *owner_pod;
	char *owner_uid;
	char *image;
	long timeout_seconds;
	int remote_port;
	struct kube_wait *waits;
	struct kube_op *ops;
	struct proxy_endings *endings;
	bool synced;
	uv_timer_t *retry_timer;   /* own allocation: freed in its close callback */
	/* The sweep: deletes requests of this proxy that no session holds. */
	uv_timer_t *sweep_timer;   /* own allocation, as retry_timer */
	uint64_t sweep_interval_ms;
	struct proxy_sweep *sweep;
	struct metric *m_swept;    /* NULL without metrics */
	/* proxy_builder_flush: told from flush_timer once nothing is left to
	 * write, never from inside a reply (the callback may destroy us). */
	uv_timer_t *flush_timer;   /* own allocation, as retry_timer */
	void (*flush_cb)(void *data);
	void *flush_data;
};

/* Creates that failed because the API was not there are tried again after
 * 1 s, doubling up to 8 s, until they go through or the session ends (its
 * --builder-timeout bounds the wait). */
#define KUBE_RETRY_FIRST_MS 1000
#define KUBE_RETRY_MAX_MS 8000

static void kube_wait_set_state(struct kube_wait *w, enum kube_wait_state state)
{
	log_debug("session=%llu nbr=%s builder %s => %s", (unsigned long long)w->session_id,
	    w->name, kube_wait_state_names[w->state], kube_wait_state_names[state]);
	w->state = state;
}

static struct kube_wait *kube_wait_by_session(struct proxy_builder_kube *k, uint64_t id)
{
	for (struct kube_wait *w = k->waits; w; w = w->next)
		if (w->session_id == id)
			return w;
	return NULL;
}

static struct kube_wait *kube_wait_by_name(struct proxy_builder_kube *k, const char *name)
{
	for (struct kube_wait *w = k->waits; w; w = w->next)
		if (strcmp(w->name, name) == 0)
			return w;
	return NULL;
}

static void kube_wait_remove(struct proxy_builder_kube *k, struct kube_wait *w)
{
	for (struct kube_wait **pp = &k->waits; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	free(w->last_progress);
	free(w->release_message);
	json_decref(w->create_body);
	free(w);
}

static uint64_t kube_now_ms(struct proxy_builder_kube *k)
{
	return uv_now(k->loop);
}

static void kube_op_remove(struct proxy_builder_kube *k, struct kube_op *op)
{
	for (struct kube_op **pp = &k->ops; *pp; pp = &(*pp)->next) {
		if (*pp == op) {
			*pp = op->next;
			break;
		}
	}
	free(op);
}

static void kube_on_op_response(const struct kube_response *resp, void *data);

static struct kube_op *kube_op_new(struct proxy_builder_kube *k, const char *name)
{
	struct kube_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->owner = k;
	snprintf(op->name, sizeof(op->name), "%s", name);
	op->next = k->ops;
	k->ops = op;
	return op;
}

static void kube_delete_request(struct proxy_builder_kube *k, const char *name)
{
	if (proxy_endings_delete(k->endings, name) < 0)
		log_error("nbr=%s/%s: out of memory: cannot delete the request", k->namespace, name);
}

/* Records the outcome on the request (for `kubectl get nbr` and the
 * controller, which then frees the builder slot), then deletes it. */
static void kube_finish_request(struct proxy_builder_kube *k, const char *name, bool ok,
    const char *message, uint64_t bytes_up, uint64_t bytes_down)
{
	if (proxy_endings_finish_bytes(k->endings, name, ok, message, bytes_up, bytes_down) < 0)
		log_error("nbr=%s/%s: out of memory: cannot finish the request", k->namespace, name);
}

static void kube_deliver_failed(struct proxy_builder_kube *k, struct kube_wait *w,
    const char *message)
{
	uint64_t id = w->session_id;

	kube_wait_set_state(w, KUBE_WAIT_DONE);
	k->base.events->failed(id, message, k->base.data);
}

/* No answer, or one that says the API is not serving now: worth trying
 * again, unlike a refusal (403, 422). */
static bool kube_status_transient(long status)
{
	return status == 0 || status == 429 || status >= 500;
}

/* A kube-apiserver that has just come back answers 403 for a moment, until
 * its authorizer has loaded the RBAC rules: a 403 after tries that got no
 * answer is tried again, a few times, before it counts as a refusal. */
#define KUBE_FORBIDDEN_AFTER_OUTAGE_TRIES 6

static bool kube_create_transient(const struct kube_wait *w, long status)
{
	if (kube_status_transient(status))
		return true;
	return status == 403 && w->unanswered && w->attempts <= KUBE_FORBIDDEN_AFTER_OUTAGE_TRIES;
}

static void kube_progress(struct proxy_builder_kube *k, struct kube_wait *w, char *text)
{
	if (text && (!w->last_progress || strcmp(text, w->last_progress) != 0)) {
		free(w->last_progress);
		w->last_progress = text;
		k->base.events->progress(w->session_id, text, k->base.data);
		return;
	}
	free(text);
}

static void kube_retry_arm(struct proxy_builder_kube *k);

static void kube_on_create(struct proxy_builder_kube *k, struct kube_op *op,
    const struct kube_response *resp)
{
	struct kube_wait *w = kube_wait_by_name(k, op->name);
	bool created = resp->status == 201 || resp->status == 200 ||
	    (resp->status == 409 && w && w->attempts > 1); /* an earlier try went through */
	char *msg;

	if (!w || w->state != KUBE_WAIT_CREATING)
		return;
	if (!created && kube_status_transient(resp->status))
		w->unanswered = true;
	if (!created && kube_create_transient(w, resp->status) && !w->released) {
		log_warnx("session=%llu nbr=%s/%s: the Kubernetes API did not answer the create "
		    "(HTTP %ld %s); trying again in %llu ms", (unsigned long long)w->session_id,
		    k->namespace, op->name, resp->status, resp->message,
		    (unsigned long long)w->retry_delay);
		kube_progress(k, w, str_printf("waiting for the Kubernetes API: %s",
		    resp->message[0] ? resp->message : resp->reason[0] ? resp->reason :
		    "no answer"));
		w->retry_at = kube_now_ms(k) + w->retry_delay;
		kube_retry_arm(k);
		return;
	}
	if (!created) {
		log_error("session=%llu nbr=%s/%s: create failed: HTTP %ld %s: %s",
		    (unsigned long long)w->session_id, k->namespace, op->name, resp->status,
		    resp->reason, resp->message);
		if (w->released) {
			/* A create that got lost on the way may still have been made. */
			if (kube_status_transient(resp->status))
				kube_delete_request(k, w->name);
			kube_wait_remove(k, w);
			return;
		}
		msg = str_printf("cannot create NixBuildRequest %s/%s: %s%s%s", k->namespace,
		    op->name, resp->reason[0] ? resp->reason : "error",
		    resp->message[0] ? ": " : "", resp->message);
		kube_deliver_failed(k, w, msg ? msg : "cannot create NixBuildRequest");
		free(msg);
		return;
	}
	json_decref(w->create_body);
	w->create_body = NULL;
	if (w->released) {
		/* Released before it had a builder: nothing was moved. */
		kube_finish_request(k, w->name, w->release_ok, w->release_message, 0, 0);
		kube_wait_remove(k, w);
		return;
	}
	kube_wait_set_state(w, KUBE_WAIT_WAITING);
	kube_progress(k, w, str_printf("requested a builder (NixBuildRequest %s/%s)",
	    k->namespace, w->name));
	/* The informer may have seen it already; nothing more to do until it does. */
}

static void kube_flush_check(struct proxy_builder_kube *k);

static void kube_on_op_response(const struct kube_response *resp, void *data)
{
	struct kube_op *op = data;
	struct proxy_builder_kube *k = op->owner;

	kube_on_create(k, op, resp);
	kube_op_remove(k, op);
	kube_flush_check(k);
}

/* "builder pod P: Phase - Reason: message" (or "waiting for a builder:
 * Phase ..." before one is bound), what the Nix user sees. */
static char *kube_progress_text(const char *pod, const char *phase, const char *reason,
    const char *message)
{
	struct buf t;

	buf_init(&t, 1024);
	if ((pod[0] ? buf_printf(&t, "builder pod %s: %s", pod, phase[0] ? phase : "Pending") :
	    buf_printf(&t, "waiting for a builder: %s", phase[0] ? phase : "Pending")) < 0)
		goto fail;
	if ((reason[0] || message[0]) && buf_printf(&t, " - %s%s%s", reason,
	    reason[0] && message[0] ? ": " : "", message) < 0)
		goto fail;
	return buf_steal(&t);
fail:
	buf_finish(&t);
	return NULL;
}

/* The informer can show a request before its create call answers (the
 * controller may even have made it Running by then): the object's
 * existence is the answer, so the wait moves on here and the late reply
 * finds nothing to do. A session released meanwhile is finished by that
 * reply instead. */
static bool kube_wait_settle_create(struct kube_wait *w)
{
	if (w->state != KUBE_WAIT_CREATING)
		return true;
	if (w->released)
		return false;
	kube_wait_set_state(w, KUBE_WAIT_WAITING);
	return true;
}

/* The request's builderHostKey parses as one public key: a malformed one
 * fails the session here, with a line that says so, rather than as a
 * connection that cannot start. */
static bool kube_host_key_valid(const char *text)
{
	unsigned char *blob = NULL;
	char *type = NULL, *err = NULL;
	size_t len;
	bool ok = proxy_keys_parse_host_public(text, &blob, &len, &type, &err) == 0;

	free(blob);
	free(type);
	free(err);
	return ok;
}

/* Turns what the controller wrote into the session's next event. */
static void kube_observe(struct proxy_builder_kube *k, json_t *obj)
{
	struct kube_wait *w = kube_wait_by_name(k, kube_object_name(obj));
	const json_t *status = json_object_get(obj, "status");
	const char *phase = json_field_str(status, "phase");
	const char *pod = json_field_str(status, "podName");
	const char *ip = json_field_str(status, "podIP");
	const char *host_key = json_field_str(status, "builderHostKey");
	const char *reason = json_field_str(status, "reason");
	const char *message = json_field_str(status, "message");
	char *text;

	if (!w || !kube_wait_settle_create(w) ||
	    (w->state != KUBE_WAIT_WAITING && w->state != KUBE_WAIT_READY))
		return;
	if (strcmp(phase, "Failed") == 0) {
		/* The controller's message names the pod when it knows it. */
		if (pod[0] && strstr(message, pod))
			text = str_printf("%s (%s)", message, reason[0] ? reason : "Failed");
		else
			text = str_printf("builder %s failed: %s%s%s", pod[0] ? pod : w->name,
			    reason[0] ? reason : "Failed", message[0] ? ": " : "", message);
		kube_deliver_failed(k, w, text ? text : "builder failed");
		free(text);
		return;
	}
	if (w->state != KUBE_WAIT_WAITING)
		return;
	if (strcmp(phase, "Running") == 0 && ip[0]) {
		if (host_key[0] && !kube_host_key_valid(host_key)) {
			text = str_printf("builder %s: its host key in the request's status "
			    "(builderHostKey) is not a \"type base64\" line: refusing to connect",
			    pod[0] ? pod : w->name);
			kube_deliver_failed(k, w, text ? text : "builder host key malformed");
			free(text);
			return;
		}
		kube_wait_set_state(w, KUBE_WAIT_READY);
		log_info("session=%llu nbr=%s/%s pod=%s ip=%s ready after %llu ms",
		    (unsigned long long)w->session_id, k->namespace, w->name, pod, ip,
		    (unsigned long long)(kube_now_ms(k) - w->started_ms));
		k->base.events->ready(w->session_id, ip, k->remote_port, pod[0] ? pod : w->name,
		    host_key[0] ? host_key : NULL, k->base.data);
		return;
	}
	kube_progress(k, w, kube_progress_text(pod, phase, reason, message));
}

static void kube_on_add(json_t *obj, void *data)
{
	kube_observe(data, obj);
}

static void kube_on_update(json_t *old_obj, json_t *new_obj, void *data)
{
	kube_observe(data, new_obj);
}

static void kube_on_delete(json_t *obj, void *data)
{
	struct proxy_builder_kube *k = data;
	struct kube_wait *w = kube_wait_by_name(k, kube_object_name(obj));
	char *msg;

	if (!w || !kube_wait_settle_create(w) ||
	    (w->state != KUBE_WAIT_WAITING && w->state != KUBE_WAIT_READY))
		return;
	msg = str_printf("NixBuildRequest %s/%s was deleted", k->namespace, w->name);
	kube_deliver_failed(k, w, msg ? msg : "NixBuildRequest was deleted");
	free(msg);
}

/* A request of this proxy that no session holds: neither a live session's
 * (its wait exists from before the create is sent, so a request being made
 * is always held) nor one whose end is on its way, nor one that is going
 * already (a finalizer holds it). */
static bool kube_request_unheld(struct proxy_builder_kube *k, json_t *obj)
{
	const char *name = kube_object_name(obj);

	return !kube_wait_by_name(k, name) && !proxy_endings_holds(k->endings, name) &&
	    !json_object_get(json_object_get(obj, "metadata"), "deletionTimestamp");
}

static void kube_delete_leftover(json_t *obj, void *data)
{
	struct proxy_builder_kube *k = data;
	const char *name = kube_object_name(obj);

	if (!kube_request_unheld(k, obj))
		return;
	log_info("nbr=%s/%s: deleting a request left behind by an earlier run of proxy %s",
	    k->namespace, name, k->proxy_id);
	kube_delete_request(k, name);
}

static void kube_on_synced(void *data)
{
	struct proxy_builder_kube *k = data;

	k->synced = true;
	kube_informer_foreach(k->informer, kube_delete_leftover, k);
}

static void kube_sweep_one(json_t *obj, void *data)
{
	struct proxy_builder_kube *k = data;
	const char *name = kube_object_name(obj);

	if (!kube_request_unheld(k, obj) || !proxy_sweep_see(k->sweep, name))
		return;
	log_info("nbr=%s/%s: no session of proxy %s holds this request (for %llu ms at least): "
	    "deleting it", k->namespace, name, k->proxy_id,
	    (unsigned long long)k->sweep_interval_ms);
	metric_add(k->m_swept, 1);
	kube_delete_request(k, name);
}

static void kube_on_sweep(uv_timer_t *t)
{
	struct proxy_builder_kube *k = t->data;

	if (!k->synced)
		return;
	kube_informer_foreach(k->informer, kube_sweep_one, k);
	proxy_sweep_end(k->sweep);
}

static void kube_on_flush(uv_timer_t *t)
{
	struct proxy_builder_kube *k = t->data;
	void (*cb)(void *data) = k->flush_cb;

	if (!cb || k->ops || proxy_endings_count(k->endings))
		return;
	k->flush_cb = NULL;
	cb(k->flush_data);     /* may destroy k */
}

/* Creates in flight count: one whose session is gone is finished when it
 * answers. */
static void kube_flush_check(struct proxy_builder_kube *k)
{
	if (k->flush_cb && !k->ops && !proxy_endings_count(k->endings) && k->flush_timer)
		uv_timer_start(k->flush_timer, kube_on_flush, 0, 0);
}

static void kube_on_endings_empty(void *data)
{
	kube_flush_check(data);
}

static bool kube_flush(struct proxy_builder *b, void (*done)(void *data), void *data)
{
	struct proxy_builder_kube *k = (struct proxy_builder_kube *)b;
	size_t n = proxy_endings_count(k->endings);

	if (!k->ops && !n)
		return true;
	log_info("waiting for %zu request end(s) and %s create(s) in flight to land", n,
	    k->ops ? "some" : "no");
	k->flush_cb = done;
	k->flush_data = data;
	return false;
}

static json_t *kube_request_object(struct proxy_builder_kube *k, const char *name,
    const char *session, const struct proxy_builder_want *want)
{
	const char *identity = want->identity, *builder_class = want->builder_class;
	json_t *obj = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s, s:s, s:s, s:s}}, s:{s:s, s:s}}",
	    "apiVersion", "nix.io/v1alpha1", "kind", "NixBuildRequest",
	    "metadata", "name", name, "namespace", k->namespace,
	    "labels", "app.kubernetes.io/managed-by", "nrbc-proxy", "nix.io/proxy", k->proxy_id,
	    "nix.io/session", session, "nix.io/identity", identity,
	    "spec", "sessionId", session, "identity", identity);
	json_t *spec = json_object_get(obj, "spec");

	if (!obj)
		return NULL;
	if (k->image)
		json_object_set_new(spec, "image", json_string(k->image));
	if (builder_class && *builder_class &&
	    json_object_set_new(spec, "builderClass", json_string(builder_class)) < 0) {
		json_decref(obj);
		return NULL;
	}
	if (k->timeout_seconds > 0)
		json_object_set_new(spec, "timeoutSeconds", json_integer(k->timeout_seconds));
	/* The key's own quota; the controller prefers the NixUsage's. */
	if (want->max_builders > 0 &&
	    json_object_set_new(spec, "maxBuilders", json_integer(want->max_builders)) < 0) {
		json_decref(obj);
		return NULL;
	}
	/* Owned by the proxy's Pod: if the proxy goes for good, the garbage
	 * collector removes its requests and so their builder pods. */
	if (k->owner_pod && k->owner_uid) {
		json_t *ref = json_pack("[{s:s, s:s, s:s, s:s, s:b}]", "apiVersion", "v1",
		    "kind", "Pod", "name", k->owner_pod, "uid", k->owner_uid,
		    "blockOwnerDeletion", 0);
		if (ref)
			json_object_set_new(json_object_get(obj, "metadata"), "ownerReferences", ref);
	}
	return obj;
}

/* Sends (again) the create of w's request. 0, or -1 when it cannot start. */
static int kube_send_create(struct proxy_builder_kube *k, struct kube_wait *w)
{
	struct kube_op *op = kube_op_new(k, w->name);

	if (!op)
		return -1;
	op->id = kube_create(k->client, &kube_resource_nixbuildrequests, k->namespace,
	    w->create_body, kube_on_op_response, op);
	if (!op->id) {
		kube_op_remove(k, op);
		return -1;
	}
	w->attempts++;
	w->retry_delay = w->retry_delay ? w->retry_delay * 2 : KUBE_RETRY_FIRST_MS;
	if (w->retry_delay > KUBE_RETRY_MAX_MS)
		w->retry_delay = KUBE_RETRY_MAX_MS;
	return 0;
}

static void kube_on_retry(uv_timer_t *t)
{
	struct proxy_builder_kube *k = t->data;
	uint64_t now = kube_now_ms(k);
	struct kube_wait *w, *next;

	for (w = k->waits; w; w = next) {
		next = w->next;
		if (!w->retry_at || w->retry_at > now || w->state != KUBE_WAIT_CREATING)
			continue;
		w->retry_at = 0;
		if (kube_send_create(k, w) < 0)
			kube_deliver_failed(k, w, "cannot request a builder (see the proxy's log)");
	}
	kube_retry_arm(k);
}

static void kube_retry_arm(struct proxy_builder_kube *k)
{
	uint64_t first = 0, now = kube_now_ms(k);

	if (!k->retry_timer)
		return;
	for (struct kube_wait *w = k->waits; w; w = w->next) {
		if (w->retry_at && (!first || w->retry_at < first))
			first = w->retry_at;
	}
	if (!first)
		uv_timer_stop(k->retry_timer);
	else
		uv_timer_start(k->retry_timer, kube_on_retry, first > now ? first - now : 0, 0);
}

static void kube_free_handle(uv_handle_t *h)
{
	free(h);
}

static int kube_acquire(struct proxy_builder *b, uint64_t session_id,
    const struct proxy_builder_want *want)
{
	const char *builder_class = want->builder_class;
	struct proxy_builder_kube *k = (struct proxy_builder_kube *)b;
	unsigned char rnd[6];
	char session[16];
	struct kube_wait *w;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -1;
	snprintf(session, sizeof(session), "%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
	    rnd[3], rnd[4], rnd[5]);
	w = calloc(1, sizeof(*w));
	if (!w)
		return -1;
	w->session_id = session_id;
	w->started_ms = kube_now_ms(k);
	w->state = KUBE_WAIT_CREATING;
	snprintf(w->name, sizeof(w->name), "build-%s", session);
	w->create_body = kube_request_object(k, w->name, session, want);
	if (!w->create_body || kube_send_create(k, w) < 0)
		goto fail;
	w->next = k->waits;
	k->waits = w;
	log_info("session=%llu nbr=%s/%s: requesting a builder%s%s",
	    (unsigned long long)session_id, k->namespace, w->name,
	    builder_class && *builder_class ? " of class " : "",
	    builder_class && *builder_class ? builder_class : "");
	return 0;
fail:
	json_decref(w->create_body);
	free(w);
	return -1;
}

static void kube_release(struct proxy_builder *b, uint64_t session_id, bool ok,
    const char *message, uint64_t bytes_up, uint64_t bytes_down)
{
	struct proxy_builder_kube *k = (struct proxy_builder_kube *)b;
	struct kube_wait *w = kube_wait_by_session(k, session_id);

	if (!w)
		return;
	if (w->state == KUBE_WAIT_CREATING && w->retry_at) {
		/* Between tries: nothing in flight. An earlier try that got lost
		 * on the way may still have made it. */
		kube_delete_request(k, w->name);
		kube_wait_remove(k, w);
		kube_retry_arm(k);
		return;
	}
	if (w->state == KUBE_WAIT_CREATING) {
		/* Finished when the create answers (see kube_on_create). */
		w->released = true;
		w->release_ok = ok;
		w->release_message = message ? strdup(message) : NULL;
		return;
	}
	kube_finish_request(k, w->name, ok, message, bytes_up, bytes_down);
	kube_wait_remove(k, w);
}

static bool kube_is_ready(const struct proxy_builder *b)
{
	return ((const struct proxy_builder_kube *)b)->synced;
}

static void kube_destroy(struct proxy_builder *b)
{
	struct proxy_builder_kube *k = (struct proxy_builder_kube *)b;

	kube_informer_destroy(k->informer);
	k->informer = NULL;
	proxy_siblings_destroy(k->siblings);
	k->siblings = NULL;
	if (k->retry_timer)
		uv_close((uv_handle_t *)k->retry_timer, kube_free_handle);
	k->retry_timer = NULL;
	if (k->sweep_timer)
		uv_close((uv_handle_t *)k->sweep_timer, kube_free_handle);
	k->sweep_timer = NULL;
	if (k->flush_timer)
		uv_close((uv_handle_t *)k->flush_timer, kube_free_handle);
	k->flush_timer = NULL;
	while (k->ops) {
		kube_client_cancel(k->client, k->ops->id);
		kube_op_remove(k, k->ops);
	}
	while (k->waits)
		kube_wait_remove(k, k->waits);
	proxy_endings_destroy(k->endings);
	proxy_sweep_destroy(k->sweep);
	free(k->namespace);
	free(k->proxy_id);
	free(k->owner_pod);
	free(k->owner_uid);
	free(k->image);
	free(k);
}

static int kube_sibling(struct proxy_builder *b, const char *key_line,
    struct proxy_sibling *out, const char **why)
{
	struct proxy_builder_kube *k = (struct proxy_builder_kube *)b;

	return proxy_siblings_find(k->siblings, key_line, out, why);
}

static const struct proxy_builder_ops kube_ops = {
	.name = "kubernetes",
	.sibling = kube_sibling,
	.acquire = kube_acquire,
	.release = kube_release,
	.is_ready = kube_is_ready,
	.flush = kube_flush,
	.destroy = kube_destroy,
};

static const struct kube_informer_handlers kube_handlers = {
	.on_add = kube_on_add,
	.on_update = kube_on_update,
	.on_delete = kube_on_delete,
	.on_synced = kube_on_synced,
};

/* Label values: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends. */
static char *kube_label_value(const char *s)
{
	char out[64];
	size_t n = 0;

	for (; *s && n < sizeof(out) - 1; s++) {
		char c = *s;
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
		out[n++] = ok ? c : '-';
	}
	while (n && !((out[n - 1] >= 'a' && out[n - 1] <= 'z') ||
	    (out[n - 1] >= 'A' && out[n - 1] <= 'Z') || (out[n - 1] >= '0' && out[n - 1] <= '9')))
		n--;
	out[n] = '\0';
	return strdup(n && out[0] != '-' && out[0] != '.' && out[0] != '_' ? out : "nrbc-proxy");
}

/* A timer of its own allocation (freed in its close callback), or NULL. */
static uv_timer_t *kube_timer_new(uv_loop_t *loop, struct proxy_builder_kube *k)
{
	uv_timer_t *t = calloc(1, sizeof(*t));

	if (!t || uv_timer_init(loop, t) < 0) {
		free(t);
		return NULL;
	}
	t->data = k;
	return t;
}

struct proxy_builder *proxy_builder_kube_create(uv_loop_t *loop, struct kube_client *client,
    const struct proxy_builder_kube_options *opts, const struct proxy_builder_events *events,
    void *data)
{
	struct proxy_builder_kube *k = calloc(1, sizeof(*k));
	char *selector = NULL;

	if (!k)
		return NULL;
	k->base.ops = &kube_ops;
	k->base.events = events;
	k->base.data = data;
	k->loop = loop;
	k->client = client;
	k->namespace = strdup(opts->namespace);
	k->proxy_id = kube_label_value(opts->proxy_id);
	k->owner_pod = opts->owner_pod && *opts->owner_pod ? strdup(opts->owner_pod) : NULL;
	k->owner_uid = opts->owner_uid && *opts->owner_uid ? strdup(opts->owner_uid) : NULL;
	k->image = opts->image && *opts->image ? strdup(opts->image) : NULL;
	k->timeout_seconds = opts->timeout_seconds;
	k->remote_port = opts->remote_port;
	if (!k->namespace || !k->proxy_id)
		goto fail;
	k->sweep_interval_ms = opts->sweep_interval_ms;
	k->endings = proxy_endings_create(loop, client, k->namespace);
	k->sweep = proxy_sweep_create();
	if (!k->endings || !k->sweep)
		goto fail;
	proxy_endings_on_empty(k->endings, kube_on_endings_empty, k);
	if (opts->metrics) {
		proxy_endings_set_metrics(k->endings, opts->metrics);
		k->m_swept = metrics_counter(opts->metrics, "nrbc_proxy_requests_swept_total",
		    "NixBuildRequests of this proxy deleted because no live session held them.",
		    NULL);
	}
	if (!(k->retry_timer = kube_timer_new(loop, k)) ||
	    !(k->sweep_timer = kube_timer_new(loop, k)) ||
	    !(k->flush_timer = kube_timer_new(loop, k)))
		goto fail;
	if (k->sweep_interval_ms)
		uv_timer_start(k->sweep_timer, kube_on_sweep, k->sweep_interval_ms,
		    k->sweep_interval_ms);
	selector = str_printf("nix.io/proxy=%s", k->proxy_id);
	if (!selector)
		goto fail;
	k->informer = kube_informer_create(client, &kube_resource_nixbuildrequests, k->namespace,
	    selector, &kube_handlers, k);
	free(selector);
	if (!k->informer || kube_informer_start(k->informer) < 0)
		goto fail;
	k->siblings = proxy_siblings_create(client, k->namespace, k->remote_port);
	if (!k->siblings)
		goto fail;
	log_info("builder backend: NixBuildRequests in namespace %s, proxy id %s, swept every "
	    "%llu ms", k->namespace, k->proxy_id, (unsigned long long)k->sweep_interval_ms);
	return &k->base;
fail:
	kube_destroy(&k->base);
	return NULL;
}
