/* A strict parser for authorized_keys text: "type base64 [comment]" per line.
 * Pure (no SSH library), so it can be fuzzed and unit-tested alone. Lines with
 * an options prefix (from="...", command="...", ...) are refused rather than
 * half-honoured: the proxy has no use for them and ignoring a restriction
 * would widen access. The options understood are the proxy's own, comma-
 * separated before the type as OpenSSH writes options:
 * "nrbc-max-sessions=N" (1..10000), this key's concurrent sessions,
 * "nrbc-max-builders=N" (1..10000), the builders it may hold at once (its
 * builder quota, over the controller's --quota-max-builders), and
 * nrbc-classes="a,b", the builder classes (SSH user names) it may use; a
 * line with any other option is skipped with a warning. */
#ifndef NRBC_PROXY_AUTHORIZED_KEYS_H
#define NRBC_PROXY_AUTHORIZED_KEYS_H

#include <stddef.h>

#define PROXY_AUTHORIZED_KEYS_MAX_TEXT (1024 * 1024)
#define PROXY_AUTHORIZED_KEYS_MAX_KEYS 1000
#define PROXY_AUTHORIZED_KEYS_MAX_LINE 16384
#define PROXY_AUTHORIZED_KEYS_MAX_SESSIONS 10000
#define PROXY_AUTHORIZED_KEYS_MAX_CLASSES 64

struct proxy_authorized_key {
	char *type;          /* "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", ... */
	char *base64;        /* the blob as written */
	unsigned char *blob; /* decoded wire-format public key */
	size_t blob_len;
	char *comment;       /* "" when absent */
	long max_sessions;   /* nrbc-max-sessions=N option; 0 when absent */
	long max_builders;   /* nrbc-max-builders=N option; 0 when absent */
	char *classes;       /* nrbc-classes= option, "a,b"; NULL when absent (any) */
	int line;            /* 1-based line number in the text */
};

struct proxy_authorized_keys {
	struct proxy_authorized_key *keys;
	size_t n;
	/* Lines that were skipped, e.g. "line 3: options are not supported";
	 * one message per skipped line, newline-separated; NULL when none. */
	char *warnings;
	size_t skipped;
};

/*
 * Parses text (len bytes, need not be NUL-terminated). Blank lines and lines
 * starting with '#' are ignored; a malformed line is skipped with a warning.
 * Returns 0 with *out filled (possibly zero keys), or -1 with *err (heap) when
 * the text as a whole is unusable (too large, NUL byte, too many keys, out of
 * memory).
 */
int proxy_authorized_keys_parse(const char *text, size_t len,
    struct proxy_authorized_keys *out, char **err);
void proxy_authorized_keys_finish(struct proxy_authorized_keys *keys);

/* True for the key types the proxy accepts from clients. */
int proxy_authorized_keys_type_known(const char *type, size_t len);

#endif
