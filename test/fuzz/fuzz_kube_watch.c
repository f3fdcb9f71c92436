/*
 * libFuzzer target for the watch stream parser. Besides memory safety it
 * checks that the outcome does not depend on how the bytes are split: the
 * same events (type and resourceVersion) and the same verdict whether the
 * input arrives whole or in pieces whose sizes the input itself chooses.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kube/kube_watch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_LINE 4096
#define MAX_EVENTS 512

struct trace {
	size_t n;
	uint64_t hash; /* over types and resourceVersions, in order */
};

static void on_event(enum kube_watch_event_type type, json_t *obj, void *data)
{
	struct trace *t = data;
	const char *rv = json_string_value(json_object_get(json_object_get(obj, "metadata"),
	    "resourceVersion"));

	if (!json_is_object(obj) || (int)type < 0 || type > KUBE_WATCH_ERROR)
		abort();
	t->n++;
	t->hash = t->hash * 31 + (uint64_t)type + 1;
	for (const char *p = rv ? rv : ""; *p; p++)
		t->hash = t->hash * 131 + (unsigned char)*p;
}

static int run(const uint8_t *data, size_t size, size_t (*next_len)(size_t, size_t),
    struct trace *t, size_t *pending)
{
	struct kube_watch_parser *p = kube_watch_parser_create(MAX_LINE, on_event, t);
	const char *err = NULL;
	size_t off = 0;
	int rc = 0;

	if (!p)
		abort();
	while (off < size) {
		size_t n = next_len(off, size - off);

		rc = kube_watch_parser_feed(p, (const char *)data + off, n, &err);
		if (rc < 0) {
			if (!err || !err[0])
				abort();
			break;
		}
		off += n;
	}
	*pending = rc == 0 ? kube_watch_parser_pending(p) : 0;
	if (*pending > MAX_LINE)
		abort();
	kube_watch_parser_destroy(p);
	return rc;
}

static size_t whole(size_t off, size_t left)
{
	return left;
}

static size_t seed;

static size_t pieces(size_t off, size_t left)
{
	size_t n = 1 + (seed + off * 7) % 13;

	return n < left ? n : left;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct trace a = { 0 }, b = { 0 };
	size_t pa, pb;
	int ra, rb;

	if (size > 64 * 1024)
		return 0;
	seed = size ? data[0] : 0;
	ra = run(data, size, whole, &a, &pa);
	rb = run(data, size, pieces, &b, &pb);
	/* An oversized line may be reported a little earlier when split, but
	 * the verdict and the events before it must agree. */
	if (ra != rb || a.n != b.n || a.hash != b.hash || pa != pb)
		abort();
	return 0;
}
