#include "kube_lease.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "json_field.h"

enum lease_state {
	LEASE_IDLE,
	LEASE_CANDIDATE,
	LEASE_LEADING,
	LEASE_RELEASING,
	LEASE_STOPPED,
	LEASE_STATE_COUNT,
};

static const char *const lease_state_names[LEASE_STATE_COUNT] = {
	[LEASE_IDLE] = "idle",
	[LEASE_CANDIDATE] = "candidate",
	[LEASE_LEADING] = "leading",
	[LEASE_RELEASING] = "releasing",
	[LEASE_STOPPED] = "stopped",
};

struct kube_lease {
	struct kube_client *client;
	uv_loop_t *loop;
	uv_timer_t timer;
	enum lease_state state;
	char *ns;
	char *name;
	char *identity;
	uint64_t duration_ms;
	uint64_t renew_deadline_ms;
	uint64_t retry_ms;
	struct kube_lease_callbacks cb;
	void *data;

	uint64_t request;        /* id of the request in flight, 0 when none */
	json_t *lease;           /* the lease as last read or written */
	char *observed_record;   /* its record when it last changed ... */
	uint64_t observed_at;    /* ... and when (loop clock, ms) */
	uint64_t renewed_at;     /* our last successful write as holder */
	bool release_retried;
	void (*release_done)(void *data);
	void *release_data;
};

static void lease_tick(uv_timer_t *t);
static void lease_on_get(const struct kube_response *resp, void *data);
static void lease_on_write(const struct kube_response *resp, void *data);

static int64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void kube_lease_format_time(int64_t us, char out[40])
{
	time_t t = (time_t)(us / 1000000);
	struct tm tm;
	char base[24];

	if (!gmtime_r(&t, &tm) || !strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm))
		snprintf(base, sizeof(base), "1970-01-01T00:00:00");
	snprintf(out, 40, "%s.%06dZ", base, (int)(us % 1000000));
}

char *kube_lease_identity(void)
{
	const char *pod = getenv("POD_NAME");
	unsigned char rnd[8];
	char host[256];
	char hex[17];

	if (!pod || !*pod) {
		if (gethostname(host, sizeof(host)) < 0)
			snprintf(host, sizeof(host), "nrbc");
		host[sizeof(host) - 1] = '\0';
		pod = host;
	}
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return NULL;
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
	return str_printf("%s_%s", pod, hex);
}

enum kube_lease_action kube_lease_decide(const json_t *lease, const char *identity,
    bool expired)
{
	const char *holder = json_field_str(json_object_get(lease, "spec"), "holderIdentity");

	if (strcmp(holder, identity) == 0)
		return KUBE_LEASE_RENEW;
	if (!*holder || expired)
		return KUBE_LEASE_ACQUIRE;
	return KUBE_LEASE_WAIT;
}

char *kube_lease_record(const json_t *lease)
{
	const json_t *spec = json_object_get(lease, "spec");

	return spec ? json_dumps(spec, JSON_SORT_KEYS | JSON_COMPACT) : strdup("");
}

json_t *kube_lease_build(const json_t *current, const char *ns, const char *name,
    const char *identity, uint64_t duration_ms, enum kube_lease_write what, int64_t now_us)
{
	json_int_t duration_s = (json_int_t)((duration_ms + 999) / 1000);
	char now[40];
	json_t *lease;
	json_t *spec;
	const char *old_holder;

	kube_lease_format_time(now_us, now);
	if (!current)
		return json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s,s:I,s:s,s:s,s:i}}",
		    "apiVersion", "coordination.k8s.io/v1", "kind", "Lease",
		    "metadata", "name", name, "namespace", ns,
		    "spec", "holderIdentity", what == KUBE_LEASE_WRITE_RELEASE ? "" : identity,
		    "leaseDurationSeconds", duration_s, "acquireTime", now, "renewTime", now,
		    "leaseTransitions", 0);
	lease = json_deep_copy(current);
	if (!lease)
		return NULL;
	spec = json_object_get(lease, "spec");
	if (!json_is_object(spec)) {
		if (json_object_set_new(lease, "spec", json_object()) < 0)
			goto fail;
		spec = json_object_get(lease, "spec");
	}
	old_holder = json_field_str(spec, "holderIdentity");
	switch (what) {
	case KUBE_LEASE_WRITE_ACQUIRE:
		if (strcmp(old_holder, identity) != 0) {
			json_int_t transitions = json_integer_value(json_object_get(spec,
			    "leaseTransitions"));

			if (json_object_set_new(spec, "acquireTime", json_string(now)) < 0 ||
			    json_object_set_new(spec, "leaseTransitions",
			        json_integer(transitions + 1)) < 0)
				goto fail;
		}
		/* fall through */
	case KUBE_LEASE_WRITE_RENEW:
		if (json_object_set_new(spec, "holderIdentity", json_string(identity)) < 0 ||
		    json_object_set_new(spec, "leaseDurationSeconds", json_integer(duration_s)) < 0 ||
		    json_object_set_new(spec, "renewTime", json_string(now)) < 0)
			goto fail;
		break;
	case KUBE_LEASE_WRITE_RELEASE:
		if (json_object_set_new(spec, "holderIdentity", json_string("")) < 0 ||
		    json_object_set_new(spec, "leaseDurationSeconds", json_integer(1)) < 0 ||
		    json_object_set_new(spec, "acquireTime", json_string(now)) < 0 ||
		    json_object_set_new(spec, "renewTime", json_string(now)) < 0)
			goto fail;
		break;
	}
	return lease;
fail:
	json_decref(lease);
	return NULL;
}

static void set_state(struct kube_lease *l, enum lease_state next)
{
	if (l->state == next)
		return;
	log_debug("lease %s/%s: %s => %s", l->ns, l->name, lease_state_names[l->state],
	    lease_state_names[next]);
	l->state = next;
}

static void schedule(struct kube_lease *l, uint64_t ms)
{
	uv_timer_start(&l->timer, lease_tick, ms, 0);
}

/* Candidates wait a little longer than the period, at random, so replicas
 * that started together do not keep colliding. */
static uint64_t jittered(uint64_t ms)
{
	unsigned short r = 0;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
		r = 0;
	return ms + ms * (r % 200) / 1000;
}

static uint64_t request_timeout(const struct kube_lease *l)
{
	return l->renew_deadline_ms / 2 ? l->renew_deadline_ms / 2 : 1000;
}

static void keep_lease(struct kube_lease *l, const json_t *lease)
{
	char *record = kube_lease_record(lease);

	json_decref(l->lease);
	l->lease = json_deep_copy(lease);
	if (!record)
		return;
	if (!l->observed_record || strcmp(record, l->observed_record) != 0) {
		free(l->observed_record);
		l->observed_record = record;
		l->observed_at = uv_now(l->loop);
	} else {
		free(record);
	}
}

static bool lease_expired(const struct kube_lease *l)
{
	const json_t *d = json_object_get(json_object_get(l->lease, "spec"),
	    "leaseDurationSeconds");
	uint64_t duration = json_integer_value(d) > 0 ? (uint64_t)json_integer_value(d) * 1000 :
	    l->duration_ms;

	return uv_now(l->loop) - l->observed_at >= duration;
}

/* Leading ends, campaigning goes on: the owner stops acting at once, and
 * gets started_leading again if this process wins the lease back (at once
 * when the record still names it, e.g. after an API outage nobody else
 * could act in; else once the other holder's record is seen unchanged for
 * its lease duration). */
static void lose(struct kube_lease *l, const char *why)
{
	log_error("lease %s/%s: leadership lost: %s; campaigning again", l->ns, l->name, why);
	uv_timer_stop(&l->timer);
	set_state(l, LEASE_CANDIDATE);
	schedule(l, jittered(l->retry_ms));
	if (l->cb.stopped_leading)
		l->cb.stopped_leading(l->data);
}

static void write_lease(struct kube_lease *l, enum kube_lease_write what)
{
	json_t *obj = kube_lease_build(l->lease, l->ns, l->name, l->identity, l->duration_ms,
	    what, wall_us());

	if (!obj) {
		log_error("lease %s/%s: out of memory", l->ns, l->name);
		schedule(l, l->retry_ms);
		return;
	}
	l->request = 0;
	if (l->lease) {
		char *path = kube_path(&kube_resource_leases, l->ns, l->name, NULL, NULL);

		if (path)
			l->request = kube_client_request(l->client, "PUT", path, obj, NULL,
			    request_timeout(l), lease_on_write, l);
		free(path);
	} else {
		char *path = kube_path(&kube_resource_leases, l->ns, NULL, NULL, NULL);

		if (path)
			l->request = kube_client_request(l->client, "POST", path, obj, NULL,
			    request_timeout(l), lease_on_write, l);
		free(path);
	}
	json_decref(obj);
	if (!l->request) {
		log_error("lease %s/%s: cannot start the request", l->ns, l->name);
		schedule(l, l->retry_ms);
	}
}

static void read_lease(struct kube_lease *l)
{
	char *path = kube_path(&kube_resource_leases, l->ns, l->name, NULL, NULL);

	l->request = path ? kube_client_request(l->client, "GET", path, NULL, NULL,
	    request_timeout(l), lease_on_get, l) : 0;
	free(path);
	if (!l->request)
		schedule(l, l->retry_ms);
}

static bool renew_deadline_passed(const struct kube_lease *l)
{
	return uv_now(l->loop) - l->renewed_at > l->renew_deadline_ms;
}

static void lease_tick(uv_timer_t *t)
{
	struct kube_lease *l = t->data;

	if (l->request)
		return;
	switch (l->state) {
	case LEASE_CANDIDATE:
		read_lease(l);
		break;
	case LEASE_LEADING:
		if (renew_deadline_passed(l)) {
			lose(l, "no renewal within the renew deadline");
			return;
		}
		/* Renew from the lease we last wrote: no read needed while
		 * nobody else writes it; a 409 sends us back to reading. */
		write_lease(l, KUBE_LEASE_WRITE_RENEW);
		break;
	case LEASE_IDLE:
	case LEASE_RELEASING:
	case LEASE_STOPPED:
		break;
	case LEASE_STATE_COUNT:
		break;
	}
}

static void lease_on_get(const struct kube_response *resp, void *data)
{
	struct kube_lease *l = data;
	enum kube_lease_action action;

	l->request = 0;
	if (resp->status == 404) {
		json_decref(l->lease);
		l->lease = NULL;
		if (l->state == LEASE_LEADING) {
			lose(l, "the lease was deleted");
			return;
		}
		write_lease(l, KUBE_LEASE_WRITE_ACQUIRE);
		return;
	}
	if (resp->status != 200 || !json_is_object(resp->body)) {
		log_warnx("lease %s/%s: read failed: HTTP %ld %s", l->ns, l->name, resp->status,
		    resp->message);
		schedule(l, l->retry_ms);
		return;
	}
	keep_lease(l, resp->body);
	action = kube_lease_decide(l->lease, l->identity, lease_expired(l));
	if (l->state == LEASE_LEADING && action != KUBE_LEASE_RENEW) {
		lose(l, "another holder took the lease");
		return;
	}
	switch (action) {
	case KUBE_LEASE_WAIT:
		schedule(l, jittered(l->retry_ms));
		break;
	case KUBE_LEASE_ACQUIRE:
		log_info("lease %s/%s: taking over from \"%s\"", l->ns, l->name,
		    json_field_str(json_object_get(l->lease, "spec"), "holderIdentity"));
		write_lease(l, KUBE_LEASE_WRITE_ACQUIRE);
		break;
	case KUBE_LEASE_RENEW:
		write_lease(l, l->state == LEASE_LEADING ? KUBE_LEASE_WRITE_RENEW :
		    KUBE_LEASE_WRITE_ACQUIRE);
		break;
	}
}

static void lease_on_write(const struct kube_response *resp, void *data)
{
	struct kube_lease *l = data;

	l->request = 0;
	if ((resp->status == 200 || resp->status == 201) && json_is_object(resp->body)) {
		keep_lease(l, resp->body);
		l->renewed_at = uv_now(l->loop);
		schedule(l, l->retry_ms);
		if (l->state == LEASE_CANDIDATE) {
			set_state(l, LEASE_LEADING);
			log_info("lease %s/%s: leading as %s", l->ns, l->name, l->identity);
			if (l->cb.started_leading)
				l->cb.started_leading(l->data);
		}
		return;
	}
	if (resp->status == 409) {
		/* Someone wrote in between (a rival, or a create race): read
		 * again and decide on what is there now. */
		log_debug("lease %s/%s: conflict, reading again", l->ns, l->name);
		read_lease(l);
		return;
	}
	log_warnx("lease %s/%s: write failed: HTTP %ld %s", l->ns, l->name, resp->status,
	    resp->message);
	if (l->state == LEASE_LEADING && renew_deadline_passed(l)) {
		lose(l, "no renewal within the renew deadline");
		return;
	}
	schedule(l, l->retry_ms);
}

struct kube_lease *kube_lease_create(struct kube_client *c, const struct kube_lease_options *o,
    const struct kube_lease_callbacks *cb, void *data)
{
	struct kube_lease *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->client = c;
	l->loop = kube_client_loop(c);
	l->ns = strdup(o->namespace);
	l->name = strdup(o->name);
	l->identity = strdup(o->identity);
	if (!l->ns || !l->name || !l->identity || uv_timer_init(l->loop, &l->timer) < 0) {
		free(l->ns);
		free(l->name);
		free(l->identity);
		free(l);
		return NULL;
	}
	l->timer.data = l;
	l->duration_ms = o->lease_duration_ms ? o->lease_duration_ms : 15000;
	l->renew_deadline_ms = o->renew_deadline_ms ? o->renew_deadline_ms : 10000;
	l->retry_ms = o->retry_period_ms ? o->retry_period_ms : 2000;
	if (cb)
		l->cb = *cb;
	l->data = data;
	return l;
}

int kube_lease_start(struct kube_lease *l)
{
	if (l->state != LEASE_IDLE)
		return -1;
	set_state(l, LEASE_CANDIDATE);
	l->observed_at = uv_now(l->loop);
	schedule(l, 0);
	return 0;
}

bool kube_lease_is_leader(const struct kube_lease *l)
{
	return l && l->state == LEASE_LEADING;
}

static void release_finish(struct kube_lease *l)
{
	void (*done)(void *) = l->release_done;

	set_state(l, LEASE_STOPPED);
	l->release_done = NULL;
	if (done)
		done(l->release_data);
}

static void release_on_timer(uv_timer_t *t)
{
	release_finish(t->data);
}

static void release_write(struct kube_lease *l);

static void release_on_get(const struct kube_response *resp, void *data)
{
	struct kube_lease *l = data;

	l->request = 0;
	if (resp->status == 200 && json_is_object(resp->body) &&
	    kube_lease_decide(resp->body, l->identity, false) == KUBE_LEASE_RENEW) {
		keep_lease(l, resp->body);
		release_write(l);
		return;
	}
	release_finish(l);
}

static void release_on_write(const struct kube_response *resp, void *data)
{
	struct kube_lease *l = data;

	l->request = 0;
	if (resp->status == 200) {
		log_info("lease %s/%s: released", l->ns, l->name);
	} else if (resp->status == 409 && !l->release_retried) {
		/* A renewal we cancelled may have landed after all. */
		char *path = kube_path(&kube_resource_leases, l->ns, l->name, NULL, NULL);

		l->release_retried = true;
		l->request = path ? kube_client_request(l->client, "GET", path, NULL, NULL,
		    request_timeout(l), release_on_get, l) : 0;
		free(path);
		if (l->request)
			return;
	} else {
		log_warnx("lease %s/%s: release failed: HTTP %ld %s (it expires by itself)",
		    l->ns, l->name, resp->status, resp->message);
	}
	release_finish(l);
}

static void release_write(struct kube_lease *l)
{
	json_t *obj = kube_lease_build(l->lease, l->ns, l->name, l->identity, l->duration_ms,
	    KUBE_LEASE_WRITE_RELEASE, wall_us());
	char *path = kube_path(&kube_resource_leases, l->ns, l->name, NULL, NULL);

	l->request = obj && path ? kube_client_request(l->client, "PUT", path, obj, NULL,
	    request_timeout(l), release_on_write, l) : 0;
	json_decref(obj);
	free(path);
	if (!l->request)
		uv_timer_start(&l->timer, release_on_timer, 0, 0);
}

void kube_lease_release(struct kube_lease *l, void (*done)(void *data), void *data)
{
	bool leading = l->state == LEASE_LEADING && l->lease;

	if (l->request) {
		kube_client_cancel(l->client, l->request);
		l->request = 0;
	}
	uv_timer_stop(&l->timer);
	l->release_done = done;
	l->release_data = data;
	set_state(l, LEASE_RELEASING);
	if (leading)
		release_write(l);
	else
		uv_timer_start(&l->timer, release_on_timer, 0, 0);
}

static void lease_on_close(uv_handle_t *h)
{
	free(h->data);
}

void kube_lease_destroy(struct kube_lease *l)
{
	if (!l)
		return;
	if (l->request)
		kube_client_cancel(l->client, l->request);
	json_decref(l->lease);
	free(l->observed_record);
	free(l->ns);
	free(l->name);
	free(l->identity);
	uv_close((uv_handle_t *)&l->timer, lease_on_close);
}
