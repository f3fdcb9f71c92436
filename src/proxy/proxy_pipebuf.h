/* A byte queue for one direction of a bridged channel: allocated on first
 * use and released as soon as it is empty, so an idle channel holds no
 * buffer memory. The bridge bounds how much it queues; this only stores,
 * and counts what it holds into a budget shared by every queue of the
 * process, so that the bridges can stop taking more when all of them
 * together hold too much (one key's sessions must not use up the memory
 * every user's sessions live in). */
#ifndef NRBC_PROXY_PIPEBUF_H
#define NRBC_PROXY_PIPEBUF_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes allocated by every queue that points here, against a limit. */
struct metric;

struct proxy_pipebuf_budget {
	size_t limit; /* 0: none */
	size_t held;
	size_t peak;
	struct metric *held_gauge; /* set to held on each change; may be NULL */
};

struct proxy_pipebuf {
	char *data;
	size_t off, len, cap;
	struct proxy_pipebuf_budget *budget; /* may be NULL */
};

/* Free space at the tail for at most want bytes (*space gets how much, which
 * may be less when only less fits); NULL when memory runs out. Write there,
 * then add what was written to len. The budget is not checked here (a queue
 * that was allowed to take bytes must be able to store them): callers ask
 * proxy_pipebuf_budget_full() before they read more. */
char *proxy_pipebuf_reserve(struct proxy_pipebuf *p, size_t want, size_t *space);
/* Drops n bytes from the head; the memory goes when nothing is left. */
void proxy_pipebuf_consume(struct proxy_pipebuf *p, size_t n);
/* Frees what is queued; p may be used again (its budget stays). */
void proxy_pipebuf_finish(struct proxy_pipebuf *p);

/* The queues hold the limit or more: read nothing more into them. */
bool proxy_pipebuf_budget_full(const struct proxy_pipebuf_budget *b);

#endif
