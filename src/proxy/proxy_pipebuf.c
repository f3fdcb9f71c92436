#include "proxy_pipebuf.h"

#include <stdlib.h>
#include <string.h>

char *proxy_pipebuf_reserve(struct proxy_pipebuf *p, size_t want, size_t *space)
{
	if (!p->data) {
		p->data = malloc(want);
		if (!p->data)
			return NULL;
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
	free(p->data);
	memset(p, 0, sizeof(*p));
}
