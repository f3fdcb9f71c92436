#include "kube_watch.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

#define KUBE_WATCH_MAX_LINE (16u << 20)
#define KUBE_WATCH_MIN_TIMEOUT_S 300
#define KUBE_WATCH_MAX_TIMEOUT_S 600
/* The server ends a watch after timeoutSeconds; past this grace, the
 * connection is presumed dead. */
#define KUBE_WATCH_GRACE_S 60

static const char *const kube_watch_type_names[] = {
	[KUBE_WATCH_ADDED] = "ADDED",
	[KUBE_WATCH_MODIFIED] = "MODIFIED",
	[KUBE_WATCH_DELETED] = "DELETED",
	[KUBE_WATCH_BOOKMARK] = "BOOKMARK",
	[KUBE_WATCH_ERROR] = "ERROR",
};

const char *kube_watch_event_type_name(enum kube_watch_event_type t)
{
	if ((size_t)t < sizeof(kube_watch_type_names) / sizeof(kube_watch_type_names[0]))
		return kube_watch_type_names[t];
	return "?";
}

/* ---------- parser ---------- */

struct kube_watch_parser {
	struct buf line; /* a partial line carried over between feeds */
	size_t max_line;
	kube_watch_event_cb cb;
	void *data;
	bool failed;
	char err[256];
};

struct kube_watch_parser *kube_watch_parser_create(size_t max_line, kube_watch_event_cb cb,
    void *data)
{
	struct kube_watch_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->max_line = max_line ? max_line : KUBE_WATCH_MAX_LINE;
	buf_init(&p->line, p->max_line);
	p->cb = cb;
	p->data = data;
	return p;
}

void kube_watch_parser_destroy(struct kube_watch_parser *p)
{
	if (!p)
		return;
	buf_finish(&p->line);
	free(p);
}

size_t kube_watch_parser_pending(const struct kube_watch_parser *p)
{
	return p->line.len;
}

static int parser_fail(struct kube_watch_parser *p, const char **err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int parser_fail(struct kube_watch_parser *p, const char **err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->err, sizeof(p->err), fmt, ap);
	va_end(ap);
	p->failed = true;
	buf_finish(&p->line);
	if (err)
		*err = p->err;
	return -1;
}

static bool event_type_parse(const char *s, enum kube_watch_event_type *out)
{
	for (size_t i = 0; i < sizeof(kube_watch_type_names) / sizeof(kube_watch_type_names[0]);
	    i++) {
		if (strcmp(s, kube_watch_type_names[i]) == 0) {
			*out = (enum kube_watch_event_type)i;
			return true;
		}
	}
	return false;
}

static int parser_line(struct kube_watch_parser *p, const char *s, size_t n, const char **err)
{
	enum kube_watch_event_type type;
	json_error_t jerr;
	json_t *ev, *type_j, *obj;
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			break;
	if (i == n)
		return 0; /* blank lines are keep-alive padding at most */
	ev = json_loadb(s, n, 0, &jerr);
	if (!ev)
		return parser_fail(p, err, "watch event is not valid JSON: %s (column %d)",
		    jerr.text, jerr.column);
	if (!json_is_object(ev)) {
		json_decref(ev);
		return parser_fail(p, err, "watch event is not a JSON object");
	}
	type_j = json_object_get(ev, "type");
	if (!json_is_string(type_j)) {
		json_decref(ev);
		return parser_fail(p, err, "watch event has no \"type\" string");
	}
	if (!event_type_parse(json_string_value(type_j), &type)) {
		parser_fail(p, err, "unknown watch event type \"%.64s\"",
		    json_string_value(type_j));
		json_decref(ev);
		return -1;
	}
	obj = json_object_get(ev, "object");
	if (!json_is_object(obj)) {
		json_decref(ev);
		return parser_fail(p, err, "watch event %s has no \"object\"",
		    kube_watch_type_names[type]);
	}
	if (p->cb)
		p->cb(type, obj, p->data);
	json_decref(ev);
	return 0;
}

int kube_watch_parser_feed(struct kube_watch_parser *p, const char *data, size_t len,
    const char **err)
{
	const char *nl;
	size_t seg;

	if (p->failed) {
		if (err)
			*err = p->err;
		return -1;
	}
	while (len > 0) {
		nl = memchr(data, '\n', len);
		if (!nl) {
			if (buf_append(&p->line, data, len) < 0)
				return parser_fail(p, err,
				    "watch event longer than %zu bytes", p->max_line);
			return 0;
		}
		seg = (size_t)(nl - data);
		if (p->line.len > 0) {
			if (buf_append(&p->line, data, seg) < 0)
				return parser_fail(p, err,
				    "watch event longer than %zu bytes", p->max_line);
			/* The callback may feed nothing back, but keep the
			 * buffer's bytes stable while it runs. */
			if (parser_line(p, p->line.data, p->line.len, err) < 0)
				return -1;
			buf_reset(&p->line);
		} else {
			if (seg > p->max_line)
				return parser_fail(p, err,
				    "watch event longer than %zu bytes", p->max_line);
			if (parser_line(p, data, seg, err) < 0)
				return -1;
		}
		data = nl + 1;
		len -= seg + 1;
	}
	return 0;
}

/* ---------- streaming watch ---------- */

struct kube_watch {
	struct kube_client *c;
	uint64_t req;
	char *path;
	struct kube_watch_parser *parser;
	kube_watch_event_cb on_event;
	kube_watch_end_cb on_end;
	void *data;
	char *err;     /* a stream error found while parsing */
	int feeding;   /* > 0 while handlers run inside the parser */
	bool destroyed;
};

static void watch_free(struct kube_watch *w)
{
	kube_watch_parser_destroy(w->parser);
	free(w->path);
	free(w->err);
	free(w);
}

static void watch_on_event(enum kube_watch_event_type type, json_t *obj, void *data)
{
	struct kube_watch *w = data;

	/* A handler earlier in this chunk may have stopped the watch. */
	if (w->destroyed)
		return;
	w->on_event(type, obj, w->data);
}

static int watch_on_data(const char *bytes, size_t len, void *data)
{
	struct kube_watch *w = data;
	const char *perr = NULL;
	int rc;

	w->feeding++;
	rc = kube_watch_parser_feed(w->parser, bytes, len, &perr);
	w->feeding--;
	if (w->destroyed) {
		if (w->feeding == 0)
			watch_free(w);
		return -1;
	}
	if (rc < 0) {
		log_warnx("kube: watch %s: %s", w->path, perr);
		free(w->err);
		w->err = strdup(perr ? perr : "malformed watch stream");
		return -1;
	}
	return 0;
}

static void watch_on_done(const struct kube_response *resp, void *data)
{
	struct kube_watch *w = data;
	kube_watch_end_cb on_end = w->on_end;
	void *cbdata = w->data;
	char *err = NULL;

	w->req = 0;
	if (w->err) {
		err = strdup(w->err);
	} else if (resp->status >= 200 && resp->status < 300 && !resp->message[0]) {
		if (kube_watch_parser_pending(w->parser) > 0)
			err = strdup("watch stream ended in the middle of an event");
	} else if (resp->status >= 200 && resp->status < 300) {
		err = strdup(resp->message);
	} else if (resp->status == 0) {
		err = str_printf("watch failed: %s", resp->message);
	} else {
		err = str_printf("watch failed: HTTP %ld %s: %s", resp->status, resp->reason,
		    resp->message);
	}
	if (err)
		log_debug("kube: watch %s ended: %s", w->path, err);
	else
		log_debug("kube: watch %s ended cleanly", w->path);
	/* Last use of w: the owner may destroy it inside on_end. */
	on_end(err ? err : NULL, resp->status, cbdata);
	free(err);
}

static unsigned watch_timeout_seconds(void)
{
	static uint64_t state;
	uint64_t x;

	if (state == 0)
		state = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
	/* xorshift64: spreads reconnects of many watchers; not for secrets. */
	x = state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	state = x;
	return KUBE_WATCH_MIN_TIMEOUT_S +
	    (unsigned)(x % (KUBE_WATCH_MAX_TIMEOUT_S - KUBE_WATCH_MIN_TIMEOUT_S + 1));
}

static int query_add(struct buf *q, const char *key, const char *value)
{
	char *esc;
	int rc;

	if (!value || !value[0])
		return 0;
	esc = kube_url_escape(value);
	if (!esc)
		return -1;
	rc = buf_printf(q, "&%s=%s", key, esc);
	free(esc);
	return rc;
}

struct kube_watch *kube_watch_start(struct kube_client *c, const struct kube_resource *r,
    const char *ns, const char *label_selector, const char *field_selector,
    const char *resource_version, kube_watch_event_cb on_event, kube_watch_end_cb on_end,
    void *data)
{
	struct kube_watch *w;
	unsigned timeout_s = watch_timeout_seconds();
	struct buf q;

	buf_init(&q, 1 << 16);
	w = calloc(1, sizeof(*w));
	if (!w)
		goto fail;
	w->c = c;
	w->on_event = on_event;
	w->on_end = on_end;
	w->data = data;
	w->parser = kube_watch_parser_create(KUBE_WATCH_MAX_LINE, watch_on_event, w);
	if (!w->parser)
		goto fail;
	if (buf_printf(&q, "watch=1&allowWatchBookmarks=true&timeoutSeconds=%u", timeout_s) < 0 ||
	    query_add(&q, "resourceVersion", resource_version) < 0 ||
	    query_add(&q, "labelSelector", label_selector) < 0 ||
	    query_add(&q, "fieldSelector", field_selector) < 0)
		goto fail;
	w->path = kube_path(r, ns, NULL, NULL, q.data);
	if (!w->path)
		goto fail;
	w->req = kube_client_stream(c, w->path,
	    (uint64_t)(timeout_s + KUBE_WATCH_GRACE_S) * 1000, watch_on_data, watch_on_done, w);
	if (!w->req)
		goto fail;
	buf_finish(&q);
	return w;
fail:
	log_error("kube: cannot start a watch on %s", r->plural);
	buf_finish(&q);
	if (w)
		watch_free(w);
	return NULL;
}

void kube_watch_destroy(struct kube_watch *w)
{
	if (!w || w->destroyed)
		return;
	w->destroyed = true;
	if (w->req)
		kube_client_cancel(w->c, w->req);
	w->req = 0;
	/* Inside our own data callback the parser is still on the stack. */
	if (w->feeding == 0)
		watch_free(w);
}
