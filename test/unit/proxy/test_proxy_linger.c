/* The lingering close on real loopback TCP sockets and a real loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "proxy/proxy_linger.h"

/* A connected pair: *ours is the proxy's end, *peer the client's. */
static void tcp_pair(int *ours, int *peer)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
	*peer = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(*peer, (struct sockaddr *)&a, sizeof(a)), 0);
	*ours = accept(l, NULL, NULL);
	assert_true(*ours >= 0);
	close(l);
}

static void send_all(int fd, const char *text)
{
	assert_int_equal(send(fd, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
}

static int fcntl_closed(int fd)
{
	return fcntl(fd, F_GETFD) < 0 && errno == EBADF;
}

/* Runs the loop until count sockets linger (or about two seconds pass). */
static void run_until(uv_loop_t *loop, const struct proxy_lingers *l, size_t count)
{
	for (int i = 0; i < 2000 && proxy_lingers_count(l) != count; i++) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_int_equal(proxy_lingers_count(l), count);
}

/* What the peer reads after everything it was sent: 0 for EOF, -errno for
 * an error. */
static int peer_read_after(int peer, const char *expect)
{
	char buf[256];
	size_t got = 0;
	struct pollfd p = { .fd = peer, .events = POLLIN };

	for (;;) {
		ssize_t n;

		assert_true(poll(&p, 1, 2000) == 1);
		n = recv(peer, buf + got, sizeof(buf) - got, 0);
		if (n < 0)
			return -errno;
		if (n == 0) {
			assert_int_equal(got, strlen(expect));
			assert_memory_equal(buf, expect, got);
			return 0;
		}
		got += (size_t)n;
	}
}

/* The premise: a plain close() with bytes unread resets the connection,
 * and the peer loses what it was sent last. */
static void test_plain_close_with_bytes_unread_resets(void **state)
{
	int ours, peer;

	(void)state;
	tcp_pair(&ours, &peer);
	send_all(peer, "window adjust");
	usleep(20000);
	send_all(ours, "exit-status 1");
	close(ours);
	assert_int_equal(peer_read_after(peer, "exit-status 1"), -ECONNRESET);
	close(peer);
}

static void test_peer_reads_everything_then_eof(void **state)
{
	uv_loop_t loop;
	struct proxy_lingers *l;
	int ours, peer;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	l = proxy_lingers_create(&loop, 8, 5000);
	assert_non_null(l);
	tcp_pair(&ours, &peer);
	send_all(peer, "window adjust");
	usleep(20000);
	send_all(ours, "exit-status 1");
	proxy_lingers_close(l, ours);
	assert_int_equal(proxy_lingers_count(l), 1);
	assert_int_equal(peer_read_after(peer, "exit-status 1"), 0);
	/* The client's own goodbye, after the proxy's end: dropped, no reset. */
	send_all(peer, "channel close, disconnect");
	uv_run(&loop, UV_RUN_NOWAIT);
	assert_int_equal(proxy_lingers_count(l), 1);
	/* The client closes: so does the proxy, long before the wait is up. */
	close(peer);
	run_until(&loop, l, 0);
	proxy_lingers_destroy(l);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_a_silent_peer_is_closed_after_the_wait(void **state)
{
	uv_loop_t loop;
	struct proxy_lingers *l;
	uint64_t t0;
	int ours, peer;
	char c;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	l = proxy_lingers_create(&loop, 8, 100);
	tcp_pair(&ours, &peer);
	t0 = uv_hrtime();
	proxy_lingers_close(l, ours);
	run_until(&loop, l, 0);
	assert_true(uv_hrtime() - t0 >= 90 * 1000000ull);
	/* Closed for real: the peer's write is answered by a reset. */
	assert_int_equal(recv(peer, &c, 1, 0), 0);
	send_all(peer, "x");
	usleep(20000);
	assert_true(send(peer, "y", 1, MSG_NOSIGNAL) < 0);
	close(peer);
	proxy_lingers_destroy(l);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_past_the_cap_the_oldest_goes(void **state)
{
	uv_loop_t loop;
	struct proxy_lingers *l;
	int ours[3], peer[3];
	char c;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	l = proxy_lingers_create(&loop, 2, 5000);
	for (int i = 0; i < 3; i++) {
		tcp_pair(&ours[i], &peer[i]);
		proxy_lingers_close(l, ours[i]);
	}
	assert_int_equal(proxy_lingers_count(l), 2);
	uv_run(&loop, UV_RUN_NOWAIT);
	/* The first is closed: a write to it is reset; the others linger. */
	assert_int_equal(recv(peer[0], &c, 1, 0), 0);
	send_all(peer[0], "x");
	usleep(20000);
	assert_true(send(peer[0], "y", 1, MSG_NOSIGNAL) < 0);
	send_all(peer[1], "x");
	usleep(20000);
	send_all(peer[1], "y");
	for (int i = 0; i < 3; i++)
		close(peer[i]);
	run_until(&loop, l, 0);
	proxy_lingers_destroy(l);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* Destroyed with sockets lingering (a stopping proxy): they still get
 * their wait, the loop ends after it, and nothing leaks; later sockets are
 * closed at once. */
static void test_destroy_lets_the_lingering_finish(void **state)
{
	uv_loop_t loop;
	struct proxy_lingers *l;
	int ours, peer, late_ours, late_peer;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	l = proxy_lingers_create(&loop, 8, 100);
	tcp_pair(&ours, &peer);
	send_all(peer, "unread");
	usleep(20000);
	send_all(ours, "last words");
	proxy_lingers_close(l, ours);
	proxy_lingers_destroy(l);
	assert_int_equal(peer_read_after(peer, "last words"), 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	close(peer);
	/* NULL: closed at once. */
	tcp_pair(&late_ours, &late_peer);
	proxy_lingers_close(NULL, late_ours);
	assert_true(fcntl_closed(late_ours));
	close(late_peer);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_close_with_bytes_unread_resets),
		cmocka_unit_test(test_peer_reads_everything_then_eof),
		cmocka_unit_test(test_a_silent_peer_is_closed_after_the_wait),
		cmocka_unit_test(test_past_the_cap_the_oldest_goes),
		cmocka_unit_test(test_destroy_lets_the_lingering_finish),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
