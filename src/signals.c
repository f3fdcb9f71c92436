#include "signals.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"

struct signals {
	uv_signal_t sigint;
	uv_signal_t sigterm;
	signals_shutdown_cb cb;
	void *data;
	int received;
	int pending_closes;
};

static void signals_on_signal(uv_signal_t *h, int signum)
{
	struct signals *s = h->data;

	if (s->received++) {
		log_warnx("second signal %d: exiting now", signum);
		_exit(1);
	}
	log_info("signal %d: shutting down gracefully (send again to force)", signum);
	s->cb(s->data, signum);
}

static void signals_on_close(uv_handle_t *h);

struct signals *signals_create(uv_loop_t *loop, signals_shutdown_cb cb, void *data)
{
	struct signals *s = calloc(1, sizeof(*s));
	int rc;

	if (!s)
		return NULL;
	signal(SIGPIPE, SIG_IGN);
	s->cb = cb;
	s->data = data;
	/* Only initialised handles may be closed: the first failing init
	 * decides how many go through signals_on_close. */
	rc = uv_signal_init(loop, &s->sigint);
	if (rc < 0) {
		log_error("cannot watch signals: %s", uv_strerror(rc));
		free(s);
		return NULL;
	}
	s->sigint.data = s;
	rc = uv_signal_init(loop, &s->sigterm);
	if (rc < 0) {
		log_error("cannot watch signals: %s", uv_strerror(rc));
		s->pending_closes = 1;
		uv_close((uv_handle_t *)&s->sigint, signals_on_close);
		return NULL;
	}
	s->sigterm.data = s;
	if (uv_signal_start(&s->sigint, signals_on_signal, SIGINT) < 0 ||
	    uv_signal_start(&s->sigterm, signals_on_signal, SIGTERM) < 0) {
		log_error("cannot install signal handlers");
		signals_destroy(s);
		return NULL;
	}
	/* Signals alone must not keep the loop alive. */
	uv_unref((uv_handle_t *)&s->sigint);
	uv_unref((uv_handle_t *)&s->sigterm);
	return s;
}

static void signals_on_close(uv_handle_t *h)
{
	struct signals *s = h->data;

	if (--s->pending_closes == 0)
		free(s);
}

void signals_destroy(struct signals *s)
{
	if (!s)
		return;
	s->pending_closes = 2;
	uv_close((uv_handle_t *)&s->sigint, signals_on_close);
	uv_close((uv_handle_t *)&s->sigterm, signals_on_close);
}
