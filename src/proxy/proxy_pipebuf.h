/* A byte queue for one direction of a bridged channel: allocated on first
 * use and released as soon as it is empty, so an idle channel holds no
 * buffer memory. The bridge bounds how much it queues; this only stores. */
#ifndef NRBC_PROXY_PIPEBUF_H
#define NRBC_PROXY_PIPEBUF_H

#include <stddef.h>

struct proxy_pipebuf {
	char *data;
	size_t off, len, cap;
};

/* Free space at the tail for at most want bytes (*space gets how much, which
 * may be less when only less fits); NULL when memory runs out. Write there,
 * then add what was written to len. */
char *proxy_pipebuf_reserve(struct proxy_pipebuf *p, size_t want, size_t *space);
/* Drops n bytes from the head; the memory goes when nothing is left. */
void proxy_pipebuf_consume(struct proxy_pipebuf *p, size_t n);
/* Frees what is queued; p may be used again. */
void proxy_pipebuf_finish(struct proxy_pipebuf *p);

#endif
