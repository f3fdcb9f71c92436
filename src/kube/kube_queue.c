#include "kube_queue.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* One per key that is queued, waiting, being processed or backing off. */
struct queue_item {
	struct queue_item *hnext;        /* hash chain */
	struct queue_item *qnext;        /* FIFO of ready keys */
	struct queue_item *wprev, *wnext; /* waiting keys, sorted by due */
	char *key;
	uint64_t due; /* loop time (ms) at which a waiting key becomes ready */
	unsigned failures;
	bool queued;
	bool processing;
	bool dirty; /* added again while processing */
	bool waiting;
};

struct kube_queue {
	uv_loop_t *loop;
	size_t max_in_flight;
	uint64_t base_ms;
	uint64_t max_ms;
	kube_queue_process_cb process;
	void *data;
	struct queue_item **buckets;
	size_t nbuckets;
	size_t nitems;
	struct queue_item *qhead, *qtail;
	size_t depth;
	struct queue_item *whead;
	size_t in_flight;
	uv_idle_t idle;   /* dispatches outside of kube_queue_add's caller */
	uv_timer_t timer; /* the earliest waiting key */
	bool paused;
	bool destroyed;
	int pending_closes;
};

/* ---------- the key table ---------- */

static size_t key_hash(const char *key)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
		h ^= *p;
		h *= 0x100000001b3ull;
	}
	return (size_t)h;
}

static struct queue_item *item_find(const struct kube_queue *q, const char *key)
{
	for (struct queue_item *it = q->buckets[key_hash(key) & (q->nbuckets - 1)]; it;
	    it = it->hnext)
		if (strcmp(it->key, key) == 0)
			return it;
	return NULL;
}

static void table_grow(struct kube_queue *q)
{
	size_t n = q->nbuckets * 2;
	struct queue_item **b = calloc(n, sizeof(*b));

	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < q->nbuckets; i++) {
		struct queue_item *it, *next;

		for (it = q->buckets[i]; it; it = next) {
			next = it->hnext;
			it->hnext = b[key_hash(it->key) & (n - 1)];
			b[key_hash(it->key) & (n - 1)] = it;
		}
	}
	free(q->buckets);
	q->buckets = b;
	q->nbuckets = n;
}

static struct queue_item *item_get(struct kube_queue *q, const char *key)
{
	struct queue_item *it = item_find(q, key);
	size_t slot;

	if (it)
		return it;
	it = calloc(1, sizeof(*it));
	if (!it || !(it->key = strdup(key))) {
		free(it);
		log_error("kube: queue: out of memory adding %s", key);
		return NULL;
	}
	if (q->nitems >= q->nbuckets)
		table_grow(q);
	slot = key_hash(key) & (q->nbuckets - 1);
	it->hnext = q->buckets[slot];
	q->buckets[slot] = it;
	q->nitems++;
	return it;
}

static void item_maybe_free(struct kube_queue *q, struct queue_item *it)
{
	struct queue_item **pp;

	if (it->queued || it->processing || it->waiting || it->dirty || it->failures)
		return;
	for (pp = &q->buckets[key_hash(it->key) & (q->nbuckets - 1)]; *pp; pp = &(*pp)->hnext) {
		if (*pp == it) {
			*pp = it->hnext;
			break;
		}
	}
	q->nitems--;
	free(it->key);
	free(it);
}

/* ---------- dispatch ---------- */

static void on_idle(uv_idle_t *h);

static void queue_kick(struct kube_queue *q)
{
	int rc;

	if (q->destroyed || q->paused || q->depth == 0 || q->in_flight >= q->max_in_flight)
		return;
	rc = uv_idle_start(&q->idle, on_idle);
	if (rc < 0)
		log_error("kube: queue: uv_idle_start: %s", uv_strerror(rc));
}

static void queue_push(struct kube_queue *q, struct queue_item *it)
{
	it->queued = true;
	it->qnext = NULL;
	if (q->qtail)
		q->qtail->qnext = it;
	else
		q->qhead = it;
	q->qtail = it;
	q->depth++;
	queue_kick(q);
}

static struct queue_item *queue_pop(struct kube_queue *q)
{
	struct queue_item *it = q->qhead;

	q->qhead = it->qnext;
	if (!q->qhead)
		q->qtail = NULL;
	it->qnext = NULL;
	it->queued = false;
	q->depth--;
	return it;
}

static void on_idle(uv_idle_t *h)
{
	struct kube_queue *q = h->data;
	/* Only the keys present now: a process callback that re-adds its key
	 * at once must not keep this callback spinning forever. */
	size_t budget = q->depth;
	struct queue_item *it;

	while (budget-- > 0 && !q->destroyed && !q->paused && q->qhead &&
	    q->in_flight < q->max_in_flight) {
		it = queue_pop(q);
		it->processing = true;
		q->in_flight++;
		q->process(q, it->key, q->data);
	}
	if (q->destroyed || q->paused || q->depth == 0 || q->in_flight >= q->max_in_flight)
		uv_idle_stop(&q->idle);
}

static void item_add(struct kube_queue *q, struct queue_item *it)
{
	if (it->queued)
		return;
	if (it->processing) {
		it->dirty = true;
		return;
	}
	queue_push(q, it);
}

/* ---------- delayed adds ---------- */

static void on_timer(uv_timer_t *h);
static void on_closed(uv_handle_t *h);

static void waiting_arm(struct kube_queue *q)
{
	uint64_t now = uv_now(q->loop);
	int rc;

	if (!q->whead) {
		uv_timer_stop(&q->timer);
		return;
	}
	rc = uv_timer_start(&q->timer, on_timer, q->whead->due > now ? q->whead->due - now : 0, 0);
	if (rc < 0)
		log_error("kube: queue: uv_timer_start: %s", uv_strerror(rc));
}

static void waiting_unlink(struct kube_queue *q, struct queue_item *it)
{
	if (it->wprev)
		it->wprev->wnext = it->wnext;
	else
		q->whead = it->wnext;
	if (it->wnext)
		it->wnext->wprev = it->wprev;
	it->wprev = it->wnext = NULL;
	it->waiting = false;
}

static void waiting_insert(struct kube_queue *q, struct queue_item *it, uint64_t due)
{
	struct queue_item *prev = NULL, *cur;

	if (it->waiting) {
		if (it->due <= due)
			return; /* the earlier time wins */
		waiting_unlink(q, it);
	}
	/* Read the head only now: when it was the head, the walk would start
	 * from the unlinked item itself and link it to itself (a loop that
	 * spun the controller at 100 % CPU, found by test_reuse). */
	cur = q->whead;
	while (cur && cur->due <= due) {
		prev = cur;
		cur = cur->wnext;
	}
	it->due = due;
	it->waiting = true;
	it->wprev = prev;
	it->wnext = cur;
	if (cur)
		cur->wprev = it;
	if (prev)
		prev->wnext = it;
	else
		q->whead = it;
	if (q->whead == it)
		waiting_arm(q);
}

static void on_timer(uv_timer_t *h)
{
	struct kube_queue *q = h->data;
	uint64_t now = uv_now(q->loop);
	struct queue_item *it;

	while ((it = q->whead) && it->due <= now) {
		waiting_unlink(q, it);
		item_add(q, it);
	}
	waiting_arm(q);
}

/* ---------- API ---------- */

struct kube_queue *kube_queue_create(uv_loop_t *loop, size_t max_in_flight, uint64_t base_ms,
    uint64_t max_ms, kube_queue_process_cb process, void *data)
{
	struct kube_queue *q = calloc(1, sizeof(*q));
	int rc;

	if (!q)
		return NULL;
	q->loop = loop;
	q->max_in_flight = max_in_flight ? max_in_flight : 1;
	q->base_ms = base_ms ? base_ms : 1;
	q->max_ms = max_ms < q->base_ms ? q->base_ms : max_ms;
	q->process = process;
	q->data = data;
	q->nbuckets = 64;
	q->buckets = calloc(q->nbuckets, sizeof(*q->buckets));
	if (!q->buckets)
		goto fail_buckets;
	rc = uv_idle_init(loop, &q->idle);
	if (rc < 0)
		goto fail_idle;
	rc = uv_timer_init(loop, &q->timer);
	if (rc < 0)
		goto fail_timer;
	q->idle.data = q;
	q->timer.data = q;
	return q;
fail_timer:
	log_error("kube: queue: uv_timer_init: %s", uv_strerror(rc));
	/* The idle handle is live: q goes in its close callback. */
	q->destroyed = true;
	q->pending_closes = 1;
	uv_close((uv_handle_t *)&q->idle, on_closed);
	return NULL;
fail_idle:
	log_error("kube: queue: uv_idle_init: %s", uv_strerror(rc));
	free(q->buckets);
fail_buckets:
	free(q);
	return NULL;
}

static void on_closed(uv_handle_t *h)
{
	struct kube_queue *q = h->data;

	if (--q->pending_closes > 0)
		return;
	for (size_t i = 0; i < q->nbuckets; i++) {
		struct queue_item *it, *next;

		for (it = q->buckets[i]; it; it = next) {
			next = it->hnext;
			free(it->key);
			free(it);
		}
	}
	free(q->buckets);
	free(q);
}

void kube_queue_destroy(struct kube_queue *q)
{
	if (!q || q->destroyed)
		return;
	q->destroyed = true;
	q->pending_closes = 2;
	uv_close((uv_handle_t *)&q->idle, on_closed);
	uv_close((uv_handle_t *)&q->timer, on_closed);
}

void kube_queue_add(struct kube_queue *q, const char *key)
{
	struct queue_item *it;

	if (q->destroyed)
		return;
	it = item_get(q, key);
	if (it)
		item_add(q, it);
}

void kube_queue_add_after(struct kube_queue *q, const char *key, uint64_t delay_ms)
{
	struct queue_item *it;

	if (delay_ms == 0) {
		kube_queue_add(q, key);
		return;
	}
	if (q->destroyed)
		return;
	it = item_get(q, key);
	if (it)
		waiting_insert(q, it, uv_now(q->loop) + delay_ms);
}

static uint64_t queue_backoff(const struct kube_queue *q, unsigned failures)
{
	uint64_t ms = q->base_ms;

	for (unsigned i = 1; i < failures && ms < q->max_ms; i++)
		ms *= 2;
	return ms < q->max_ms ? ms : q->max_ms;
}

void kube_queue_done(struct kube_queue *q, const char *key, enum kube_queue_result result)
{
	struct queue_item *it;

	if (q->destroyed)
		return;
	it = item_find(q, key);
	if (!it || !it->processing) {
		log_error("kube: queue: done for %s, which is not being processed", key);
		return;
	}
	it->processing = false;
	q->in_flight--;
	if (result == KUBE_QUEUE_RETRY) {
		it->failures++;
		waiting_insert(q, it, uv_now(q->loop) + queue_backoff(q, it->failures));
	} else {
		it->failures = 0;
	}
	if (it->dirty) {
		it->dirty = false;
		queue_push(q, it);
	}
	item_maybe_free(q, it);
	queue_kick(q);
}

void kube_queue_pause(struct kube_queue *q)
{
	q->paused = true;
	uv_idle_stop(&q->idle);
}

size_t kube_queue_depth(const struct kube_queue *q)
{
	return q->depth;
}

size_t kube_queue_in_flight(const struct kube_queue *q)
{
	return q->in_flight;
}
