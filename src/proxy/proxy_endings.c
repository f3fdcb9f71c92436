/* The ends of NixBuildRequests, retried until they land (see the header).
 * Each end is a small state machine: record the outcome, then delete;
 * each step is either in flight or waiting out its backoff. */
#include "proxy_endings.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kube/kube_client.h"
#include "log.h"
#include "metrics.h"
#include "rfc3339.h"

enum ending_state {
	ENDING_RECORDING,      /* status patch in flight */
	ENDING_RECORD_WAIT,    /* status patch failed; tried again at retry_at */
	ENDING_DELETING,       /* delete in flight */
	ENDING_DELETE_WAIT,    /* delete failed; tried again at retry_at */
};

static const char *const ending_state_names[] = {
	[ENDING_RECORDING] = "recording",
	[ENDING_RECORD_WAIT] = "record-wait",
	[ENDING_DELETING] = "deleting",
	[ENDING_DELETE_WAIT] = "delete-wait",
};

/* 0.5 s, doubling up to 30 s: a few tries in the first seconds of a blip,
 * then one write every 30 s per request for as long as an outage lasts. */
#define ENDING_RETRY_FIRST_MS 500
#define ENDING_RETRY_MAX_MS 30000

struct ending {
	struct proxy_endings *owner;
	char name[64];
	enum ending_state state;
	json_t *patch;          /* the status to record; NULL for a bare delete */
	uint64_t request_id;    /* the write in flight, 0 while waiting */
	uint64_t retry_at;
	uint64_t retry_delay;
	unsigned failures;      /* of the current step */
	struct ending *next;
};

struct proxy_endings {
	uv_loop_t *loop;
	struct kube_client *client;
	char *namespace;
	struct ending *list;
	size_t count;
	uv_timer_t *timer;      /* own allocation: freed in its close callback */
	void (*on_empty)(void *data);
	void *on_empty_data;
	struct metric *m_pending;   /* NULL without metrics: updates are ignored */
	struct metric *m_failures;
};

static void ending_set_state(struct ending *en, enum ending_state state)
{
	log_debug("nbr=%s/%s end %s => %s", en->owner->namespace, en->name,
	    ending_state_names[en->state], ending_state_names[state]);
	en->state = state;
}

static struct ending *ending_by_name(const struct proxy_endings *e, const char *name)
{
	for (struct ending *en = e->list; en; en = en->next)
		if (strcmp(en->name, name) == 0)
			return en;
	return NULL;
}

static void ending_free(struct ending *en)
{
	json_decref(en->patch);
	free(en);
}

/* Unlinks and frees en; tells the owner when that was the last one. */
static void ending_done(struct proxy_endings *e, struct ending *en)
{
	for (struct ending **pp = &e->list; *pp; pp = &(*pp)->next) {
		if (*pp == en) {
			*pp = en->next;
			break;
		}
	}
	ending_free(en);
	e->count--;
	metric_set(e->m_pending, (double)e->count);
	if (e->count == 0 && e->on_empty)
		e->on_empty(e->on_empty_data);
}

static void endings_on_timer(uv_timer_t *t);

/* The timer runs for the earliest retry, if any. */
static void endings_arm(struct proxy_endings *e)
{
	uint64_t first = 0, now = uv_now(e->loop);

	for (struct ending *en = e->list; en; en = en->next) {
		if ((en->state == ENDING_RECORD_WAIT || en->state == ENDING_DELETE_WAIT) &&
		    (!first || en->retry_at < first))
			first = en->retry_at;
	}
	if (!first)
		uv_timer_stop(e->timer);
	else
		uv_timer_start(e->timer, endings_on_timer, first > now ? first - now : 0, 0);
}

static void ending_on_reply(const struct kube_response *resp, void *data);

/* A refusal that a fix of the cluster (RBAC, a token rotated, the API back)
 * turns into a success: worth trying again. */
static bool ending_status_retryable(long status)
{
	return status == 0 || status == 401 || status == 403 || status == 408 ||
	    status == 429 || status >= 500;
}

/* Starts en's current step; a request that cannot even start waits its
 * backoff like a failed one. */
static void ending_send(struct proxy_endings *e, struct ending *en)
{
	if (en->patch) {
		ending_set_state(en, ENDING_RECORDING);
		en->request_id = kube_patch_merge(e->client, &kube_resource_nixbuildrequests,
		    e->namespace, en->name, en->patch, true, ending_on_reply, en);
	} else {
		ending_set_state(en, ENDING_DELETING);
		en->request_id = kube_delete(e->client, &kube_resource_nixbuildrequests,
		    e->namespace, en->name, NULL, "Background", ending_on_reply, en);
	}
	if (!en->request_id) {
		log_error("nbr=%s/%s: cannot start the %s request", e->namespace, en->name,
		    en->patch ? "status" : "delete");
		ending_set_state(en, en->patch ? ENDING_RECORD_WAIT : ENDING_DELETE_WAIT);
		en->retry_delay = en->retry_delay ? en->retry_delay : ENDING_RETRY_FIRST_MS;
		en->retry_at = uv_now(e->loop) + en->retry_delay;
		endings_arm(e);
	}
}

/* The step failed: log it, wait, try again. */
static void ending_back_off(struct proxy_endings *e, struct ending *en,
    const struct kube_response *resp)
{
	const char *what = en->patch ? "record the outcome of" : "delete";

	en->failures++;
	metric_add(e->m_failures, 1);
	en->retry_delay = en->retry_delay ? en->retry_delay * 2 : ENDING_RETRY_FIRST_MS;
	if (en->retry_delay > ENDING_RETRY_MAX_MS)
		en->retry_delay = ENDING_RETRY_MAX_MS;
	en->retry_at = uv_now(e->loop) + en->retry_delay;
	log_warnx("nbr=%s/%s: cannot %s the request (HTTP %ld%s%s%s%s), try %u; trying again "
	    "in %llu ms", e->namespace, en->name, what, resp->status,
	    resp->reason[0] ? " " : "", resp->reason, resp->message[0] ? ": " : "",
	    resp->message, en->failures, (unsigned long long)en->retry_delay);
	ending_set_state(en, en->patch ? ENDING_RECORD_WAIT : ENDING_DELETE_WAIT);
	endings_arm(e);
}

/* The next step starts afresh: its own tries, its own backoff. */
static void ending_next_step(struct proxy_endings *e, struct ending *en)
{
	json_decref(en->patch);
	en->patch = NULL;
	en->failures = 0;
	en->retry_delay = 0;
	ending_send(e, en);
}

static void ending_on_record_reply(struct proxy_endings *e, struct ending *en,
    const struct kube_response *resp)
{
	if (resp->status == 404) {
		log_debug("nbr=%s/%s was gone already", e->namespace, en->name);
		ending_done(e, en);
		return;
	}
	if (resp->status == 200) {
		if (en->failures)
			log_info("nbr=%s/%s: outcome recorded after %u failed tries", e->namespace,
			    en->name, en->failures);
		ending_next_step(e, en);
		return;
	}
	if (ending_status_retryable(resp->status)) {
		ending_back_off(e, en, resp);
		return;
	}
	/* Refused for good (an invalid patch): the request still has to go. */
	log_warnx("nbr=%s/%s: cannot record the outcome (HTTP %ld%s%s%s%s); deleting it anyway",
	    e->namespace, en->name, resp->status, resp->reason[0] ? " " : "", resp->reason,
	    resp->message[0] ? ": " : "", resp->message);
	ending_next_step(e, en);
}

static void ending_on_delete_reply(struct proxy_endings *e, struct ending *en,
    const struct kube_response *resp)
{
	if (kube_delete_done(resp, false)) {
		if (en->failures)
			log_info("nbr=%s/%s deleted after %u failed tries", e->namespace, en->name,
			    en->failures);
		else
			log_debug("nbr=%s/%s deleted", e->namespace, en->name);
		ending_done(e, en);
		return;
	}
	/* Whatever the refusal, the request must not stay to hold a builder
	 * slot: every failure is tried again, at most every 30 s. */
	ending_back_off(e, en, resp);
}

static void ending_on_reply(const struct kube_response *resp, void *data)
{
	struct ending *en = data;
	struct proxy_endings *e = en->owner;

	en->request_id = 0;
	if (en->state == ENDING_RECORDING)
		ending_on_record_reply(e, en, resp);
	else
		ending_on_delete_reply(e, en, resp);
}

static void endings_on_timer(uv_timer_t *t)
{
	struct proxy_endings *e = t->data;
	uint64_t now = uv_now(e->loop);

	for (struct ending *en = e->list; en; en = en->next) {
		if ((en->state == ENDING_RECORD_WAIT || en->state == ENDING_DELETE_WAIT) &&
		    en->retry_at <= now)
			ending_send(e, en);
	}
	endings_arm(e);
}

static int endings_add(struct proxy_endings *e, const char *name, json_t *patch)
{
	struct ending *en;

	if (ending_by_name(e, name)) {
		json_decref(patch);
		return 0;
	}
	en = calloc(1, sizeof(*en));
	if (!en) {
		json_decref(patch);
		return -1;
	}
	en->owner = e;
	snprintf(en->name, sizeof(en->name), "%s", name);
	en->patch = patch;
	en->next = e->list;
	e->list = en;
	e->count++;
	metric_set(e->m_pending, (double)e->count);
	ending_send(e, en);
	return 0;
}

int proxy_endings_finish(struct proxy_endings *e, const char *name, bool ok,
    const char *message)
{
	return proxy_endings_finish_bytes(e, name, ok, message, 0, 0);
}

int proxy_endings_finish_bytes(struct proxy_endings *e, const char *name, bool ok,
    const char *message, uint64_t bytes_up, uint64_t bytes_down)
{
	char ts[32];
	json_t *patch;

	/* When the session ended, not when a retry landed. The bytes are what
	 * the controller counts into the identity's usage. */
	rfc3339_format_ms((int64_t)time(NULL) * 1000, ts);
	patch = json_pack("{s:{s:s, s:s, s:s, s:I, s:I}}", "status", "phase",
	    ok ? "Completed" : "Failed", "message", message ? message : "", "completionTime", ts,
	    "bytesUp", (json_int_t)(bytes_up > INT64_MAX ? INT64_MAX : bytes_up),
	    "bytesDown", (json_int_t)(bytes_down > INT64_MAX ? INT64_MAX : bytes_down));
	if (!patch)
		return proxy_endings_delete(e, name);
	return endings_add(e, name, patch);
}

int proxy_endings_delete(struct proxy_endings *e, const char *name)
{
	return endings_add(e, name, NULL);
}

bool proxy_endings_holds(const struct proxy_endings *e, const char *name)
{
	return ending_by_name(e, name) != NULL;
}

size_t proxy_endings_count(const struct proxy_endings *e)
{
	return e->count;
}

void proxy_endings_set_metrics(struct proxy_endings *e, struct metrics *m)
{
	e->m_pending = metrics_gauge(m, "nrbc_proxy_request_ends_pending",
	    "NixBuildRequests whose end (status, delete) has not landed yet.", NULL);
	e->m_failures = metrics_counter(m, "nrbc_proxy_request_end_failures_total",
	    "Failed tries to record a request's outcome or delete it (each is retried).", NULL);
}

void proxy_endings_on_empty(struct proxy_endings *e, void (*cb)(void *data), void *data)
{
	e->on_empty = cb;
	e->on_empty_data = data;
}

static void endings_free_timer(uv_handle_t *h)
{
	free(h);
}

struct proxy_endings *proxy_endings_create(uv_loop_t *loop, struct kube_client *client,
    const char *namespace)
{
	struct proxy_endings *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->loop = loop;
	e->client = client;
	e->namespace = strdup(namespace);
	e->timer = calloc(1, sizeof(*e->timer));
	if (!e->namespace || !e->timer)
		goto fail;
	if (uv_timer_init(loop, e->timer) < 0)
		goto fail;
	e->timer->data = e;
	return e;
fail:
	free(e->timer);
	free(e->namespace);
	free(e);
	return NULL;
}

void proxy_endings_destroy(struct proxy_endings *e)
{
	if (!e)
		return;
	while (e->list) {
		struct ending *en = e->list;

		log_warnx("nbr=%s/%s: stopping before the request's end landed (%s, %u failed "
		    "tries): the next start of this proxy deletes it, or the garbage collector "
		    "with this proxy's Pod", e->namespace, en->name, ending_state_names[en->state],
		    en->failures);
		if (en->request_id)
			kube_client_cancel(e->client, en->request_id);
		e->list = en->next;
		ending_free(en);
	}
	uv_close((uv_handle_t *)e->timer, endings_free_timer);
	free(e->namespace);
	free(e);
}
