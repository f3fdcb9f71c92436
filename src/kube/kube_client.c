#include "kube_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "nrbc_version.h"
#include "json_field.h"

#define KUBE_CLIENT_DEFAULT_TIMEOUT_MS 30000
#define KUBE_CLIENT_CONNECT_TIMEOUT_MS 10000
#define KUBE_CLIENT_MAX_BODY (64u << 20) /* a large list still fits */
/* Ordinary requests handed to libcurl at once; the rest wait in a FIFO.
 * Below HTTP/2's usual 100 streams, so a burst shares one connection:
 * libcurl would otherwise open a connection per request beyond the
 * stream limit (curl issue 6826). Streams (watches) are not counted. */
#define KUBE_CLIENT_MAX_ACTIVE 64

const struct kube_resource kube_resource_pods = { "", "v1", "pods", "Pod", true };
const struct kube_resource kube_resource_secrets = { "", "v1", "secrets", "Secret", true };
const struct kube_resource kube_resource_configmaps = {
	"", "v1", "configmaps", "ConfigMap", true
};
const struct kube_resource kube_resource_events = { "", "v1", "events", "Event", true };
const struct kube_resource kube_resource_leases = {
	"coordination.k8s.io", "v1", "leases", "Lease", true
};
const struct kube_resource kube_resource_nixbuildrequests = {
	"nix.io", "v1alpha1", "nixbuildrequests", "NixBuildRequest", true
};
const struct kube_resource kube_resource_nixbuilders = {
	"nix.io", "v1alpha1", "nixbuilders", "NixBuilder", true
};
const struct kube_resource kube_resource_nixbuilderclasses = {
	"nix.io", "v1alpha1", "nixbuilderclasses", "NixBuilderClass", true
};
const struct kube_resource kube_resource_nixusages = {
	"nix.io", "v1alpha1", "nixusages", "NixUsage", true
};

struct kube_request {
	struct kube_request *prev, *next;
	struct kube_client *c;
	uint64_t id;
	CURL *easy;
	struct curl_slist *headers;
	char *method;
	char *path;
	char *body;
	struct buf resp;
	kube_response_cb cb;
	kube_data_cb on_data;
	void *data;
	uint64_t started;
	struct kube_request *wait_next; /* FIFO of requests not yet handed over */
	bool added;     /* handed to the multi handle */
	bool waiting;   /* in a wait FIFO */
	bool counted;   /* added and counted in active */
	bool cancelled; /* no callback any more; freed when libcurl lets go */
	bool too_big;
	char errbuf[CURL_ERROR_SIZE];
};

struct kube_socket {
	uv_poll_t poll;
	struct kube_socket *prev, *next;
	struct kube_client *c;
	curl_socket_t fd;
};

struct kube_client {
	uv_loop_t *loop;
	struct kube_config *cfg;
	CURLM *multi;
	uv_timer_t timer;
	struct kube_request *head, *tail;
	struct kube_socket *sockets;
	uint64_t next_id;
	/* libcurl refuses multi calls from inside its own callbacks (write
	 * callbacks run watch handlers), so while curl_depth > 0 adds and
	 * removals are recorded and done once libcurl has returned. */
	int curl_depth;
	int dispatch_depth;
	size_t cancelled_added; /* cancelled while libcurl was busy */
	struct kube_request *wait_head, *wait_tail;         /* ordinary requests */
	struct kube_request *wait_s_head, *wait_s_tail;     /* streams */
	size_t active;
	size_t max_active;
	uv_timer_t kick; /* runs the wait FIFO after a cancel freed a slot */
	bool destroying;
	bool torn_down;
	int pending_closes;
};

static void client_teardown(struct kube_client *c);

/* ---------- request list ---------- */

static void request_link(struct kube_client *c, struct kube_request *r)
{
	r->prev = c->tail;
	r->next = NULL;
	if (c->tail)
		c->tail->next = r;
	else
		c->head = r;
	c->tail = r;
}

static void request_unlink(struct kube_client *c, struct kube_request *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		c->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		c->tail = r->prev;
	r->prev = r->next = NULL;
}

static struct kube_request *request_find(struct kube_client *c, uint64_t id)
{
	/* Newest first: callers cancel recent requests far more often. */
	for (struct kube_request *r = c->tail; r; r = r->prev)
		if (r->id == id)
			return r;
	return NULL;
}

static void request_free(struct kube_request *r)
{
	if (!r)
		return;
	if (r->easy)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	free(r->method);
	free(r->path);
	free(r->body);
	buf_finish(&r->resp);
	free(r);
}

/* Removes a request from libcurl; only valid when curl_depth == 0. */
static void request_detach(struct kube_client *c, struct kube_request *r)
{
	CURLMcode mc;

	if (!r->added)
		return;
	mc = curl_multi_remove_handle(c->multi, r->easy);
	if (mc != CURLM_OK)
		log_error("kube: curl_multi_remove_handle %s: %s", r->path,
		    curl_multi_strerror(mc));
	r->added = false;
	if (r->counted) {
		r->counted = false;
		c->active--;
	}
}

static int request_attach(struct kube_client *c, struct kube_request *r)
{
	CURLMcode mc = curl_multi_add_handle(c->multi, r->easy);

	if (mc != CURLM_OK) {
		log_error("kube: curl_multi_add_handle %s: %s", r->path, curl_multi_strerror(mc));
		return -1;
	}
	r->added = true;
	if (!r->on_data) {
		r->counted = true;
		c->active++;
	}
	return 0;
}

static void wait_push(struct kube_request **head, struct kube_request **tail,
    struct kube_request *r)
{
	r->waiting = true;
	r->wait_next = NULL;
	if (*tail)
		(*tail)->wait_next = r;
	else
		*head = r;
	*tail = r;
}

static struct kube_request *wait_pop(struct kube_request **head, struct kube_request **tail)
{
	struct kube_request *r = *head;

	if (!r)
		return NULL;
	*head = r->wait_next;
	if (!*head)
		*tail = NULL;
	r->wait_next = NULL;
	r->waiting = false;
	return r;
}

/* ---------- libuv <-> libcurl wiring ---------- */

static void client_maybe_free(struct kube_client *c)
{
	if (c->torn_down && c->pending_closes == 0)
		free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
	struct kube_client *c = h->data;

	c->pending_closes--;
	client_maybe_free(c);
}

static void on_socket_closed(uv_handle_t *h)
{
	struct kube_socket *ks = (struct kube_socket *)h;
	struct kube_client *c = ks->c;

	free(ks);
	c->pending_closes--;
	client_maybe_free(c);
}

static void socket_close(struct kube_client *c, struct kube_socket *ks)
{
	if (ks->prev)
		ks->prev->next = ks->next;
	else
		c->sockets = ks->next;
	if (ks->next)
		ks->next->prev = ks->prev;
	c->pending_closes++;
	uv_close((uv_handle_t *)&ks->poll, on_socket_closed);
}

static void request_finish(struct kube_client *c, struct kube_request *r, CURLcode res);

/* Runs the callbacks of finished transfers. */
static void client_check_done(struct kube_client *c)
{
	struct kube_request *r;
	CURLMsg *msg;
	int left;

	c->dispatch_depth++;
	while (!c->destroying && (msg = curl_multi_info_read(c->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		r = NULL;
		if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r) !=
		    CURLE_OK || !r) {
			log_error("kube: finished transfer without a request");
			continue;
		}
		request_finish(c, r, msg->data.result);
	}
	c->dispatch_depth--;
}

/* Hands one waiting request to libcurl; false when the client went away
 * in the callback of a request that could not be started. */
static bool client_start_waiting(struct kube_client *c, struct kube_request *r)
{
	if (r->cancelled) {
		request_unlink(c, r);
		request_free(r);
	} else if (request_attach(c, r) < 0) {
		request_finish(c, r, CURLE_FAILED_INIT);
		if (c->destroying)
			return false;
	}
	return true;
}

/* Carries out removals recorded while libcurl was busy and hands waiting
 * requests over while there is room. Only with libcurl idle. */
static void client_flush(struct kube_client *c)
{
	struct kube_request *r, *next;

	if (c->curl_depth > 0 || c->destroying)
		return;
	if (c->cancelled_added) {
		c->cancelled_added = 0;
		for (r = c->head; r; r = next) {
			next = r->next;
			if (r->cancelled && r->added) {
				request_detach(c, r);
				request_unlink(c, r);
				request_free(r);
			}
		}
	}
	c->dispatch_depth++;
	while ((r = wait_pop(&c->wait_s_head, &c->wait_s_tail)))
		if (!client_start_waiting(c, r))
			goto out;
	while (c->active < c->max_active &&
	    (r = wait_pop(&c->wait_head, &c->wait_tail)))
		if (!client_start_waiting(c, r))
			goto out;
out:
	c->dispatch_depth--;
}

/* After libcurl returns: removals, finished transfers, waiting requests
 * (finished ones free slots), and a teardown asked for meanwhile. */
static void client_run_completions(struct kube_client *c)
{
	client_flush(c);
	if (!c->destroying)
		client_check_done(c);
	client_flush(c);
	if (c->destroying && c->curl_depth == 0 && c->dispatch_depth == 0)
		client_teardown(c);
}

static void on_kick(uv_timer_t *t)
{
	client_run_completions(t->data);
}

static void client_socket_action(struct kube_client *c, curl_socket_t s, int ev)
{
	CURLMcode mc;
	int running;

	if (c->destroying)
		return;
	c->curl_depth++;
	mc = curl_multi_socket_action(c->multi, s, ev, &running);
	c->curl_depth--;
	if (mc != CURLM_OK)
		log_error("kube: curl_multi_socket_action: %s", curl_multi_strerror(mc));
	client_run_completions(c);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct kube_socket *ks = (struct kube_socket *)h;
	int flags = 0;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	client_socket_action(ks->c, ks->fd, flags);
}

static void on_timer(uv_timer_t *t)
{
	client_socket_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct kube_client *c = userp;
	struct kube_socket *ks = socketp;
	int events = 0, rc;

	if (what == CURL_POLL_REMOVE) {
		if (ks) {
			curl_multi_assign(c->multi, s, NULL);
			socket_close(c, ks);
		}
		return 0;
	}
	if (!ks) {
		ks = calloc(1, sizeof(*ks));
		if (!ks) {
			log_error("kube: out of memory for a socket");
			return -1;
		}
		rc = uv_poll_init_socket(c->loop, &ks->poll, s);
		if (rc < 0) {
			log_error("kube: uv_poll_init_socket(%d): %s", (int)s, uv_strerror(rc));
			free(ks);
			return -1;
		}
		ks->c = c;
		ks->fd = s;
		ks->next = c->sockets;
		if (c->sockets)
			c->sockets->prev = ks;
		c->sockets = ks;
		if (curl_multi_assign(c->multi, s, ks) != CURLM_OK) {
			socket_close(c, ks);
			return -1;
		}
	}
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	rc = uv_poll_start(&ks->poll, events, on_poll);
	if (rc < 0) {
		log_error("kube: uv_poll_start(%d): %s", (int)s, uv_strerror(rc));
		return -1;
	}
	return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct kube_client *c = userp;
	int rc;

	if (timeout_ms < 0)
		return uv_timer_stop(&c->timer) < 0 ? -1 : 0;
	rc = uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
	if (rc < 0) {
		log_error("kube: uv_timer_start: %s", uv_strerror(rc));
		return -1;
	}
	return 0;
}

/* ---------- client ---------- */

struct kube_client *kube_client_create(uv_loop_t *loop, struct kube_config *cfg)
{
	struct kube_client *c;
	int rc;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("kube: curl_global_init failed");
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto fail_alloc;
	c->loop = loop;
	c->cfg = cfg;
	c->next_id = 1;
	c->max_active = KUBE_CLIENT_MAX_ACTIVE;
	c->multi = curl_multi_init();
	if (!c->multi)
		goto fail_multi;
	if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX) !=
	    CURLM_OK)
		goto fail_setopt;
	rc = uv_timer_init(loop, &c->timer);
	if (rc < 0) {
		log_error("kube: uv_timer_init: %s", uv_strerror(rc));
		goto fail_setopt;
	}
	c->timer.data = c;
	rc = uv_timer_init(loop, &c->kick);
	if (rc < 0) {
		/* The first timer is live: c goes in its close callback. */
		log_error("kube: uv_timer_init: %s", uv_strerror(rc));
		curl_multi_cleanup(c->multi);
		c->multi = NULL;
		c->torn_down = true;
		c->pending_closes = 1;
		uv_close((uv_handle_t *)&c->timer, on_handle_closed);
		return NULL;
	}
	c->kick.data = c;
	return c;
fail_setopt:
	curl_multi_cleanup(c->multi);
fail_multi:
	free(c);
fail_alloc:
	log_error("kube: cannot create the API client");
	return NULL;
}

static void client_teardown(struct kube_client *c)
{
	struct kube_request *r;

	if (c->torn_down)
		return;
	while ((r = c->head)) {
		request_detach(c, r);
		request_unlink(c, r);
		request_free(r);
	}
	curl_multi_cleanup(c->multi);
	c->multi = NULL;
	while (c->sockets)
		socket_close(c, c->sockets);
	c->wait_head = c->wait_tail = c->wait_s_head = c->wait_s_tail = NULL;
	c->pending_closes += 2;
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->kick, on_handle_closed);
	c->torn_down = true;
}

void kube_client_destroy(struct kube_client *c)
{
	if (!c || c->destroying)
		return;
	c->destroying = true;
	for (struct kube_request *r = c->head; r; r = r->next)
		r->cancelled = true;
	/* From inside a callback the teardown waits until libcurl and the
	 * dispatch loop have returned; see client_socket_action. */
	if (c->curl_depth == 0 && c->dispatch_depth == 0)
		client_teardown(c);
}

struct kube_config *kube_client_config(struct kube_client *c)
{
	return c->cfg;
}

uv_loop_t *kube_client_loop(struct kube_client *c)
{
	return c->loop;
}

/* ---------- responses ---------- */

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct kube_request *r = userdata;
	size_t n = size * nmemb;
	long status = 0;

	if (r->cancelled)
		return 0;
	if (r->on_data) {
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
		if (status >= 200 && status < 300) {
			if (r->on_data(ptr, n, r->data) < 0 || r->cancelled)
				return 0;
			return n;
		}
	}
	if (buf_append(&r->resp, ptr, n) < 0) {
		r->too_big = true;
		return 0;
	}
	return n;
}

static void request_finish(struct kube_client *c, struct kube_request *r, CURLcode res)
{
	struct kube_response resp = { .reason = "", .message = "" };
	char *message = NULL;
	json_error_t jerr;
	json_t *body = NULL;
	double ms;

	request_detach(c, r);
	request_unlink(c, r);
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
	kube_config_note_status(c->cfg, resp.status);
	if (r->resp.len > 0) {
		body = json_loadb(r->resp.data, r->resp.len, 0, &jerr);
		if (!body && res == CURLE_OK && !r->too_big)
			message = str_printf("invalid JSON in the response (HTTP %ld): %s",
			    resp.status, jerr.text);
	}
	resp.body = body;
	if (json_is_object(body) && strcmp(json_field_str(body, "kind"), "Status") == 0) {
		resp.reason = json_field_str(body, "reason");
		resp.message = json_field_str(body, "message");
	}
	if (r->too_big) {
		free(message);
		message = str_printf("response body exceeds %u bytes", KUBE_CLIENT_MAX_BODY);
	} else if (res != CURLE_OK) {
		free(message);
		message = str_printf("%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(res));
	} else if (!message && resp.status >= 400 && !resp.message[0]) {
		message = str_printf("HTTP %ld: %.200s", resp.status,
		    r->resp.data ? r->resp.data : "");
	}
	if (message)
		resp.message = message;
	ms = (double)(uv_hrtime() - r->started) / 1e6;
	if (log_enabled(LOG_LEVEL_DEBUG)) {
		long version = 0;

		curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &version);
		log_debug("kube: %s %s => %ld %s (%s, %.1f ms)", r->method, r->path,
		    resp.status, resp.message, version == CURL_HTTP_VERSION_2_0 ? "h2" :
		    version == CURL_HTTP_VERSION_1_1 ? "http/1.1" : "-", ms);
	}
	if (!r->cancelled && r->cb)
		r->cb(&resp, r->data);
	json_decref(body);
	free(message);
	request_free(r);
}

/* ---------- paths ---------- */

char *kube_url_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	struct buf b;

	buf_init(&b, 3 * strlen(s) + 1);
	if (buf_append(&b, "", 0) < 0)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char enc[3] = { '%', hex[*p >> 4], hex[*p & 15] };

		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			if (buf_append(&b, p, 1) < 0)
				goto fail;
		} else if (buf_append(&b, enc, 3) < 0) {
			goto fail;
		}
	}
	return buf_steal(&b);
fail:
	buf_finish(&b);
	return NULL;
}

static int append_segment(struct buf *b, const char *seg)
{
	char *esc = kube_url_escape(seg);
	int rc;

	if (!esc)
		return -1;
	rc = buf_printf(b, "/%s", esc);
	free(esc);
	return rc;
}

char *kube_path(const struct kube_resource *r, const char *ns, const char *name,
    const char *subresource, const char *query)
{
	struct buf b;

	buf_init(&b, 1 << 16);
	if (r->group[0]) {
		if (buf_append_str(&b, "/apis") < 0 || append_segment(&b, r->group) < 0)
			goto fail;
	} else if (buf_append_str(&b, "/api") < 0) {
		goto fail;
	}
	if (append_segment(&b, r->version) < 0)
		goto fail;
	if (r->namespaced && ns && ns[0]) {
		if (buf_append_str(&b, "/namespaces") < 0 || append_segment(&b, ns) < 0)
			goto fail;
	}
	if (append_segment(&b, r->plural) < 0)
		goto fail;
	if (name && name[0]) {
		if (append_segment(&b, name) < 0)
			goto fail;
		if (subresource && subresource[0] && append_segment(&b, subresource) < 0)
			goto fail;
	}
	if (query && query[0] && buf_printf(&b, "?%s", query) < 0)
		goto fail;
	return buf_steal(&b);
fail:
	buf_finish(&b);
	return NULL;
}

/* ---------- starting requests ---------- */

static int request_setup(struct kube_client *c, struct kube_request *r,
    const char *content_type, uint64_t timeout_ms)
{
	char *url = NULL, *ct = NULL, *err = NULL;
	struct curl_slist *h;
	CURL *e = r->easy;
	int rc = -1;

	url = str_printf("%s%s", kube_config_request_base(c->cfg), r->path);
	if (!url)
		goto out;
	if (curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_PRIVATE, r) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS) !=
	    CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "") != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_USERAGENT, "nrbc/" NRBC_VERSION) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
		(long)KUBE_CLIENT_CONNECT_TIMEOUT_MS) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms) != CURLE_OK ||
	    /* Keepalive notices a dead API server behind an idle watch. */
	    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L) != CURLE_OK)
		goto curl_fail;
	if (strcmp(r->method, "GET") == 0) {
		if (curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) != CURLE_OK)
			goto curl_fail;
	} else if (curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method) != CURLE_OK) {
		goto curl_fail;
	}
	if (r->body) {
		if (curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body)) !=
		    CURLE_OK ||
		    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body) != CURLE_OK)
			goto curl_fail;
		ct = str_printf("Content-Type: %s", content_type ? content_type :
		    "application/json");
		if (!ct || !(h = curl_slist_append(r->headers, ct)))
			goto out;
		r->headers = h;
	}
	if (!(h = curl_slist_append(r->headers, "Accept: application/json")))
		goto out;
	r->headers = h;
	if (kube_config_apply(c->cfg, e, &r->headers, &err) < 0) {
		log_error("kube: %s %s: %s", r->method, r->path, err);
		goto out;
	}
	if (curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers) != CURLE_OK)
		goto curl_fail;
	rc = 0;
	goto out;
curl_fail:
	log_error("kube: %s %s: libcurl refused an option", r->method, r->path);
out:
	free(err);
	free(ct);
	free(url);
	return rc;
}

static uint64_t request_start(struct kube_client *c, const char *method, const char *path,
    const json_t *body, const char *content_type, uint64_t timeout_ms, kube_data_cb on_data,
    kube_response_cb cb, void *data)
{
	struct kube_request *r;

	if (!path || c->destroying)
		return 0;
	r = calloc(1, sizeof(*r));
	if (!r)
		goto fail;
	buf_init(&r->resp, KUBE_CLIENT_MAX_BODY);
	r->c = c;
	r->cb = cb;
	r->on_data = on_data;
	r->data = data;
	r->started = uv_hrtime();
	r->method = strdup(method);
	r->path = strdup(path);
	r->easy = curl_easy_init();
	if (!r->method || !r->path || !r->easy)
		goto fail;
	if (body) {
		r->body = json_dumps(body, JSON_COMPACT);
		if (!r->body)
			goto fail;
	}
	if (request_setup(c, r, content_type, timeout_ms) < 0)
		goto fail;
	r->id = c->next_id++;
	request_link(c, r);
	if (c->curl_depth > 0 || (!on_data && c->active >= c->max_active) ||
	    (!on_data && c->wait_head)) {
		/* libcurl is busy (we are inside one of its callbacks), or
		 * the client is at its limit: the FIFO keeps the order. */
		if (on_data)
			wait_push(&c->wait_s_head, &c->wait_s_tail, r);
		else
			wait_push(&c->wait_head, &c->wait_tail, r);
	} else if (request_attach(c, r) < 0) {
		request_unlink(c, r);
		goto fail;
	}
	log_debug("kube: %s %s (request %llu)", method, path, (unsigned long long)r->id);
	return r->id;
fail:
	log_error("kube: cannot start %s %s", method, path);
	request_free(r);
	return 0;
}

uint64_t kube_client_request(struct kube_client *c, const char *method, const char *path,
    const json_t *body, const char *content_type, uint64_t timeout_ms, kube_response_cb cb,
    void *data)
{
	return request_start(c, method, path, body, content_type,
	    timeout_ms ? timeout_ms : KUBE_CLIENT_DEFAULT_TIMEOUT_MS, NULL, cb, data);
}

uint64_t kube_client_stream(struct kube_client *c, const char *path, uint64_t timeout_ms,
    kube_data_cb on_data, kube_response_cb cb, void *data)
{
	return request_start(c, "GET", path, NULL, NULL, timeout_ms, on_data, cb, data);
}

void kube_client_cancel(struct kube_client *c, uint64_t id)
{
	struct kube_request *r;

	if (!c || id == 0)
		return;
	r = request_find(c, id);
	if (!r || r->cancelled)
		return;
	r->cancelled = true;
	if (r->waiting)
		return; /* freed when its FIFO reaches it */
	if (c->curl_depth > 0 && r->added) {
		/* Maybe inside this very request's write callback: free later. */
		c->cancelled_added++;
		return;
	}
	request_detach(c, r);
	request_unlink(c, r);
	request_free(r);
	/* A slot is free; callbacks may not run inside cancel, so later. */
	if (c->wait_head && uv_timer_start(&c->kick, on_kick, 0, 0) < 0)
		log_error("kube: cannot schedule waiting requests");
}

/* ---------- typed helpers ---------- */

static uint64_t path_request(struct kube_client *c, const char *method, char *path,
    const json_t *body, const char *content_type, kube_response_cb cb, void *data)
{
	uint64_t id;

	if (!path) {
		log_error("kube: out of memory building a path");
		return 0;
	}
	id = kube_client_request(c, method, path, body, content_type, 0, cb, data);
	free(path);
	return id;
}

uint64_t kube_get(struct kube_client *c, const struct kube_resource *r, const char *ns,
    const char *name, kube_response_cb cb, void *data)
{
	return path_request(c, "GET", kube_path(r, ns, name, NULL, NULL), NULL, NULL, cb, data);
}

uint64_t kube_list(struct kube_client *c, const struct kube_resource *r, const char *ns,
    const char *label_selector, const char *continue_token, long limit, kube_response_cb cb,
    void *data)
{
	struct buf q;
	char *esc;
	uint64_t id = 0;

	buf_init(&q, 1 << 16);
	if (buf_append(&q, "", 0) < 0)
		goto out;
	if (limit > 0 && buf_printf(&q, "limit=%ld", limit) < 0)
		goto out;
	if (continue_token && continue_token[0]) {
		esc = kube_url_escape(continue_token);
		if (!esc || buf_printf(&q, "%scontinue=%s", q.len ? "&" : "", esc) < 0) {
			free(esc);
			goto out;
		}
		free(esc);
	}
	if (label_selector && label_selector[0]) {
		esc = kube_url_escape(label_selector);
		if (!esc || buf_printf(&q, "%slabelSelector=%s", q.len ? "&" : "", esc) < 0) {
			free(esc);
			goto out;
		}
		free(esc);
	}
	id = path_request(c, "GET", kube_path(r, ns, NULL, NULL, q.data), NULL, NULL, cb, data);
out:
	buf_finish(&q);
	return id;
}

uint64_t kube_create(struct kube_client *c, const struct kube_resource *r, const char *ns,
    const json_t *obj, kube_response_cb cb, void *data)
{
	return path_request(c, "POST", kube_path(r, ns, NULL, NULL, NULL), obj, NULL, cb, data);
}

uint64_t kube_update(struct kube_client *c, const struct kube_resource *r, const char *ns,
    const char *name, const json_t *obj, kube_response_cb cb, void *data)
{
	return path_request(c, "PUT", kube_path(r, ns, name, NULL, NULL), obj, NULL, cb, data);
}

uint64_t kube_update_status(struct kube_client *c, const struct kube_resource *r,
    const char *ns, const char *name, const json_t *obj, kube_response_cb cb, void *data)
{
	return path_request(c, "PUT", kube_path(r, ns, name, "status", NULL), obj, NULL, cb,
	    data);
}

uint64_t kube_patch_merge(struct kube_client *c, const struct kube_resource *r,
    const char *ns, const char *name, const json_t *patch, bool status_subresource,
    kube_response_cb cb, void *data)
{
	return path_request(c, "PATCH",
	    kube_path(r, ns, name, status_subresource ? "status" : NULL, NULL), patch,
	    "application/merge-patch+json", cb, data);
}

uint64_t kube_delete(struct kube_client *c, const struct kube_resource *r, const char *ns,
    const char *name, const char *precondition_uid, const char *propagation,
    kube_response_cb cb, void *data)
{
	json_t *opts = NULL;
	uint64_t id;

	if (precondition_uid || propagation) {
		opts = json_pack("{s:s, s:s}", "kind", "DeleteOptions", "apiVersion", "v1");
		if (!opts)
			return 0;
		if (precondition_uid &&
		    json_object_set_new(opts, "preconditions",
			json_pack("{s:s}", "uid", precondition_uid)) < 0)
			goto fail;
		if (propagation &&
		    json_object_set_new(opts, "propagationPolicy", json_string(propagation)) < 0)
			goto fail;
	}
	id = path_request(c, "DELETE", kube_path(r, ns, name, NULL, NULL), opts, NULL, cb, data);
	json_decref(opts);
	return id;
fail:
	json_decref(opts);
	log_error("kube: out of memory building DeleteOptions");
	return 0;
}
