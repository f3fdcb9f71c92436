#include "kube_event.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "log.h"
#include "json_field.h"

/* Names are DNS subdomains (253); the suffix is "." + 16 hex digits. */
#define EVENT_NAME_MAX 253
#define EVENT_SUFFIX_LEN 17

struct event_send {
	struct kube_event_recorder *recorder;
	uint64_t id;
	char *what; /* "Reason ns/name", for the log */
	struct event_send *next;
};

struct kube_event_recorder {
	struct kube_client *client;
	char *component;
	char *instance;
	size_t max_in_flight;
	size_t in_flight;
	struct event_send *sends;
	uint64_t seq;
	uint64_t sent;
	uint64_t failed;
	uint64_t dropped;
};

static void format_time(int64_t ms, char out[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, 32, "1970-01-01T00:00:00Z");
}

/* The longest prefix of s of at most max bytes that does not split a UTF-8
 * sequence. */
static size_t utf8_prefix(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n <= max)
		return n;
	n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

static char *api_version(const struct kube_resource *res)
{
	if (!res->group || !*res->group)
		return strdup(res->version);
	return str_printf("%s/%s", res->group, res->version);
}

json_t *kube_event_build(const json_t *obj, const struct kube_resource *res,
    const char *type, const char *reason, const char *message, const char *component,
    const char *instance, int64_t now_ms, uint64_t seq)
{
	const json_t *meta = json_object_get(obj, "metadata");
	const char *name = json_field_str(meta, "name");
	const char *ns = json_field_str(meta, "namespace");
	char *apiv = api_version(res);
	char *event_name = NULL;
	char *msg = NULL;
	char now[32];
	json_t *ev = NULL;
	int name_len = (int)utf8_prefix(name, EVENT_NAME_MAX - EVENT_SUFFIX_LEN);

	if (!apiv || !*name)
		goto out;
	/* Like client-go: the object's name, a dot, a number unique per
	 * recorder (here the time in ms mixed with a sequence number). */
	event_name = str_printf("%.*s.%016llx", name_len, name,
	    (unsigned long long)(((uint64_t)now_ms << 16) ^ seq));
	msg = str_printf("%.*s", (int)utf8_prefix(message, KUBE_EVENT_MAX_MESSAGE), message);
	if (!event_name || !msg)
		goto out;
	format_time(now_ms, now);
	ev = json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s,s:s,s:s,s:s,s:s,s:s},"
	               "s:s,s:s,s:s,s:{s:s,s:s},s:s,s:s,s:i,s:s,s:s}",
	    "apiVersion", "v1",
	    "kind", "Event",
	    "metadata", "name", event_name, "namespace", *ns ? ns : "default",
	    "involvedObject", "apiVersion", apiv, "kind", res->kind, "name", name,
	    "namespace", ns, "uid", json_field_str(meta, "uid"),
	    "resourceVersion", json_field_str(meta, "resourceVersion"),
	    "type", type,
	    "reason", reason,
	    "message", msg,
	    "source", "component", component, "host", instance,
	    "firstTimestamp", now,
	    "lastTimestamp", now,
	    "count", 1,
	    "reportingComponent", component,
	    "reportingInstance", instance);
out:
	free(apiv);
	free(event_name);
	free(msg);
	return ev;
}

struct kube_event_recorder *kube_event_recorder_create(struct kube_client *c,
    const char *component, const char *instance, size_t max_in_flight)
{
	struct kube_event_recorder *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->client = c;
	r->component = strdup(component);
	r->instance = strdup(instance);
	r->max_in_flight = max_in_flight ? max_in_flight : 1;
	if (!r->component || !r->instance) {
		kube_event_recorder_destroy(r);
		return NULL;
	}
	return r;
}

static void send_unlink(struct kube_event_recorder *r, struct event_send *s)
{
	for (struct event_send **p = &r->sends; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	r->in_flight--;
	free(s->what);
	free(s);
}

void kube_event_recorder_destroy(struct kube_event_recorder *r)
{
	if (!r)
		return;
	while (r->sends) {
		struct event_send *s = r->sends;

		kube_client_cancel(r->client, s->id);
		send_unlink(r, s);
	}
	free(r->component);
	free(r->instance);
	free(r);
}

static void on_event_sent(const struct kube_response *resp, void *data)
{
	struct event_send *s = data;
	struct kube_event_recorder *r = s->recorder;

	if (resp->status >= 200 && resp->status < 300) {
		r->sent++;
	} else {
		r->failed++;
		log_warnx("event %s not recorded: HTTP %ld %s %s", s->what, resp->status,
		    resp->reason, resp->message);
	}
	send_unlink(r, s);
}

int kube_event_record(struct kube_event_recorder *r, const json_t *obj,
    const struct kube_resource *res, const char *type, const char *reason,
    const char *message)
{
	struct timespec ts;
	struct event_send *s = NULL;
	json_t *ev = NULL;
	const char *ns;

	if (r->in_flight >= r->max_in_flight)
		goto drop;
	clock_gettime(CLOCK_REALTIME, &ts);
	ev = kube_event_build(obj, res, type, reason, message, r->component, r->instance,
	    (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, ++r->seq);
	s = calloc(1, sizeof(*s));
	if (!ev || !s)
		goto drop;
	ns = json_string_value(json_object_get(json_object_get(ev, "metadata"), "namespace"));
	s->recorder = r;
	s->what = str_printf("%s %s/%s", reason, ns,
	    json_string_value(json_object_get(json_object_get(obj, "metadata"), "name")));
	if (!s->what)
		goto drop;
	s->id = kube_create(r->client, &kube_resource_events, ns, ev, on_event_sent, s);
	if (!s->id)
		goto drop;
	s->next = r->sends;
	r->sends = s;
	r->in_flight++;
	json_decref(ev);
	return 0;
drop:
	if (s)
		free(s->what);
	free(s);
	json_decref(ev);
	r->dropped++;
	log_debug("event %s about %s dropped (%zu in flight)", reason,
	    json_string_value(json_object_get(json_object_get(obj, "metadata"), "name")),
	    r->in_flight);
	return -1;
}

uint64_t kube_event_recorder_sent(const struct kube_event_recorder *r)
{
	return r->sent;
}

uint64_t kube_event_recorder_failed(const struct kube_event_recorder *r)
{
	return r->failed;
}

uint64_t kube_event_recorder_dropped(const struct kube_event_recorder *r)
{
	return r->dropped;
}
