#include "base64.h"

#include <stdint.h>
#include <stdlib.h>

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int base64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

char *base64_decode(const char *in, size_t in_len, size_t *out_len)
{
	size_t pad = 0, n = 0;
	unsigned char *out;

	if (in_len % 4)
		return NULL;
	if (in_len >= 1 && in[in_len - 1] == '=')
		pad++;
	if (in_len >= 2 && in[in_len - 2] == '=')
		pad++;
	out = malloc(in_len / 4 * 3 + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < in_len; i += 4) {
		uint32_t v = 0;
		for (size_t j = 0; j < 4; j++) {
			unsigned char c = (unsigned char)in[i + j];
			int d;
			/* Padding only in the last two places of the last quad. */
			if (c == '=' && i + 4 == in_len && j >= 4 - pad) {
				d = 0;
			} else if ((d = base64_value(c)) < 0) {
				free(out);
				return NULL;
			}
			v = v << 6 | (uint32_t)d;
		}
		out[n++] = (unsigned char)(v >> 16);
		out[n++] = (unsigned char)(v >> 8);
		out[n++] = (unsigned char)v;
	}
	n -= pad;
	out[n] = '\0';
	*out_len = n;
	return (char *)out;
}

char *base64_decode_lenient(const char *in, size_t in_len, size_t *out_len)
{
	uint32_t acc = 0;
	size_t bits = 0, n = 0, pad = 0;
	char *out = malloc(in_len / 4 * 3 + 4);

	if (!out)
		return NULL;
	for (size_t i = 0; i < in_len; i++) {
		unsigned char c = (unsigned char)in[i];
		int d;

		if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		d = base64_value(c);
		if (d < 0 || pad > 0)
			goto bad;
		acc = (acc << 6) | (uint32_t)d;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (char)((acc >> bits) & 0xff);
		}
	}
	if (pad > 2 || bits >= 6)
		goto bad;
	out[n] = '\0';
	*out_len = n;
	return out;
bad:
	free(out);
	return NULL;
}

char *base64_encode(const void *in, size_t len)
{
	const unsigned char *p = in;
	char *out = malloc((len + 2) / 3 * 4 + 1);
	size_t n = 0;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		out[n++] = base64_alphabet[v >> 18 & 63];
		out[n++] = base64_alphabet[v >> 12 & 63];
		out[n++] = i + 1 < len ? base64_alphabet[v >> 6 & 63] : '=';
		out[n++] = i + 2 < len ? base64_alphabet[v & 63] : '=';
	}
	out[n] = '\0';
	return out;
}
