#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "http_request.h"

/* Feeds text in pieces of at most step bytes, as the network would; returns
 * the result and how many bytes the parser took in total. */
static enum http_request_result feed_in_steps(struct http_request *r, const char *text,
    size_t len, size_t step, size_t *total)
{
	enum http_request_result res = HTTP_REQUEST_MORE;
	size_t off = 0;

	*total = 0;
	while (off < len) {
		size_t n = len - off < step ? len - off : step;
		size_t used;

		res = http_request_feed(r, text + off, n, &used);
		assert_true(used <= n);
		*total += used;
		if (res != HTTP_REQUEST_MORE)
			break;
		assert_int_equal(used, n);
		off += n;
	}
	return res;
}

static void test_valid_split_everywhere(void **state)
{
	static const char req[] =
	    "GET /readyz?verbose=1 HTTP/1.1\r\n"
	    "Host: 127.0.0.1:8080\r\n"
	    "User-Agent: kube-probe/1.32\r\n"
	    "Accept:*/*\r\n"
	    "X-Empty:\r\n"
	    "X-Odd: tab\there \xc3\xa9\r\n"
	    "\r\n"
	    "trailing bytes";
	size_t head_len = strlen(req) - strlen("trailing bytes");

	/* Every split point, two pieces; and byte by byte. */
	for (size_t split = 0; split <= strlen(req); split++) {
		struct http_request *r = http_request_create(0, 0);
		size_t used1, used2;
		enum http_request_result res;

		assert_non_null(r);
		res = http_request_feed(r, req, split, &used1);
		if (split < head_len) {
			assert_int_equal(res, HTTP_REQUEST_MORE);
			assert_int_equal(used1, split);
			res = http_request_feed(r, req + split, strlen(req) - split, &used2);
			assert_int_equal(used1 + used2, head_len);
		} else {
			assert_int_equal(used1, head_len);
		}
		assert_int_equal(res, HTTP_REQUEST_DONE);
		assert_string_equal(http_request_method(r), "GET");
		assert_string_equal(http_request_target(r), "/readyz?verbose=1");
		assert_int_equal(http_request_version(r), 11);
		assert_int_equal(http_request_header_count(r), 5);
		assert_int_equal(http_request_status(r), 0);
		/* Done stays done and takes nothing more. */
		assert_int_equal(http_request_feed(r, "x", 1, &used2), HTTP_REQUEST_DONE);
		assert_int_equal(used2, 0);
		http_request_destroy(r);
	}
	{
		struct http_request *r = http_request_create(0, 0);
		size_t total;

		assert_int_equal(feed_in_steps(r, req, strlen(req), 1, &total), HTTP_REQUEST_DONE);
		assert_int_equal(total, head_len);
		http_request_destroy(r);
	}
}

static void test_head_and_http10_without_headers(void **state)
{
	struct http_request *r = http_request_create(0, 0);
	size_t used;

	assert_int_equal(http_request_feed(r, "HEAD /metrics HTTP/1.0\r\n\r\n", 26, &used),
	    HTTP_REQUEST_DONE);
	assert_int_equal(used, 26);
	assert_string_equal(http_request_method(r), "HEAD");
	assert_string_equal(http_request_target(r), "/metrics");
	assert_int_equal(http_request_version(r), 10);
	assert_int_equal(http_request_header_count(r), 0);
	http_request_destroy(r);
}

static int parse_status(const char *text, size_t len, size_t max_head, size_t max_headers)
{
	struct http_request *r = http_request_create(max_head, max_headers);
	size_t total;
	enum http_request_result res;
	int status;

	assert_non_null(r);
	res = feed_in_steps(r, text, len, 7, &total);
	status = res == HTTP_REQUEST_ERROR ? http_request_status(r) :
	    res == HTTP_REQUEST_DONE ? 200 : 0;
	if (res == HTTP_REQUEST_ERROR)
		assert_true(http_request_reason(r)[0] != '\0');
	http_request_destroy(r);
	return status;
}

#define STATUS_OF(lit) parse_status(lit, sizeof(lit) - 1, 0, 0)

static void test_garbage_and_bad_syntax(void **state)
{
	assert_int_equal(STATUS_OF("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), 400); /* TLS */
	assert_int_equal(STATUS_OF("\0\0\0\0"), 400);
	assert_int_equal(STATUS_OF(" GET / HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("\r\nGET / HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET  / HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET healthz HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET http://x/healthz HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET * HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET /a\x7f HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET /\r\n\r\n"), 400); /* HTTP/0.9 */
	assert_int_equal(STATUS_OF("GET / HTTP/1.1 \r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET / http/1.1\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET / HTTP/1.1\r\n: x\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET / HTTP/1.1\r\nNoColon\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GETTTTTTTTTTTTTTTTTTTTT / HTTP/1.1\r\n\r\n"), 400);
	/* Bare LF instead of CRLF, anywhere. */
	assert_int_equal(STATUS_OF("GET / HTTP/1.1\n\n"), 400);
	assert_int_equal(STATUS_OF("GET / HTTP/1.1\r\nHost: x\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET / HTTP/1.1\r\nHost: x\r\n\n"), 400);
}

static void test_incomplete_is_not_an_answer(void **state)
{
	/* No final CRLF yet: wait for more. */
	assert_int_equal(STATUS_OF("GET / HTTP/1.1\r\nHost: x\r\n"), 0);
	assert_int_equal(STATUS_OF("GET / HTTP/1.1\r\nHost: x\r\n\r"), 0);
	assert_int_equal(STATUS_OF("GET / HTTP/1.1"), 0);
	assert_int_equal(STATUS_OF(""), 0);
}

static void test_methods_and_versions(void **state)
{
	assert_int_equal(STATUS_OF("POST /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"), 405);
	assert_int_equal(STATUS_OF("get /healthz HTTP/1.1\r\n\r\n"), 405);
	assert_int_equal(STATUS_OF("OPTIONS / HTTP/1.1\r\n\r\n"), 405);
	assert_int_equal(STATUS_OF("GET / HTTP/2.0\r\n\r\n"), 505);
	assert_int_equal(STATUS_OF("GET / HTTP/0.9\r\n\r\n"), 505);
	assert_int_equal(STATUS_OF("GET / HTTP/1.2\r\n\r\n"), 505);
	assert_int_equal(STATUS_OF("GET / HTTP/1.x\r\n\r\n"), 400);
	assert_int_equal(STATUS_OF("GET / HTTP/10.1\r\n\r\n"), 400);
}

static void test_limits(void **state)
{
	struct buf b;
	char target[HTTP_REQUEST_MAX_TARGET + 1];

	/* A head of exactly the limit passes; one byte more is 431. */
	buf_init(&b, 1 << 20);
	buf_append_str(&b, "GET / HTTP/1.1\r\nX: ");
	while (b.len < 100 - 4)
		buf_append_str(&b, "a");
	buf_append_str(&b, "\r\n\r\n");
	assert_int_equal(b.len, 100);
	assert_int_equal(parse_status(b.data, b.len, 100, 0), 200);
	assert_int_equal(parse_status(b.data, b.len, 99, 0), 431);

	/* Default limit: a 20 KiB cookie. */
	buf_reset(&b);
	buf_append_str(&b, "GET / HTTP/1.1\r\nCookie: ");
	while (b.len < 20000)
		buf_append_str(&b, "c");
	buf_append_str(&b, "\r\n\r\n");
	assert_int_equal(parse_status(b.data, b.len, 0, 0), 431);

	/* Header count: the limit passes, one more is 431. */
	buf_reset(&b);
	buf_append_str(&b, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < HTTP_REQUEST_MAX_HEADERS; i++)
		buf_printf(&b, "H%d: v\r\n", i);
	buf_append_str(&b, "\r\n");
	assert_int_equal(parse_status(b.data, b.len, 0, 0), 200);
	assert_int_equal(parse_status(b.data, b.len, 0, HTTP_REQUEST_MAX_HEADERS - 1), 431);

	/* Target length. */
	memset(target, 'a', sizeof(target));
	target[0] = '/';
	buf_reset(&b);
	buf_printf(&b, "GET %.*s HTTP/1.1\r\n\r\n", HTTP_REQUEST_MAX_TARGET, target);
	assert_int_equal(parse_status(b.data, b.len, 0, 0), 200);
	buf_reset(&b);
	buf_printf(&b, "GET %.*s HTTP/1.1\r\n\r\n", HTTP_REQUEST_MAX_TARGET + 1, target);
	assert_int_equal(parse_status(b.data, b.len, 0, 0), 414);
	buf_finish(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_split_everywhere),
		cmocka_unit_test(test_head_and_http10_without_headers),
		cmocka_unit_test(test_garbage_and_bad_syntax),
		cmocka_unit_test(test_incomplete_is_not_an_answer),
		cmocka_unit_test(test_methods_and_versions),
		cmocka_unit_test(test_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
