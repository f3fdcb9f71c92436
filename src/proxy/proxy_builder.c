#include <stdlib.h>

#include "proxy_builder_backend.h"

int proxy_builder_acquire(struct proxy_builder *b, uint64_t session_id,
    const struct proxy_builder_want *want)
{
	return b->ops->acquire(b, session_id, want);
}

void proxy_builder_release(struct proxy_builder *b, uint64_t session_id, bool ok,
    const char *message, uint64_t bytes_up, uint64_t bytes_down)
{
	b->ops->release(b, session_id, ok, message, bytes_up, bytes_down);
}

bool proxy_builder_flush(struct proxy_builder *b, void (*done)(void *data), void *data)
{
	/* A backend that writes nothing anywhere has nothing to wait for. */
	return b->ops->flush ? b->ops->flush(b, done, data) : true;
}

int proxy_builder_sibling(struct proxy_builder *b, const char *key_line,
    struct proxy_sibling *out, const char **why)
{
	if (!b->ops->sibling) {
		*why = "this proxy has no builders of its own";
		return -1;
	}
	return b->ops->sibling(b, key_line, out, why);
}

void proxy_sibling_finish(struct proxy_sibling *s)
{
	free(s->host_key);
	s->host_key = NULL;
}

bool proxy_builder_is_ready(const struct proxy_builder *b)
{
	return b->ops->is_ready(b);
}

void proxy_builder_destroy(struct proxy_builder *b)
{
	if (b)
		b->ops->destroy(b);
}
