/* A fixed builder address for every session: for tests, benchmarks and a
 * single long-lived builder. Events are delivered on a later loop turn so
 * the caller never sees them re-entrantly. */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "proxy_builder_backend.h"

struct static_pending {
	uint64_t session_id;
	bool other_class; /* asked for a builder class: there is only the one */
	struct static_pending *next;
};

struct proxy_builder_static {
	struct proxy_builder base;
	uv_idle_t idle;
	char *host;
	int port;
	char *name; /* "host:port", what users are told */
	struct static_pending *pending;
	bool closing;
};

static void static_on_idle(uv_idle_t *h)
{
	struct proxy_builder_static *s = h->data;

	uv_idle_stop(&s->idle);
	/* Take the whole list first: a ready callback may acquire again. */
	while (s->pending) {
		struct static_pending *p = s->pending;
		s->pending = p->next;
		if (p->other_class)
			s->base.events->failed(p->session_id, "this proxy has one fixed builder and "
			    "no builder classes: log in as the default user", s->base.data);
		else
			s->base.events->ready(p->session_id, s->host, s->port, s->name, NULL,
			    s->base.data);
		free(p);
		if (s->closing)
			return;
	}
}

static int static_acquire(struct proxy_builder *b, uint64_t session_id,
    const struct proxy_builder_want *want)
{
	struct proxy_builder_static *s = (struct proxy_builder_static *)b;
	struct static_pending *p = calloc(1, sizeof(*p));
	struct static_pending **tail = &s->pending;

	/* One fixed builder serves every client, whatever its quota. */
	if (!p)
		return -1;
	p->session_id = session_id;
	p->other_class = want->builder_class && *want->builder_class;
	while (*tail)
		tail = &(*tail)->next;
	*tail = p;
	uv_idle_start(&s->idle, static_on_idle);
	return 0;
}

/* Nothing is recorded anywhere: the bytes are only the proxy's metrics'. */
static void static_release(struct proxy_builder *b, uint64_t session_id, bool ok,
    const char *message, uint64_t bytes_up, uint64_t bytes_down)
{
	struct proxy_builder_static *s = (struct proxy_builder_static *)b;

	for (struct static_pending **pp = &s->pending; *pp; pp = &(*pp)->next) {
		if ((*pp)->session_id == session_id) {
			struct static_pending *p = *pp;
			*pp = p->next;
			free(p);
			return;
		}
	}
}

static bool static_is_ready(const struct proxy_builder *b)
{
	return true;
}

static void static_on_close(uv_handle_t *h)
{
	struct proxy_builder_static *s = h->data;

	while (s->pending) {
		struct static_pending *p = s->pending;
		s->pending = p->next;
		free(p);
	}
	free(s->host);
	free(s->name);
	free(s);
}

static void static_destroy(struct proxy_builder *b)
{
	struct proxy_builder_static *s = (struct proxy_builder_static *)b;

	s->closing = true;
	uv_close((uv_handle_t *)&s->idle, static_on_close);
}

static const struct proxy_builder_ops static_ops = {
	.name = "static",
	.acquire = static_acquire,
	.release = static_release,
	.is_ready = static_is_ready,
	.destroy = static_destroy,
};

struct proxy_builder *proxy_builder_static_create(uv_loop_t *loop, const char *host, int port,
    const struct proxy_builder_events *events, void *data)
{
	struct proxy_builder_static *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->host = strdup(host);
	s->name = str_printf("%s:%d", host, port);
	if (!s->host || !s->name || uv_idle_init(loop, &s->idle) < 0) {
		free(s->host);
		free(s->name);
		free(s);
		return NULL;
	}
	s->base.ops = &static_ops;
	s->base.events = events;
	s->base.data = data;
	s->port = port;
	s->idle.data = s;
	log_info("builder backend: static address %s:%d", host, port);
	return &s->base;
}
