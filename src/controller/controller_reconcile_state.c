#include "controller_reconcile_state.h"

#include <stdlib.h>
#include <string.h>

#define STATE_BUCKETS_MIN 64

/* Chained buckets, doubled when the entries outnumber them. */
struct reconcile_state_table {
	struct reconcile_state **buckets;
	size_t nbuckets;
	size_t nstates;
};

static size_t hash_key(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (size_t)h;
}

struct reconcile_state_table *reconcile_state_table_create(void)
{
	struct reconcile_state_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->nbuckets = STATE_BUCKETS_MIN;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	if (!t->buckets) {
		free(t);
		return NULL;
	}
	return t;
}

static struct reconcile_state **state_slot(struct reconcile_state_table *t, const char *key)
{
	struct reconcile_state **p = &t->buckets[hash_key(key) % t->nbuckets];

	for (; *p; p = &(*p)->next) {
		if (strcmp((*p)->key, key) == 0)
			break;
	}
	return p;
}

struct reconcile_state *reconcile_state_find(struct reconcile_state_table *t, const char *key)
{
	return *state_slot(t, key);
}

static void state_grow(struct reconcile_state_table *t)
{
	size_t n = t->nbuckets * 2;
	struct reconcile_state **b = calloc(n, sizeof(*b));

	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < t->nbuckets; i++) {
		while (t->buckets[i]) {
			struct reconcile_state *s = t->buckets[i];

			t->buckets[i] = s->next;
			s->next = b[hash_key(s->key) % n];
			b[hash_key(s->key) % n] = s;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
}

void reconcile_state_clear_expected(struct reconcile_state *s)
{
	json_decref(s->expected_pod);
	s->expected_pod = NULL;
}

static void state_free(struct reconcile_state *s)
{
	reconcile_state_clear_expected(s);
	free(s->key);
	free(s->uid);
	free(s->stale_rv);
	free(s);
}

struct reconcile_state *reconcile_state_get(struct reconcile_state_table *t, const char *key,
    const char *uid, uint64_t now)
{
	struct reconcile_state *s = reconcile_state_find(t, key);

	if (s && strcmp(s->uid, uid) != 0) {
		reconcile_state_clear_expected(s);
		free(s->stale_rv);
		s->stale_rv = NULL;
		free(s->uid);
		s->uid = strdup(uid);
		s->pod_created_timed = s->running_timed = false;
		s->first_seen = now;
		if (!s->uid) {
			*state_slot(t, key) = s->next;
			t->nstates--;
			state_free(s);
			return NULL;
		}
	}
	if (s)
		return s;
	if (t->nstates >= t->nbuckets)
		state_grow(t);
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->key = strdup(key);
	s->uid = strdup(uid);
	if (!s->key || !s->uid) {
		state_free(s);
		return NULL;
	}
	s->first_seen = now;
	s->next = t->buckets[hash_key(key) % t->nbuckets];
	t->buckets[hash_key(key) % t->nbuckets] = s;
	t->nstates++;
	return s;
}

void reconcile_state_remove(struct reconcile_state_table *t, const char *key)
{
	struct reconcile_state **p = state_slot(t, key);
	struct reconcile_state *s = *p;

	if (!s)
		return;
	*p = s->next;
	t->nstates--;
	state_free(s);
}

uint64_t reconcile_state_age_ms(struct reconcile_state_table *t, const char *key, uint64_t now)
{
	struct reconcile_state *s = reconcile_state_find(t, key);

	return s ? now - s->first_seen : 0;
}

void reconcile_state_table_destroy(struct reconcile_state_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nbuckets; i++) {
		while (t->buckets[i]) {
			struct reconcile_state *s = t->buckets[i];

			t->buckets[i] = s->next;
			state_free(s);
		}
	}
	free(t->buckets);
	free(t);
}
