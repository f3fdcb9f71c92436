/*
 * libFuzzer target for the health server's request-head parser. Besides
 * memory safety it checks that the verdict does not depend on how the bytes
 * are split (whole input vs one byte at a time) and that every verdict is
 * one the server can answer with.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_verdict(const struct http_request *r, enum http_request_result res,
    size_t used, size_t size)
{
	int status = http_request_status(r);

	switch (res) {
	case HTTP_REQUEST_MORE:
		if (used != size || size >= HTTP_REQUEST_MAX_HEAD || status != 0)
			abort();
		break;
	case HTTP_REQUEST_DONE:
		if (status != 0 || http_request_target(r)[0] != '/' ||
		    (strcmp(http_request_method(r), "GET") != 0 &&
		        strcmp(http_request_method(r), "HEAD") != 0) ||
		    (http_request_version(r) != 10 && http_request_version(r) != 11) ||
		    http_request_header_count(r) > HTTP_REQUEST_MAX_HEADERS ||
		    used > HTTP_REQUEST_MAX_HEAD || used < sizeof("GET / HTTP/1.0\r\n\r\n") - 1)
			abort();
		break;
	case HTTP_REQUEST_ERROR:
		if (status != 400 && status != 405 && status != 414 && status != 431 &&
		    status != 505)
			abort();
		if (http_request_reason(r)[0] == '\0')
			abort();
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_request *whole = http_request_create(0, 0);
	struct http_request *bytes = http_request_create(0, 0);
	enum http_request_result res_whole, res_bytes = HTTP_REQUEST_MORE;
	size_t used_whole, used_bytes = 0;

	if (!whole || !bytes)
		abort();
	res_whole = http_request_feed(whole, (const char *)data, size, &used_whole);
	check_verdict(whole, res_whole, used_whole, size);

	for (size_t i = 0; i < size && res_bytes == HTTP_REQUEST_MORE; i++) {
		size_t used;

		res_bytes = http_request_feed(bytes, (const char *)data + i, 1, &used);
		used_bytes += used;
	}
	if (res_bytes != res_whole || http_request_status(bytes) != http_request_status(whole))
		abort();
	if (res_whole == HTTP_REQUEST_DONE &&
	    (used_bytes != used_whole ||
	        strcmp(http_request_method(bytes), http_request_method(whole)) != 0 ||
	        strcmp(http_request_target(bytes), http_request_target(whole)) != 0))
		abort();

	http_request_destroy(whole);
	http_request_destroy(bytes);
	return 0;
}
