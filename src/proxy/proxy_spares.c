#include "proxy_spares.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"

/* A spare's log lines and metrics name it session 0: it is nobody's yet. */
#define SPARE_SESSION_ID 0

enum spare_state {
	SPARE_NONE,       /* no connection: the builder had no burst lately */
	SPARE_CONNECTING, /* made, not authenticated yet */
	SPARE_READY,      /* authenticated: the next session takes it */
	SPARE_FAILED,     /* closed at the next sweep */
};

static const char *const spare_state_names[] = {
	[SPARE_NONE] = "NONE",
	[SPARE_CONNECTING] = "CONNECTING",
	[SPARE_READY] = "READY",
	[SPARE_FAILED] = "FAILED",
};

/* One builder (address, port, user, pinned host key) that sessions reached. */
struct spare {
	struct proxy_spares *sp;
	char *key;
	char *host, *user, *host_key;
	int port;
	const struct proxy_keys *keys;
	enum spare_state state;
	struct proxy_upstream *u;
	uint64_t last_connect; /* the last session connect to this builder */
	uint64_t made_at;
	struct spare *next;
};

struct proxy_spares {
	uv_loop_t *loop;
	uv_timer_t sweep;
	uint64_t lifetime_ms;
	size_t max, live; /* live: spares holding a connection */
	struct spare *head;
	struct metric *made, *taken;
};

static void spare_set_state(struct spare *e, enum spare_state state)
{
	if (e->state == state)
		return;
	log_debug("spare %s:%d: %s => %s", e->host, e->port, spare_state_names[e->state],
	    spare_state_names[state]);
	e->state = state;
}

/* Lets go of e's connection (the caller took it, or it goes). */
static void spare_release(struct spare *e, bool destroy)
{
	if (!e->u)
		return;
	if (destroy)
		proxy_upstream_destroy(e->u);
	e->u = NULL;
	e->sp->live--;
	spare_set_state(e, SPARE_NONE);
}

static void spare_free(struct spare *e)
{
	spare_release(e, true);
	free(e->key);
	free(e->host);
	free(e->user);
	free(e->host_key);
	free(e);
}

static void spares_on_sweep(uv_timer_t *t);

static void spares_arm_sweep(struct proxy_spares *sp, uint64_t in_ms)
{
	uint64_t due = uv_now(sp->loop) + in_ms;

	/* An earlier sweep already due keeps its time. */
	if (uv_is_active((uv_handle_t *)&sp->sweep) &&
	    uv_now(sp->loop) + uv_timer_get_due_in(&sp->sweep) <= due)
		return;
	uv_timer_start(&sp->sweep, spares_on_sweep, in_ms, 0);
}

/* ---- a spare's connection events ---- */

static void spare_on_ready(void *data)
{
	struct spare *e = data;

	spare_set_state(e, SPARE_READY);
	/* Nobody reads it until a session takes it: what the builder sends
	 * meanwhile (its host keys notice) waits in the socket. */
	proxy_upstream_update_poll(e->u, false);
}

static void spare_on_failed(void *data, const char *message)
{
	struct spare *e = data;

	log_debug("spare %s:%d: %s", e->host, e->port, message);
	/* Not from inside the connection's own call: the sweep closes it. */
	spare_set_state(e, SPARE_FAILED);
	spares_arm_sweep(e->sp, 0);
}

static void spare_on_io(void *data)
{
	struct spare *e = data;

	if (e->u)
		proxy_upstream_update_poll(e->u, false);
}

static const struct proxy_upstream_events spare_events = {
	.ready = spare_on_ready,
	.failed = spare_on_failed,
	.io = spare_on_io,
};

static void spare_make(struct spare *e)
{
	struct proxy_spares *sp = e->sp;

	if (e->u || sp->live >= sp->max)
		return;
	/* No keepalives: it lives shorter than the builder's own probe interval. */
	e->u = proxy_upstream_create(sp->loop, SPARE_SESSION_ID, &(struct proxy_upstream_options){
	    .host = e->host, .port = e->port, .user = e->user, .keys = e->keys,
	    .host_key = e->host_key }, &spare_events, e);
	if (!e->u)
		return;
	sp->live++;
	metric_add(sp->made, 1);
	e->made_at = uv_now(sp->loop);
	spare_set_state(e, SPARE_CONNECTING);
	spares_arm_sweep(sp, sp->lifetime_ms);
}

/* ---- the sweep: unused spares and forgotten builders go ---- */

static void spares_on_sweep(uv_timer_t *t)
{
	struct proxy_spares *sp = t->data;
	uint64_t now = uv_now(sp->loop), next = 0;

	for (struct spare **pp = &sp->head; *pp;) {
		struct spare *e = *pp;

		if (e->state == SPARE_FAILED ||
		    (e->u && now - e->made_at >= sp->lifetime_ms))
			spare_release(e, true);
		if (!e->u && now - e->last_connect >= sp->lifetime_ms) {
			*pp = e->next;
			spare_free(e);
			continue;
		}
		{
			uint64_t due = e->u ? e->made_at + sp->lifetime_ms :
			    e->last_connect + sp->lifetime_ms;
			uint64_t in = due > now ? due - now : 1;

			if (!next || in < next)
				next = in;
		}
		pp = &e->next;
	}
	if (next)
		uv_timer_start(&sp->sweep, spares_on_sweep, next, 0);
}

/* ---- interface ---- */

struct proxy_spares *proxy_spares_create(uv_loop_t *loop, uint64_t lifetime_ms, size_t max,
    struct metric *made, struct metric *taken)
{
	struct proxy_spares *sp = calloc(1, sizeof(*sp));

	if (!sp)
		return NULL;
	sp->loop = loop;
	sp->lifetime_ms = lifetime_ms ? lifetime_ms : 1;
	sp->max = max;
	sp->made = made;
	sp->taken = taken;
	if (uv_timer_init(loop, &sp->sweep) < 0) {
		free(sp);
		return NULL;
	}
	sp->sweep.data = sp;
	return sp;
}

static void spares_on_close(uv_handle_t *h)
{
	free(h->data);
}

void proxy_spares_destroy(struct proxy_spares *sp)
{
	if (!sp)
		return;
	while (sp->head) {
		struct spare *e = sp->head;

		sp->head = e->next;
		spare_free(e);
	}
	uv_timer_stop(&sp->sweep);
	uv_close((uv_handle_t *)&sp->sweep, spares_on_close);
}

static char *spare_key(const struct proxy_upstream_options *opts)
{
	return str_printf("%s@%s:%d %s", opts->user, opts->host, opts->port,
	    opts->host_key ? opts->host_key : "");
}

static struct spare *spare_find(struct proxy_spares *sp, const char *key)
{
	for (struct spare *e = sp->head; e; e = e->next) {
		if (strcmp(e->key, key) == 0)
			return e;
	}
	return NULL;
}

static struct spare *spare_add(struct proxy_spares *sp, char *key,
    const struct proxy_upstream_options *opts)
{
	struct spare *e = calloc(1, sizeof(*e));

	if (!e) {
		free(key);
		return NULL;
	}
	e->sp = sp;
	e->key = key;
	e->host = strdup(opts->host);
	e->user = strdup(opts->user);
	e->host_key = strdup(opts->host_key ? opts->host_key : "");
	e->port = opts->port;
	e->keys = opts->keys;
	if (!e->host || !e->user || !e->host_key) {
		spare_free(e);
		return NULL;
	}
	e->next = sp->head;
	sp->head = e;
	return e;
}

/* The entry of the builder of opts, made if need be; NULL when out of memory. */
static struct spare *spare_get(struct proxy_spares *sp, const struct proxy_upstream_options *opts)
{
	char *key = spare_key(opts);
	struct spare *e;

	if (!key)
		return NULL;
	e = spare_find(sp, key);
	if (e) {
		free(key);
		return e;
	}
	e = spare_add(sp, key, opts);
	if (e) {
		/* Never connected: the first connect is no burst. */
		e->last_connect = uv_now(sp->loop) - sp->lifetime_ms;
		spares_arm_sweep(sp, sp->lifetime_ms);
	}
	return e;
}

struct proxy_upstream *proxy_spares_take(struct proxy_spares *sp, uint64_t session_id,
    const struct proxy_upstream_options *opts, const struct proxy_upstream_events *events,
    void *data)
{
	struct spare *e;
	struct proxy_upstream *u;

	if (!sp || !sp->max)
		return NULL;
	e = spare_get(sp, opts);
	if (!e || e->state != SPARE_READY)
		return NULL;
	if (!proxy_upstream_is_open(e->u)) {
		/* The builder closed it (restarted, drained, gone) while nobody
		 * read it: never hand a session a dead connection. */
		log_debug("spare %s:%d: closed by the builder", e->host, e->port);
		spare_release(e, true);
		return NULL;
	}
	u = e->u;
	spare_release(e, false);
	proxy_upstream_adopt(u, session_id, events, data, opts->keepalive_interval_ms,
	    opts->keepalive_count);
	metric_add(sp->taken, 1);
	return u;
}

void proxy_spares_connected(struct proxy_spares *sp, const struct proxy_upstream_options *opts)
{
	struct spare *e;
	uint64_t now;

	if (!sp || !sp->max)
		return;
	e = spare_get(sp, opts);
	if (!e)
		return;
	now = uv_now(sp->loop);
	if (now - e->last_connect < sp->lifetime_ms)
		spare_make(e);
	e->last_connect = now;
	spares_arm_sweep(sp, sp->lifetime_ms);
}
