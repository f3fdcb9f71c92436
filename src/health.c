#include "health.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "http_request.h"
#include "log.h"

#define HEALTH_BACKLOG 128
#define HEALTH_READ_CHUNK 4096
/* /metrics bodies beyond this get 500 instead of eating memory. */
#define HEALTH_MAX_RESPONSE ((size_t)16 << 20)
/*
 * After the response, the write side is shut down and whatever the client
 * still sends is read and dropped for a while: closing a socket with unread
 * input makes the kernel send RST, which can destroy the response before the
 * client reads it (think 431 after a half-read 20 KiB head).
 */
#define HEALTH_LINGER_MS 1000
#define HEALTH_MAX_DRAIN ((size_t)64 << 10)

enum health_conn_state {
	HEALTH_CONN_READING,  /* waiting for the request head */
	HEALTH_CONN_WRITING,  /* the response is queued */
	HEALTH_CONN_DRAINING, /* response sent, write side shut, dropping input */
	HEALTH_CONN_CLOSING,  /* handles closing; freed in the last close callback */
};

static const char *const health_conn_state_names[] = {
	[HEALTH_CONN_READING] = "reading",
	[HEALTH_CONN_WRITING] = "writing",
	[HEALTH_CONN_DRAINING] = "draining",
	[HEALTH_CONN_CLOSING] = "closing",
};

struct health_conn {
	struct health_conn *next;
	struct health_conn *prev;
	struct health_server *server;
	uint64_t id;
	enum health_conn_state state;
	uv_tcp_t tcp;
	uv_timer_t timer; /* header, write or linger deadline, by state */
	uv_write_t write_req;
	uv_shutdown_t shutdown_req;
	int pending_closes;
	struct http_request *request;
	struct buf out;
	size_t drained;
	char rbuf[HEALTH_READ_CHUNK];
};

struct health_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	struct metrics *metrics;
	struct metric *rejected;
	health_check_fn ready;
	void *ready_data;
	health_check_fn live;
	void *live_data;
	uint64_t header_timeout_ms;
	unsigned max_conns;
	unsigned open_conns; /* not yet closing */
	struct health_conn *conns; /* all, closing ones included */
	uint64_t next_id;
	int port;
	bool destroying;
	bool listener_closed;
};

static const struct {
	int code;
	const char *text;
} health_status_texts[] = {
	{ 200, "OK" },
	{ 400, "Bad Request" },
	{ 404, "Not Found" },
	{ 405, "Method Not Allowed" },
	{ 408, "Request Timeout" },
	{ 414, "URI Too Long" },
	{ 431, "Request Header Fields Too Large" },
	{ 500, "Internal Server Error" },
	{ 503, "Service Unavailable" },
	{ 505, "HTTP Version Not Supported" },
};

static const char *health_status_text(int code)
{
	for (size_t i = 0; i < sizeof(health_status_texts) / sizeof(health_status_texts[0]); i++) {
		if (health_status_texts[i].code == code)
			return health_status_texts[i].text;
	}
	return "Unknown";
}

static void health_server_maybe_free(struct health_server *s)
{
	if (s->destroying && s->listener_closed && !s->conns)
		free(s);
}

static void health_conn_set_state(struct health_conn *c, enum health_conn_state state)
{
	log_debug("health conn=%" PRIu64 " %s => %s", c->id, health_conn_state_names[c->state],
	    health_conn_state_names[state]);
	c->state = state;
}

static void health_conn_on_close(uv_handle_t *h)
{
	struct health_conn *c = h->data;
	struct health_server *s = c->server;

	if (--c->pending_closes > 0)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	http_request_destroy(c->request);
	buf_finish(&c->out);
	free(c);
	health_server_maybe_free(s);
}

/* The one way a connection ends. */
static void health_conn_close(struct health_conn *c, const char *reason)
{
	if (c->state == HEALTH_CONN_CLOSING)
		return;
	log_debug("health conn=%" PRIu64 " close: %s", c->id, reason);
	health_conn_set_state(c, HEALTH_CONN_CLOSING);
	c->server->open_conns--;
	c->pending_closes = 2;
	uv_close((uv_handle_t *)&c->tcp, health_conn_on_close);
	uv_close((uv_handle_t *)&c->timer, health_conn_on_close);
}

static void health_count_response(struct health_server *s, int status)
{
	char labels[32];

	if (!s->metrics)
		return;
	snprintf(labels, sizeof(labels), "code=\"%d\"", status);
	metric_add(metrics_counter(s->metrics, "nrbc_http_requests_total",
	               "Health server HTTP responses by status code.", labels), 1);
}

static void health_on_timeout(uv_timer_t *t);
static void health_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void health_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);

static void health_on_shutdown(uv_shutdown_t *req, int status)
{
	struct health_conn *c = req->data;

	if (c->state != HEALTH_CONN_CLOSING && status < 0)
		health_conn_close(c, uv_strerror(status));
}

static void health_on_write(uv_write_t *req, int status)
{
	struct health_conn *c = req->data;
	int rc;

	if (c->state == HEALTH_CONN_CLOSING)
		return;
	if (status < 0) {
		health_conn_close(c, uv_strerror(status));
		return;
	}
	health_conn_set_state(c, HEALTH_CONN_DRAINING);
	c->shutdown_req.data = c;
	rc = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, health_on_shutdown);
	if (rc == 0)
		rc = uv_read_start((uv_stream_t *)&c->tcp, health_on_alloc, health_on_read);
	if (rc < 0) {
		health_conn_close(c, uv_strerror(rc));
		return;
	}
	uv_timer_start(&c->timer, health_on_timeout, HEALTH_LINGER_MS, 0);
}

/* Queues a complete response (always Connection: close); head_only leaves
 * the body out but keeps its length, as HEAD wants. */
static void health_conn_respond(struct health_conn *c, int status, const char *extra_headers,
    const char *content_type, const char *body, size_t body_len, bool head_only)
{
	struct health_server *s = c->server;
	uv_buf_t b;
	int rc;

	uv_read_stop((uv_stream_t *)&c->tcp);
	buf_reset(&c->out);
	rc = buf_printf(&c->out,
	    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
	    "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
	    status, health_status_text(status), content_type, body_len, extra_headers);
	if (rc == 0 && !head_only)
		rc = buf_append(&c->out, body, body_len);
	if (rc < 0) {
		health_conn_close(c, "response too large");
		return;
	}
	log_debug("health conn=%" PRIu64 " response %d", c->id, status);
	health_count_response(s, status);
	health_conn_set_state(c, HEALTH_CONN_WRITING);
	c->write_req.data = c;
	b = uv_buf_init(c->out.data, (unsigned int)c->out.len);
	rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, health_on_write);
	if (rc < 0) {
		health_conn_close(c, uv_strerror(rc));
		return;
	}
	/* A client that does not read its response gets the same patience as
	 * one that does not send its request. */
	uv_timer_start(&c->timer, health_on_timeout, s->header_timeout_ms, 0);
}

static void health_conn_respond_text(struct health_conn *c, int status, const char *text,
    bool head_only)
{
	const char *extra = status == 405 ? "Allow: GET, HEAD\r\n" : "";

	health_conn_respond(c, status, extra, "text/plain; charset=utf-8", text, strlen(text),
	    head_only);
}

static void health_conn_check(struct health_conn *c, health_check_fn check, void *data,
    const char *what, bool head_only)
{
	const char *why = NULL;
	char body[512];

	if (!check || check(data, &why)) {
		health_conn_respond_text(c, 200, "ok\n", head_only);
		return;
	}
	snprintf(body, sizeof(body), "not %s: %s\n", what, why ? why : "no reason given");
	health_conn_respond_text(c, 503, body, head_only);
}

static void health_conn_metrics(struct health_conn *c, bool head_only)
{
	struct buf body;

	buf_init(&body, HEALTH_MAX_RESPONSE);
	if (c->server->metrics && metrics_render(c->server->metrics, &body) < 0) {
		log_warnx("health: metrics do not fit in %zu bytes", (size_t)HEALTH_MAX_RESPONSE);
		health_conn_respond_text(c, 500, "metrics too large\n", head_only);
	} else {
		health_conn_respond(c, 200, "", METRICS_CONTENT_TYPE, body.data ? body.data : "",
		    body.len, head_only);
	}
	buf_finish(&body);
}

static void health_conn_route(struct health_conn *c)
{
	struct health_server *s = c->server;
	const char *target = http_request_target(c->request);
	size_t path_len = strcspn(target, "?");
	bool head_only = strcmp(http_request_method(c->request), "HEAD") == 0;

#define HEALTH_PATH_IS(p) (path_len == strlen(p) && memcmp(target, p, path_len) == 0)
	if (HEALTH_PATH_IS("/healthz"))
		health_conn_check(c, s->live, s->live_data, "live", head_only);
	else if (HEALTH_PATH_IS("/readyz"))
		health_conn_check(c, s->ready, s->ready_data, "ready", head_only);
	else if (HEALTH_PATH_IS("/metrics"))
		health_conn_metrics(c, head_only);
	else
		health_conn_respond_text(c, 404, "not found\n", head_only);
#undef HEALTH_PATH_IS
}

static void health_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct health_conn *c = h->data;

	/* One request at a time per connection and each read is parsed before
	 * the next, so one small buffer per connection is enough. */
	*b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void health_conn_read_request(struct health_conn *c, const char *data, size_t len)
{
	char body[128];

	switch (http_request_feed(c->request, data, len, NULL)) {
	case HTTP_REQUEST_MORE:
		break;
	case HTTP_REQUEST_DONE:
		health_conn_route(c);
		break;
	case HTTP_REQUEST_ERROR:
		log_debug("health conn=%" PRIu64 " bad request: %s", c->id,
		    http_request_reason(c->request));
		snprintf(body, sizeof(body), "%s\n", http_request_reason(c->request));
		health_conn_respond_text(c, http_request_status(c->request), body, false);
		break;
	}
}

static void health_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
	struct health_conn *c = stream->data;

	if (nread == 0 || c->state == HEALTH_CONN_CLOSING)
		return;
	if (nread < 0) {
		health_conn_close(c, nread == UV_EOF ? "client closed" : uv_strerror((int)nread));
		return;
	}
	if (c->state == HEALTH_CONN_DRAINING) {
		c->drained += (size_t)nread;
		if (c->drained > HEALTH_MAX_DRAIN)
			health_conn_close(c, "client keeps sending after the response");
		return;
	}
	if (c->state == HEALTH_CONN_READING)
		health_conn_read_request(c, b->base, (size_t)nread);
}

static void health_on_timeout(uv_timer_t *t)
{
	struct health_conn *c = t->data;

	switch (c->state) {
	case HEALTH_CONN_READING:
		health_conn_respond_text(c, 408, "request head not received in time\n", false);
		break;
	case HEALTH_CONN_WRITING:
		health_conn_close(c, "write timeout");
		break;
	case HEALTH_CONN_DRAINING:
		health_conn_close(c, "linger timeout");
		break;
	case HEALTH_CONN_CLOSING:
		break;
	}
}

static void health_on_connection(uv_stream_t *listener, int status)
{
	struct health_server *s = listener->data;
	struct health_conn *c;
	int rc;

	if (status < 0) {
		log_warnx("health: accept: %s", uv_strerror(status));
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		log_error("health: out of memory for a new connection");
		return;
	}
	rc = uv_tcp_init(s->loop, &c->tcp);
	if (rc < 0) {
		log_error("health: uv_tcp_init: %s", uv_strerror(rc));
		free(c);
		return;
	}
	uv_timer_init(s->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->server = s;
	c->id = ++s->next_id;
	c->state = HEALTH_CONN_READING;
	buf_init(&c->out, HEALTH_MAX_RESPONSE + 1024);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->open_conns++;

	rc = uv_accept(listener, (uv_stream_t *)&c->tcp);
	if (rc < 0) {
		health_conn_close(c, uv_strerror(rc));
		return;
	}
	if (s->open_conns > s->max_conns) {
		/* Full: the oldest connection still waiting for its request head
		 * makes room (else the oldest lingering, else the oldest writing
		 * one). A probe sends its request at once and is answered within a
		 * loop turn, so slow or idle clients cannot starve the probes;
		 * they only push each other out. */
		struct health_conn *victim = NULL;
		/* Waiting for a head first, then done but lingering, then
		 * writing; the oldest of its kind (the list is newest first). */
		static const int rank[] = {
			[HEALTH_CONN_READING] = 3,
			[HEALTH_CONN_DRAINING] = 2,
			[HEALTH_CONN_WRITING] = 1,
			[HEALTH_CONN_CLOSING] = 0,
		};

		for (struct health_conn *o = s->conns; o; o = o->next) {
			if (o != c && rank[o->state] > 0 &&
			    (!victim || rank[o->state] >= rank[victim->state]))
				victim = o;
		}
		metric_add(s->rejected, 1);
		if (!victim) {
			health_conn_close(c, "too many connections");
			return;
		}
		health_conn_close(victim, "dropped for a newer connection (too many open)");
	}
	c->request = http_request_create(0, 0);
	if (!c->request) {
		health_conn_close(c, "out of memory");
		return;
	}
	rc = uv_read_start((uv_stream_t *)&c->tcp, health_on_alloc, health_on_read);
	if (rc < 0) {
		health_conn_close(c, uv_strerror(rc));
		return;
	}
	uv_timer_start(&c->timer, health_on_timeout, s->header_timeout_ms, 0);
	log_debug("health conn=%" PRIu64 " accepted", c->id);
}

static void health_on_listener_close(uv_handle_t *h)
{
	struct health_server *s = h->data;

	s->listener_closed = true;
	health_server_maybe_free(s);
}

static int health_server_listen(struct health_server *s, const char *host, int port)
{
	struct sockaddr_storage addr;
	struct sockaddr_storage bound;
	int len = sizeof(bound);
	int rc;

	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
	    uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0)
		return UV_EINVAL;
	rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&s->listener, HEALTH_BACKLOG, health_on_connection);
	if (rc == 0)
		rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
	if (rc < 0)
		return rc;
	if (bound.ss_family == AF_INET6)
		s->port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
	else
		s->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
	return 0;
}

struct health_server *health_server_create(uv_loop_t *loop, const char *host, int port,
    struct metrics *metrics, char **err)
{
	struct health_server *s;
	int rc;

	if (err)
		*err = NULL;
	if (!host || port < 0 || port > 65535) {
		if (err)
			*err = str_printf("health server: bad address %s:%d", host ? host : "(null)", port);
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		if (err)
			*err = str_printf("health server: out of memory");
		return NULL;
	}
	s->loop = loop;
	s->metrics = metrics;
	s->header_timeout_ms = HEALTH_HEADER_TIMEOUT_MS;
	s->max_conns = HEALTH_MAX_CONNECTIONS;
	s->rejected = metrics_counter(metrics, "nrbc_http_rejected_connections_total",
	    "Health server connections closed because too many were open (the oldest "
	    "one still sending its request goes first).", NULL);
	rc = uv_tcp_init(loop, &s->listener);
	if (rc < 0) {
		if (err)
			*err = str_printf("health server: %s", uv_strerror(rc));
		free(s);
		return NULL;
	}
	s->listener.data = s;
	rc = health_server_listen(s, host, port);
	if (rc < 0) {
		if (err)
			*err = str_printf("health server: listen on %s port %d: %s", host, port,
			    rc == UV_EINVAL ? "not a numeric IP address" : uv_strerror(rc));
		health_server_destroy(s);
		return NULL;
	}
	log_info("health server listening on %s port %d", host, s->port);
	return s;
}

void health_server_destroy(struct health_server *s)
{
	if (!s)
		return;
	s->destroying = true;
	uv_close((uv_handle_t *)&s->listener, health_on_listener_close);
	for (struct health_conn *c = s->conns; c; c = c->next)
		health_conn_close(c, "server shutting down");
}

void health_server_set_ready(struct health_server *s, health_check_fn ready, void *data)
{
	s->ready = ready;
	s->ready_data = data;
}

void health_server_set_live(struct health_server *s, health_check_fn live, void *data)
{
	s->live = live;
	s->live_data = data;
}

void health_server_set_header_timeout(struct health_server *s, uint64_t ms)
{
	s->header_timeout_ms = ms;
}

void health_server_set_max_connections(struct health_server *s, unsigned max)
{
	s->max_conns = max;
}

int health_server_port(const struct health_server *s)
{
	return s->port;
}
