/* Two sets of names: the previous pass's and the one being made. Linear
 * look-ups: a proxy holds at most --max-sessions requests, and a pass runs
 * once a --sweep-interval. */
#include "proxy_sweep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SWEEP_NAME_MAX 64   /* request names are "build-" and 12 hex digits */

struct sweep_names {
	char (*v)[SWEEP_NAME_MAX];
	size_t n, cap;
};

struct proxy_sweep {
	struct sweep_names previous;
	struct sweep_names current;
};

static bool sweep_names_has(const struct sweep_names *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i], name) == 0)
			return true;
	return false;
}

static void sweep_names_add(struct sweep_names *s, const char *name)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		char (*grown)[SWEEP_NAME_MAX] = realloc(s->v, cap * sizeof(*grown));

		if (!grown)
			return;
		s->v = grown;
		s->cap = cap;
	}
	snprintf(s->v[s->n++], SWEEP_NAME_MAX, "%s", name);
}

struct proxy_sweep *proxy_sweep_create(void)
{
	return calloc(1, sizeof(struct proxy_sweep));
}

void proxy_sweep_destroy(struct proxy_sweep *s)
{
	if (!s)
		return;
	free(s->previous.v);
	free(s->current.v);
	free(s);
}

bool proxy_sweep_see(struct proxy_sweep *s, const char *name)
{
	if (sweep_names_has(&s->previous, name))
		return true;
	sweep_names_add(&s->current, name);
	return false;
}

void proxy_sweep_end(struct proxy_sweep *s)
{
	free(s->previous.v);
	s->previous = s->current;
	memset(&s->current, 0, sizeof(s->current));
}

size_t proxy_sweep_remembered(const struct proxy_sweep *s)
{
	return s->previous.n;
}
