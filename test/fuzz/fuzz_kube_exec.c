/* libFuzzer target: an exec credential plugin's stdout (ExecCredential JSON)
 * and RFC 3339 times. Nothing is run: only the parsers see the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kube/kube_exec.h"
#include "rfc3339.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *token, *cert, *key, *err = NULL, *text;
	time_t expiry;

	if (size > 64 * 1024)
		return 0;
	if (kube_exec_parse((const char *)data, size, "client.authentication.k8s.io/v1", &token,
	    &cert, &key, &expiry, &err) == 0) {
		/* Success means a usable credential and no error. */
		if (err || (!token && !(cert && key)) || (!cert != !key))
			abort();
		free(token);
		free(cert);
		free(key);
	} else if (!err || token || cert || key) {
		abort();
	}
	free(err);
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	(void)rfc3339_parse_ms(text);
	free(text);
	return 0;
}
