#include "http_request.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* One byte at a time, so a head split anywhere parses the same as a whole
 * one and no state outlives the byte that ends it. */
enum http_request_state {
	HR_METHOD,
	HR_TARGET,
	HR_VERSION,
	HR_REQUEST_LINE_LF,
	HR_HEADER_START,
	HR_HEADER_NAME,
	HR_HEADER_VALUE,
	HR_HEADER_LF,
	HR_END_LF,
	HR_DONE,
	HR_ERROR,
};

#define HTTP_REQUEST_MAX_METHOD 16
#define HTTP_REQUEST_VERSION_LEN 8 /* "HTTP/1.1" */

struct http_request {
	enum http_request_state state;
	size_t max_head;
	size_t max_headers;
	size_t head_len;
	size_t header_count;
	size_t method_len;
	size_t target_len;
	size_t version_len;
	char method[HTTP_REQUEST_MAX_METHOD + 1];
	char target[HTTP_REQUEST_MAX_TARGET + 1];
	char version[HTTP_REQUEST_VERSION_LEN + 1];
	int version_number;
	int status;
	const char *reason;
};

struct http_request *http_request_create(size_t max_head, size_t max_headers)
{
	struct http_request *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->state = HR_METHOD;
	r->max_head = max_head ? max_head : HTTP_REQUEST_MAX_HEAD;
	r->max_headers = max_headers ? max_headers : HTTP_REQUEST_MAX_HEADERS;
	r->reason = "";
	return r;
}

void http_request_destroy(struct http_request *r)
{
	free(r);
}

static void http_request_fail(struct http_request *r, int status, const char *reason)
{
	r->state = HR_ERROR;
	r->status = status;
	r->reason = reason;
}

/* RFC 9110 tchar. */
static bool http_is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void http_request_method_byte(struct http_request *r, unsigned char c)
{
	if (c == ' ') {
		if (r->method_len == 0)
			http_request_fail(r, 400, "empty method");
		else
			r->state = HR_TARGET;
	} else if (!http_is_tchar(c)) {
		http_request_fail(r, 400, "bad method");
	} else if (r->method_len == HTTP_REQUEST_MAX_METHOD) {
		http_request_fail(r, 400, "method too long");
	} else {
		r->method[r->method_len++] = (char)c;
	}
}

/* Origin form only: "/path?query", visible ASCII. */
static void http_request_target_byte(struct http_request *r, unsigned char c)
{
	if (c == ' ') {
		if (r->target_len == 0)
			http_request_fail(r, 400, "empty target");
		else
			r->state = HR_VERSION;
	} else if (c < 0x21 || c > 0x7e || (r->target_len == 0 && c != '/')) {
		http_request_fail(r, 400, "bad target");
	} else if (r->target_len == HTTP_REQUEST_MAX_TARGET) {
		http_request_fail(r, 414, "target too long");
	} else {
		r->target[r->target_len++] = (char)c;
	}
}

static void http_request_version_end(struct http_request *r)
{
	const char *v = r->version;

	if (r->version_len != HTTP_REQUEST_VERSION_LEN || memcmp(v, "HTTP/", 5) != 0 ||
	    v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9') {
		http_request_fail(r, 400, "bad version");
		return;
	}
	if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) {
		http_request_fail(r, 505, "HTTP version not supported");
		return;
	}
	r->version_number = 10 + (v[7] - '0');
	r->state = HR_REQUEST_LINE_LF;
}

static void http_request_version_byte(struct http_request *r, unsigned char c)
{
	if (c == '\r')
		http_request_version_end(r);
	else if (r->version_len == HTTP_REQUEST_VERSION_LEN || c < 0x21 || c > 0x7e)
		http_request_fail(r, 400, "bad version");
	else
		r->version[r->version_len++] = (char)c;
}

/* The method is judged once the line is known to be well formed, so garbage
 * gets 400 rather than 405. */
static void http_request_request_line_lf_byte(struct http_request *r, unsigned char c)
{
	if (c != '\n')
		http_request_fail(r, 400, "bad request line ending");
	else if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0)
		http_request_fail(r, 405, "method not allowed");
	else
		r->state = HR_HEADER_START;
}

static void http_request_header_start_byte(struct http_request *r, unsigned char c)
{
	if (c == '\r') {
		r->state = HR_END_LF;
	} else if (!http_is_tchar(c)) {
		/* Includes obsolete line folding (a leading SP or HTAB). */
		http_request_fail(r, 400, "bad header");
	} else if (r->header_count == r->max_headers) {
		http_request_fail(r, 431, "too many headers");
	} else {
		r->header_count++;
		r->state = HR_HEADER_NAME;
	}
}

static void http_request_header_name_byte(struct http_request *r, unsigned char c)
{
	if (c == ':')
		r->state = HR_HEADER_VALUE;
	else if (!http_is_tchar(c))
		http_request_fail(r, 400, "bad header name");
}

/* field-vchar, SP, HTAB and obs-text; any other control byte is an error. */
static void http_request_header_value_byte(struct http_request *r, unsigned char c)
{
	if (c == '\r')
		r->state = HR_HEADER_LF;
	else if ((c < 0x20 && c != '\t') || c == 0x7f)
		http_request_fail(r, 400, "bad header value");
}

static void http_request_lf_byte(struct http_request *r, unsigned char c,
    enum http_request_state next)
{
	if (c == '\n')
		r->state = next;
	else
		http_request_fail(r, 400, "CR without LF");
}

static void http_request_byte(struct http_request *r, unsigned char c)
{
	switch (r->state) {
	case HR_METHOD:
		http_request_method_byte(r, c);
		break;
	case HR_TARGET:
		http_request_target_byte(r, c);
		break;
	case HR_VERSION:
		http_request_version_byte(r, c);
		break;
	case HR_REQUEST_LINE_LF:
		http_request_request_line_lf_byte(r, c);
		break;
	case HR_HEADER_START:
		http_request_header_start_byte(r, c);
		break;
	case HR_HEADER_NAME:
		http_request_header_name_byte(r, c);
		break;
	case HR_HEADER_VALUE:
		http_request_header_value_byte(r, c);
		break;
	case HR_HEADER_LF:
		http_request_lf_byte(r, c, HR_HEADER_START);
		break;
	case HR_END_LF:
		http_request_lf_byte(r, c, HR_DONE);
		break;
	case HR_DONE:
	case HR_ERROR:
		break;
	}
}

static enum http_request_result http_request_result(const struct http_request *r)
{
	if (r->state == HR_DONE)
		return HTTP_REQUEST_DONE;
	if (r->state == HR_ERROR)
		return HTTP_REQUEST_ERROR;
	return HTTP_REQUEST_MORE;
}

enum http_request_result http_request_feed(struct http_request *r, const char *data,
    size_t len, size_t *used)
{
	size_t i;

	for (i = 0; i < len && r->state != HR_DONE && r->state != HR_ERROR; i++) {
		if (r->head_len == r->max_head) {
			http_request_fail(r, 431, "request head too large");
			break;
		}
		r->head_len++;
		http_request_byte(r, (unsigned char)data[i]);
	}
	if (used)
		*used = i;
	return http_request_result(r);
}

const char *http_request_method(const struct http_request *r)
{
	return r->method;
}

const char *http_request_target(const struct http_request *r)
{
	return r->target;
}

int http_request_version(const struct http_request *r)
{
	return r->version_number;
}

size_t http_request_header_count(const struct http_request *r)
{
	return r->header_count;
}

int http_request_status(const struct http_request *r)
{
	return r->status;
}

const char *http_request_reason(const struct http_request *r)
{
	return r->reason;
}
