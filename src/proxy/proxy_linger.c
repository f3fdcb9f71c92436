#include "proxy_linger.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

struct linger_entry {
	struct proxy_lingers *owner;
	struct linger_entry *prev, *next;
	int fd;
	int pending_closes;
	uv_poll_t poll;
	uv_timer_t timer;
};

struct proxy_lingers {
	uv_loop_t *loop;
	size_t max;
	uint64_t wait_ms;
	struct linger_entry *head, *tail; /* oldest first */
	size_t n;          /* entries in the list */
	size_t closing;    /* entries whose handles are closing */
	bool destroyed;
};

static void lingers_maybe_free(struct proxy_lingers *l)
{
	if (l->destroyed && !l->n && !l->closing)
		free(l);
}

static void linger_on_closed(uv_handle_t *h)
{
	struct linger_entry *e = h->data;
	struct proxy_lingers *l = e->owner;

	if (--e->pending_closes > 0)
		return;
	close(e->fd);
	free(e);
	l->closing--;
	lingers_maybe_free(l);
}

/* The one way an entry ends: out of the list, its handles closed, its
 * socket closed after them. */
static void linger_end(struct linger_entry *e)
{
	struct proxy_lingers *l = e->owner;

	if (e->prev)
		e->prev->next = e->next;
	else
		l->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		l->tail = e->prev;
	l->n--;
	l->closing++;
	uv_poll_stop(&e->poll);
	uv_timer_stop(&e->timer);
	e->pending_closes = 2;
	uv_close((uv_handle_t *)&e->poll, linger_on_closed);
	uv_close((uv_handle_t *)&e->timer, linger_on_closed);
}

static void linger_on_readable(uv_poll_t *h, int status, int events)
{
	struct linger_entry *e = h->data;
	char drop[4096];

	(void)events;
	if (status < 0) {
		linger_end(e);
		return;
	}
	/* A bounded number of reads per wakeup: a peer that keeps sending is
	 * cut off by the timer, not served forever here. */
	for (int i = 0; i < 16; i++) {
		ssize_t n = recv(e->fd, drop, sizeof(drop), MSG_DONTWAIT);

		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		/* EOF: the peer closed too. An error: nothing left to save. */
		linger_end(e);
		return;
	}
}

static void linger_on_timeout(uv_timer_t *t)
{
	linger_end(t->data);
}

struct proxy_lingers *proxy_lingers_create(uv_loop_t *loop, size_t max, uint64_t wait_ms)
{
	struct proxy_lingers *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->loop = loop;
	l->max = max;
	l->wait_ms = wait_ms;
	return l;
}

void proxy_lingers_destroy(struct proxy_lingers *l)
{
	if (!l)
		return;
	l->destroyed = true;
	lingers_maybe_free(l);
}

size_t proxy_lingers_count(const struct proxy_lingers *l)
{
	return l ? l->n : 0;
}

void proxy_lingers_close(struct proxy_lingers *l, int fd)
{
	struct linger_entry *e;

	if (fd < 0)
		return;
	if (!l || l->destroyed || !l->max || shutdown(fd, SHUT_WR) < 0) {
		close(fd);
		return;
	}
	/* Full: the one that has waited longest goes. */
	if (l->n >= l->max)
		linger_end(l->head);
	e = calloc(1, sizeof(*e));
	if (!e) {
		close(fd);
		return;
	}
	e->owner = l;
	e->fd = fd;
	if (uv_poll_init_socket(l->loop, &e->poll, fd) < 0) {
		free(e);
		close(fd);
		return;
	}
	e->poll.data = e;
	if (uv_timer_init(l->loop, &e->timer) < 0) {
		/* The poll handle is the loop's now: it goes by its close callback. */
		e->pending_closes = 1;
		l->closing++;
		uv_close((uv_handle_t *)&e->poll, linger_on_closed);
		return;
	}
	e->timer.data = e;
	e->prev = l->tail;
	if (l->tail)
		l->tail->next = e;
	else
		l->head = e;
	l->tail = e;
	l->n++;
	if (uv_poll_start(&e->poll, UV_READABLE | UV_DISCONNECT, linger_on_readable) < 0 ||
	    uv_timer_start(&e->timer, linger_on_timeout, l->wait_ms, 0) < 0) {
		log_debug("lingering close: cannot watch the socket; closed at once");
		linger_end(e);
	}
}
