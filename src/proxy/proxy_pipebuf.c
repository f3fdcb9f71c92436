#include "proxy_pipebuf.h"

#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* Capacity is what the process really holds: it is counted, not len. */
static void pipebuf_count(struct proxy_pipebuf *p, size_t old_cap, size_t new_cap)
{
	struct proxy_pipebuf_budget *b = p->budget;

	if (!b)
		return;
	b->held = b->held - old_cap + new_cap;
	if (b->held > b->peak)
		b->peak = b->held;
	metric_set(b->held_gauge, (double)b->held);
}

char *proxy_pipebuf_reserve(struct proxy_pipebuf *p, size_t want, size_t *space)
{
	if (!p->data) {
		p->data = malloc(want);
		if (!p->data)
			return NULL;
		pipebuf_count(p, 0, want);
		p->cap = want;
		p->off = p->len = 0;
	}
	if (p->cap - p->off - p->len < want && p->off) {
		memmove(p->data, p->data + p->off, p->len);
		p->off = 0;
	}
	if (p->cap - p->len < want) {
		char *n = realloc(p->data, p->len + want);
		if (!n)
			return NULL;
		pipebuf_count(p, p->cap, p->len + want);
		p->data = n;
		p->cap = p->len + want;
	}
	*space = p->cap - p->off - p->len;
	if (*space > want)
		*space = want;
	return p->data + p->off + p->len;
}

void proxy_pipebuf_consume(struct proxy_pipebuf *p, size_t n)
{
	p->off += n;
	p->len -= n;
	if (p->len == 0)
		proxy_pipebuf_finish(p);
}

void proxy_pipebuf_finish(struct proxy_pipebuf *p)
{
	struct proxy_pipebuf_budget *budget = p->budget;

	pipebuf_count(p, p->cap, 0);
	free(p->data);
	memset(p, 0, sizeof(*p));
	p->budget = budget;
}

bool proxy_pipebuf_budget_full(const struct proxy_pipebuf_budget *b)
{
	return b && b->limit && b->held >= b->limit;
}
