/*
 * The health server on a real libuv loop and real TCP sockets on 127.0.0.1.
 * The loop runs on the test thread; a client thread drives blocking sockets,
 * records what it saw and wakes the loop to shut the server down. All
 * assertions happen on the test thread after the loop has ended.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "health.h"
#include "metrics.h"

#define CLIENT_TIMEOUT_S 5
#define MAX_REPLIES 16

struct reply {
	int status;     /* 0: the server closed without a response; -1: client-side failure */
	int error;      /* errno of a client-side failure */
	bool reset;     /* ended by RST after some bytes instead of a clean FIN */
	char head[2048];
	char body[8192];
	size_t body_len;
	double ms;      /* from connect to the end of the reply */
};

struct harness {
	uv_loop_t loop;
	uv_async_t done;
	struct metrics *metrics;
	struct health_server *server;
	int port;
	void (*client)(struct harness *h);
	atomic_bool ready;
	atomic_bool live;
	atomic_bool signalled;
	struct reply replies[MAX_REPLIES];
	int attempts;
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6;
}

static int client_connect(int port)
{
	struct sockaddr_in sin;
	struct timeval tv = { .tv_sec = CLIENT_TIMEOUT_S };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int client_send(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads until the server closes, then splits status, head and body. */
static void client_read_reply(int fd, struct reply *r, double start)
{
	char raw[sizeof(r->head) + sizeof(r->body)];
	size_t len = 0;
	char *sep;

	for (;;) {
		ssize_t n = recv(fd, raw + len, sizeof(raw) - 1 - len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || len == 0) {
				r->status = -1;
				r->error = errno;
				return;
			}
			/* The server closed with our input unread: on a real
			 * network that can destroy the response. */
			r->reset = true;
			break;
		}
		if (n == 0 || len + (size_t)n == sizeof(raw) - 1) {
			len += (size_t)n;
			break;
		}
		len += (size_t)n;
	}
	raw[len] = '\0';
	r->ms = now_ms() - start;
	if (len == 0) {
		r->status = 0;
		return;
	}
	sep = strstr(raw, "\r\n\r\n");
	if (!sep || sscanf(raw, "HTTP/1.1 %d ", &r->status) != 1 ||
	    (size_t)(sep - raw) >= sizeof(r->head)) {
		r->status = -1;
		return;
	}
	memcpy(r->head, raw, (size_t)(sep - raw));
	r->head[sep - raw] = '\0';
	r->body_len = len - (size_t)(sep + 4 - raw);
	memcpy(r->body, sep + 4, r->body_len);
	r->body[r->body_len] = '\0';
}

/* One connection, one raw request, the whole reply. */
static void client_request(int port, const char *raw, size_t len, struct reply *r)
{
	double start = now_ms();
	int fd = client_connect(port);

	memset(r, 0, sizeof(*r));
	if (fd < 0 || client_send(fd, raw, len) < 0) {
		r->status = -1;
		r->error = errno;
		if (fd >= 0)
			close(fd);
		return;
	}
	client_read_reply(fd, r, start);
	close(fd);
}

#define CLIENT_GET(h, i, lit) client_request((h)->port, lit, sizeof(lit) - 1, &(h)->replies[i])

/* Wakes the loop to destroy the server, once: the handle is closed after. */
static void harness_signal(struct harness *h)
{
	if (!atomic_exchange(&h->signalled, true))
		uv_async_send(&h->done);
}

static void *client_thread(void *arg)
{
	struct harness *h = arg;

	h->client(h);
	harness_signal(h);
	return NULL;
}

static void on_done(uv_async_t *a)
{
	struct harness *h = a->data;

	health_server_destroy(h->server);
	h->server = NULL;
	uv_close((uv_handle_t *)&h->done, NULL);
}

static bool check_ready(void *data, const char **why)
{
	struct harness *h = data;

	*why = "warming up";
	return atomic_load(&h->ready);
}

static bool check_live(void *data, const char **why)
{
	struct harness *h = data;

	*why = "wedged";
	return atomic_load(&h->live);
}

static struct harness *harness_start(void (*client)(struct harness *h))
{
	struct harness *h = calloc(1, sizeof(*h));
	char *err = NULL;

	assert_non_null(h);
	assert_int_equal(uv_loop_init(&h->loop), 0);
	h->metrics = metrics_create();
	assert_non_null(h->metrics);
	h->server = health_server_create(&h->loop, "127.0.0.1", 0, h->metrics, &err);
	assert_non_null(h->server);
	assert_null(err);
	h->port = health_server_port(h->server);
	assert_true(h->port > 0);
	h->client = client;
	atomic_store(&h->ready, true);
	atomic_store(&h->live, true);
	assert_int_equal(uv_async_init(&h->loop, &h->done, on_done), 0);
	h->done.data = h;
	return h;
}

/* Runs the client thread against the server until it is done, then checks
 * the loop winds down with nothing left open. */
static void harness_run(struct harness *h)
{
	pthread_t thread;

	assert_int_equal(pthread_create(&thread, NULL, client_thread, h), 0);
	assert_int_equal(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(pthread_join(thread, NULL), 0);
	assert_null(h->server);
	assert_int_equal(uv_loop_close(&h->loop), 0);
}

static void harness_free(struct harness *h)
{
	metrics_destroy(h->metrics);
	free(h);
}

static void assert_reply(const struct reply *r, int status, const char *body)
{
	if (r->status != status)
		print_error("reply: status %d (errno %d), head:\n%s\n", r->status, r->error, r->head);
	assert_int_equal(r->status, status);
	assert_false(r->reset);
	assert_non_null(strstr(r->head, "\r\nConnection: close"));
	if (body)
		assert_string_equal(r->body, body);
}

static double metric_count(struct harness *h, const char *code)
{
	char labels[32];

	snprintf(labels, sizeof(labels), "code=\"%s\"", code);
	return metric_value(metrics_counter(h->metrics, "nrbc_http_requests_total", NULL, labels));
}

/* ---- endpoints ---- */

static void endpoints_client(struct harness *h)
{
	CLIENT_GET(h, 0, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	CLIENT_GET(h, 1, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
	atomic_store(&h->ready, true);
	CLIENT_GET(h, 2, "GET /readyz?verbose HTTP/1.0\r\n\r\n");
	CLIENT_GET(h, 3, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n");
	CLIENT_GET(h, 4, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	CLIENT_GET(h, 5, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
	CLIENT_GET(h, 6, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
	atomic_store(&h->live, false);
	CLIENT_GET(h, 7, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
}

static void test_endpoints(void **state)
{
	struct harness *h = harness_start(endpoints_client);

	health_server_set_ready(h->server, check_ready, h);
	health_server_set_live(h->server, check_live, h);
	atomic_store(&h->ready, false);
	metric_add(metrics_counter(h->metrics, "test_things_total", "Things.", NULL), 7);
	harness_run(h);

	assert_reply(&h->replies[0], 200, "ok\n");
	assert_reply(&h->replies[1], 503, "not ready: warming up\n");
	assert_reply(&h->replies[2], 200, "ok\n");
	assert_reply(&h->replies[3], 200, NULL);
	assert_non_null(strstr(h->replies[3].head,
	    "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	assert_non_null(strstr(h->replies[3].body,
	    "# HELP test_things_total Things.\n# TYPE test_things_total counter\n"
	    "test_things_total 7\n"));
	assert_non_null(strstr(h->replies[3].body, "nrbc_http_requests_total{code=\"200\"} 2\n"));
	assert_non_null(strstr(h->replies[3].body, "nrbc_http_requests_total{code=\"503\"} 1\n"));
	assert_non_null(strstr(h->replies[3].body, "nrbc_http_rejected_connections_total 0\n"));
	assert_reply(&h->replies[4], 200, "");
	assert_non_null(strstr(h->replies[4].head, "\r\nContent-Length: 3\r\n"));
	assert_reply(&h->replies[5], 404, "not found\n");
	assert_reply(&h->replies[6], 405, NULL);
	assert_non_null(strstr(h->replies[6].head, "\r\nAllow: GET, HEAD\r\n"));
	assert_reply(&h->replies[7], 503, "not live: wedged\n");
	/* The registry counted every response. */
	assert_true(metric_count(h, "200") == 4);
	assert_true(metric_count(h, "503") == 2);
	assert_true(metric_count(h, "404") == 1);
	assert_true(metric_count(h, "405") == 1);
	harness_free(h);
}

/* ---- bad requests ---- */

static void bad_requests_client(struct harness *h)
{
	char big[20000];
	size_t len;

	CLIENT_GET(h, 0, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n");
	CLIENT_GET(h, 1, "GET / HTTP/2.0\r\n\r\n");
	CLIENT_GET(h, 2, "GET / HTTP/1.1\nHost: x\n\n");
	len = (size_t)snprintf(big, sizeof(big), "GET /healthz HTTP/1.1\r\nCookie: ");
	memset(big + len, 'c', sizeof(big) - len);
	memcpy(big + sizeof(big) - 4, "\r\n\r\n", 4);
	client_request(h->port, big, sizeof(big), &h->replies[3]);
	/* Still fine for everyone else. */
	CLIENT_GET(h, 4, "GET /healthz HTTP/1.1\r\n\r\n");
}

static void test_bad_requests(void **state)
{
	struct harness *h = harness_start(bad_requests_client);

	harness_run(h);
	assert_reply(&h->replies[0], 400, "bad method\n");
	assert_reply(&h->replies[1], 505, NULL);
	assert_reply(&h->replies[2], 400, NULL);
	assert_reply(&h->replies[3], 431, "request head too large\n");
	assert_reply(&h->replies[4], 200, "ok\n");
	assert_true(metric_count(h, "400") == 2);
	assert_true(metric_count(h, "431") == 1);
	assert_true(metric_count(h, "505") == 1);
	harness_free(h);
}

/* ---- slow clients ---- */

#define SHORT_TIMEOUT_MS 300

static void slow_client(struct harness *h)
{
	static const char half[] = "GET /healthz HTTP/1.1\r\nHo";
	double start = now_ms();
	int stalled = client_connect(h->port);
	int silent = client_connect(h->port);

	memset(&h->replies[0], 0, sizeof(h->replies[0]));
	memset(&h->replies[1], 0, sizeof(h->replies[1]));
	if (stalled < 0 || silent < 0 || client_send(stalled, half, sizeof(half) - 1) < 0) {
		h->replies[0].status = h->replies[1].status = -1;
		h->replies[0].error = errno;
	} else {
		/* Served while the other two hang. */
		CLIENT_GET(h, 2, "GET /healthz HTTP/1.1\r\n\r\n");
		client_read_reply(stalled, &h->replies[0], start);
		client_read_reply(silent, &h->replies[1], start);
	}
	if (stalled >= 0)
		close(stalled);
	if (silent >= 0)
		close(silent);
}

static void test_slow_client_gets_408(void **state)
{
	struct harness *h = harness_start(slow_client);

	health_server_set_header_timeout(h->server, SHORT_TIMEOUT_MS);
	harness_run(h);
	assert_reply(&h->replies[2], 200, "ok\n");
	assert_true(h->replies[2].ms < SHORT_TIMEOUT_MS);
	for (int i = 0; i < 2; i++) {
		assert_reply(&h->replies[i], 408, "request head not received in time\n");
		/* Loop time is cached per iteration, so allow a little slack. */
		assert_true(h->replies[i].ms >= SHORT_TIMEOUT_MS - 50);
		assert_true(h->replies[i].ms < SHORT_TIMEOUT_MS + 2000);
	}
	assert_true(metric_count(h, "408") == 2);
	harness_free(h);
}

/* ---- connection limit ---- */

static void max_connections_client(struct harness *h)
{
	static const char req[] = "GET /healthz HTTP/1.1\r\n\r\n";
	double start = now_ms();
	int a = client_connect(h->port);
	int b = client_connect(h->port);
	int c = -1;

	if (a < 0 || b < 0) {
		h->replies[0].status = -1;
		goto out;
	}
	/* Both idle; give the server time to accept them ... */
	usleep(200 * 1000);
	/* ... then a third: the oldest idle one (a) makes room, the newcomer
	 * (a probe) is served. */
	c = client_connect(h->port);
	if (c < 0) {
		h->replies[0].status = -1;
		goto out;
	}
	start = now_ms();
	if (client_send(c, req, sizeof(req) - 1) == 0)
		client_read_reply(c, &h->replies[0], start);
	/* a was closed without a response. */
	start = now_ms();
	client_read_reply(a, &h->replies[1], start);
	/* b is still served. */
	start = now_ms();
	if (client_send(b, req, sizeof(req) - 1) == 0)
		client_read_reply(b, &h->replies[2], start);
out:
	if (a >= 0)
		close(a);
	if (b >= 0)
		close(b);
	if (c >= 0)
		close(c);
}

static void test_max_connections(void **state)
{
	struct harness *h = harness_start(max_connections_client);

	health_server_set_max_connections(h->server, 2);
	harness_run(h);
	assert_reply(&h->replies[0], 200, "ok\n");
	assert_int_equal(h->replies[1].status, 0);
	assert_true(h->replies[1].ms < 2000);
	assert_reply(&h->replies[2], 200, "ok\n");
	assert_true(metric_value(metrics_counter(h->metrics,
	    "nrbc_http_rejected_connections_total", NULL, NULL)) >= 1);
	harness_free(h);
}

/* ---- shutdown with clients connected ---- */

static void destroy_client(struct harness *h)
{
	int idle = client_connect(h->port);
	double start = now_ms();
	char byte;
	ssize_t n;

	/* Accepted in order, so once this is served the idle one is open. */
	CLIENT_GET(h, 0, "GET /healthz HTTP/1.1\r\n\r\n");
	if (idle < 0 || client_send(idle, "GET /", 5) < 0) {
		h->replies[1].status = -1;
		return;
	}
	harness_signal(h);
	/* destroy closes it: EOF well before the 5 s header timeout. */
	n = recv(idle, &byte, 1, 0);
	h->replies[1].status = (int)n;
	h->replies[1].error = n < 0 ? errno : 0;
	h->replies[1].ms = now_ms() - start;
	close(idle);
}

static void test_destroy_closes_clients(void **state)
{
	struct harness *h = harness_start(destroy_client);

	harness_run(h);
	assert_reply(&h->replies[0], 200, "ok\n");
	if (h->replies[1].status != 0)
		assert_int_equal(h->replies[1].error, ECONNRESET);
	assert_true(h->replies[1].ms < 4000);
	harness_free(h);
}

/* ---- create failures ---- */

static void test_create_errors(void **state)
{
	uv_loop_t loop;
	struct health_server *s, *dup;
	char *err = NULL;

	assert_int_equal(uv_loop_init(&loop), 0);
	assert_null(health_server_create(&loop, "localhost", 0, NULL, &err));
	assert_non_null(err);
	assert_non_null(strstr(err, "not a numeric IP address"));
	free(err);
	assert_null(health_server_create(&loop, "127.0.0.1", 70000, NULL, &err));
	assert_non_null(err);
	free(err);

	s = health_server_create(&loop, "127.0.0.1", 0, NULL, &err);
	assert_non_null(s);
	dup = health_server_create(&loop, "127.0.0.1", health_server_port(s), NULL, &err);
	assert_null(dup);
	assert_non_null(err);
	assert_non_null(strstr(err, "address already in use"));
	free(err);
	health_server_destroy(s);
	health_server_destroy(NULL);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_endpoints),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_slow_client_gets_408),
		cmocka_unit_test(test_max_connections),
		cmocka_unit_test(test_destroy_closes_clients),
		cmocka_unit_test(test_create_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
