/*
 * libFuzzer target for the proxy's authorized_keys parser. Besides memory
 * safety it checks what the proxy relies on: every key it returns has a
 * known type whose name heads the decoded blob, comes from a real line, and
 * the count stays within the limit.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy_authorized_keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_authorized_keys keys;
	char *err = NULL;
	size_t lines = 1;

	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	if (proxy_authorized_keys_parse((const char *)data, size, &keys, &err) < 0) {
		if (!err)
			abort();
		free(err);
		return 0;
	}
	if (err || keys.n > PROXY_AUTHORIZED_KEYS_MAX_KEYS)
		abort();
	for (size_t i = 0; i < keys.n; i++) {
		const struct proxy_authorized_key *k = &keys.keys[i];
		size_t tlen = strlen(k->type);

		if (!proxy_authorized_keys_type_known(k->type, tlen) || !k->blob ||
		    k->blob_len < 4 + tlen || memcmp(k->blob + 4, k->type, tlen) != 0 ||
		    k->line < 1 || (size_t)k->line > lines || !k->comment || !k->base64)
			abort();
		if (i && k->line <= keys.keys[i - 1].line)
			abort();
	}
	if ((keys.skipped == 0) != (keys.warnings == NULL))
		abort();
	proxy_authorized_keys_finish(&keys);
	return 0;
}
