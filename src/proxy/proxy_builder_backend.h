/* What a builder backend implements; only backends include this. */
#ifndef NRBC_PROXY_BUILDER_BACKEND_H
#define NRBC_PROXY_BUILDER_BACKEND_H

#include "proxy_builder.h"

struct proxy_builder_ops {
	const char *name;
	int (*acquire)(struct proxy_builder *b, uint64_t session_id,
	    const struct proxy_builder_want *want);
	void (*release)(struct proxy_builder *b, uint64_t session_id, bool ok, const char *message,
	    uint64_t bytes_up, uint64_t bytes_down);
	bool (*is_ready)(const struct proxy_builder *b);
	bool (*flush)(struct proxy_builder *b, void (*done)(void *data), void *data); /* optional */
	int (*sibling)(struct proxy_builder *b, const char *key_line, struct proxy_sibling *out,
	    const char **why); /* optional */
	void (*destroy)(struct proxy_builder *b);
};

/* Backends embed this as their first member. */
struct proxy_builder {
	const struct proxy_builder_ops *ops;
	const struct proxy_builder_events *events;
	void *data;
};

#endif
