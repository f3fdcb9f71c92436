/* Base64 (RFC 4648, standard alphabet, padded) for Secret data. */
#ifndef NRBC_BASE64_H
#define NRBC_BASE64_H

#include <stddef.h>

/* Returns a heap buffer (NUL-terminated, *out_len bytes) or NULL when the
 * input is not valid base64. Whitespace is not allowed. */
char *base64_decode(const char *in, size_t in_len, size_t *out_len);
/* The same for hand-edited files (kubeconfigs wrap long lines): white space
 * is skipped and padding is optional. */
char *base64_decode_lenient(const char *in, size_t in_len, size_t *out_len);
/* Heap, NUL-terminated. */
char *base64_encode(const void *in, size_t len);

#endif
