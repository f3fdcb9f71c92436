/* A strict, bounded, incremental HTTP/1.0 and 1.1 request-head parser for
 * the health server. Pure code: bytes in, a verdict out; no I/O. Only the
 * request line is kept; header fields are checked and counted, not stored. */
#ifndef NRBC_HTTP_REQUEST_H
#define NRBC_HTTP_REQUEST_H

#include <stddef.h>

#define HTTP_REQUEST_MAX_HEAD 8192     /* request line + headers + final CRLF */
#define HTTP_REQUEST_MAX_HEADERS 64
#define HTTP_REQUEST_MAX_TARGET 1024   /* longer targets get 414 */

enum http_request_result {
	HTTP_REQUEST_MORE,  /* the head is incomplete: feed more bytes */
	HTTP_REQUEST_DONE,  /* a complete, acceptable GET or HEAD head */
	HTTP_REQUEST_ERROR, /* answer with http_request_status() and close */
};

struct http_request;

/* 0 for either limit means the default above. */
struct http_request *http_request_create(size_t max_head, size_t max_headers);
void http_request_destroy(struct http_request *r);

/*
 * Feeds len bytes. *used (may be NULL) says how many were consumed: on DONE,
 * bytes after the head are left unconsumed (a body or a pipelined request,
 * which the caller may ignore). Once DONE or ERROR, further calls consume
 * nothing and return the same result.
 */
enum http_request_result http_request_feed(struct http_request *r, const char *data,
    size_t len, size_t *used);

/* After DONE: "GET" or "HEAD"; the target as sent (origin form, starts with
 * '/'); 10 or 11. */
const char *http_request_method(const struct http_request *r);
const char *http_request_target(const struct http_request *r);
int http_request_version(const struct http_request *r);
size_t http_request_header_count(const struct http_request *r);

/* After ERROR: 400, 405, 414, 431 or 505, and a short reason for the log and
 * the response body. 0 and "" before that. */
int http_request_status(const struct http_request *r);
const char *http_request_reason(const struct http_request *r);

#endif
