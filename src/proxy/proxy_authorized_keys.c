#include "proxy_authorized_keys.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "buf.h"
#include "dns_label.h"

#define WARNINGS_MAX (64 * 1024)

static const char *const known_types[] = {
	"ssh-ed25519",
	"ssh-rsa",
	"ecdsa-sha2-nistp256",
	"ecdsa-sha2-nistp384",
	"ecdsa-sha2-nistp521",
};

int proxy_authorized_keys_type_known(const char *type, size_t len)
{
	for (size_t i = 0; i < sizeof(known_types) / sizeof(known_types[0]); i++) {
		if (strlen(known_types[i]) == len && memcmp(known_types[i], type, len) == 0)
			return 1;
	}
	return 0;
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* The next whitespace-separated token of [*p, end); NULL at the end. */
static const char *next_token(const char **p, const char *end, size_t *len)
{
	const char *s = *p, *t;

	while (s < end && is_blank(*s))
		s++;
	if (s == end) {
		*p = s;
		return NULL;
	}
	t = s;
	while (t < end && !is_blank(*t))
		t++;
	*len = (size_t)(t - s);
	*p = t;
	return s;
}

/* Does the text mention a known key type as a token later on? Tells an
 * options prefix from a plain unknown type, for a more useful warning. */
static int mentions_known_type(const char *p, const char *end)
{
	const char *tok;
	size_t len;

	while ((tok = next_token(&p, end, &len)) != NULL) {
		if (proxy_authorized_keys_type_known(tok, len))
			return 1;
	}
	return 0;
}

/* The wire blob starts with string(type); it must name the declared type. */
static int blob_matches_type(const unsigned char *blob, size_t blob_len, const char *type,
    size_t type_len)
{
	uint32_t n;

	if (blob_len < 4)
		return 0;
	n = (uint32_t)blob[0] << 24 | (uint32_t)blob[1] << 16 | (uint32_t)blob[2] << 8 | blob[3];
	return n == type_len && blob_len - 4 > n && memcmp(blob + 4, type, type_len) == 0;
}

static void warn_line(struct proxy_authorized_keys *out, struct buf *w, int line,
    const char *why)
{
	out->skipped++;
	/* Past the cap the count still tells the story. */
	(void)buf_printf(w, "%sline %d: %s", w->len ? "\n" : "", line, why);
}

static int has_control_chars(const char *s, const char *end)
{
	for (; s < end; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 1;
	}
	return 0;
}

#define OPTION_PREFIX "nrbc-"
#define MAX_SESSIONS_OPT "nrbc-max-sessions="
#define MAX_BUILDERS_OPT "nrbc-max-builders="
#define CLASSES_OPT "nrbc-classes="

/* The value of one option at [*p, end) up to the next comma outside quotes
 * (quotes dropped); *p moves past the comma. -1 on an unclosed quote. */
static int option_value(const char **p, const char *end, const char **v, size_t *len)
{
	const char *s = *p;

	if (s < end && *s == '"') {
		const char *q = memchr(s + 1, '"', (size_t)(end - s - 1));

		if (!q || (q + 1 < end && q[1] != ','))
			return -1;
		*v = s + 1;
		*len = (size_t)(q - s - 1);
		*p = q + 1 < end ? q + 2 : q + 1;
		return 0;
	}
	*v = s;
	while (s < end && *s != ',' && *s != '"')
		s++;
	if (s < end && *s == '"')
		return -1;
	*len = (size_t)(s - *v);
	*p = s < end ? s + 1 : s;
	return 0;
}

static int parse_count(const char *v, size_t len, long *out)
{
	long n = 0;

	if (len == 0 || len > 5)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		n = n * 10 + (v[i] - '0');
	}
	if (n < 1 || n > PROXY_AUTHORIZED_KEYS_MAX_SESSIONS)
		return -1;
	*out = n;
	return 0;
}

/* "a,b,c": each a DNS label, at most PROXY_AUTHORIZED_KEYS_MAX_CLASSES. */
static int parse_classes(const char *v, size_t len, char **out)
{
	const char *p = v, *end = v + len;
	size_t n = 0;

	if (len == 0)
		return -1;
	while (p <= end) {
		const char *c = memchr(p, ',', (size_t)(end - p));
		size_t l = c ? (size_t)(c - p) : (size_t)(end - p);

		if (!dns_label_valid(p, l) || ++n > PROXY_AUTHORIZED_KEYS_MAX_CLASSES)
			return -1;
		if (!c)
			break;
		p = c + 1;
	}
	*out = strndup(v, len);
	return *out ? 0 : -2;
}

/* The proxy's options, comma-separated before the key type (OpenSSH's
 * form): nrbc-max-sessions=N, nrbc-max-builders=N and nrbc-classes="a,b".
 * 0, -1 with *why (a
 * static string) for a bad list, -2 when out of memory. */
static int parse_options(const char *s, size_t len, struct proxy_authorized_key *k,
    const char **why)
{
	const char *p = s, *end = s + len;

	while (p < end) {
		const char *v;
		size_t vlen;
		int rc;

		if ((size_t)(end - p) >= sizeof(MAX_SESSIONS_OPT) - 1 &&
		    memcmp(p, MAX_SESSIONS_OPT, sizeof(MAX_SESSIONS_OPT) - 1) == 0) {
			p += sizeof(MAX_SESSIONS_OPT) - 1;
			if (k->max_sessions || option_value(&p, end, &v, &vlen) < 0 ||
			    parse_count(v, vlen, &k->max_sessions) < 0) {
				*why = "nrbc-max-sessions= wants a number from 1 to 10000; line ignored";
				return -1;
			}
		} else if ((size_t)(end - p) >= sizeof(MAX_BUILDERS_OPT) - 1 &&
		    memcmp(p, MAX_BUILDERS_OPT, sizeof(MAX_BUILDERS_OPT) - 1) == 0) {
			p += sizeof(MAX_BUILDERS_OPT) - 1;
			if (k->max_builders || option_value(&p, end, &v, &vlen) < 0 ||
			    parse_count(v, vlen, &k->max_builders) < 0) {
				*why = "nrbc-max-builders= wants a number from 1 to 10000; line ignored";
				return -1;
			}
		} else if ((size_t)(end - p) >= sizeof(CLASSES_OPT) - 1 &&
		    memcmp(p, CLASSES_OPT, sizeof(CLASSES_OPT) - 1) == 0) {
			p += sizeof(CLASSES_OPT) - 1;
			if (k->classes || option_value(&p, end, &v, &vlen) < 0 ||
			    (rc = parse_classes(v, vlen, &k->classes)) == -1) {
				*why = "nrbc-classes= wants \"name,name\" (builder class names, or the "
				    "client user name for the default class); line ignored";
				return -1;
			}
			if (rc == -2)
				return -2;
		} else {
			*why = "options other than nrbc-max-sessions=, nrbc-max-builders= and "
			    "nrbc-classes= are not supported; line ignored";
			return -1;
		}
	}
	return 0;
}

/* 1: key added; 0: line skipped (warning given); -1: out of memory. */
static int parse_line(struct proxy_authorized_keys *out, struct buf *w, const char *s,
    const char *end, int line)
{
	struct proxy_authorized_key *k, opts = { 0 };
	const char *type, *b64, *p = s, *why = NULL;
	size_t type_len, b64_len;
	unsigned char *blob;
	size_t blob_len;

	if (has_control_chars(s, end)) {
		warn_line(out, w, line, "control characters in line");
		return 0;
	}
	type = next_token(&p, end, &type_len);
	/* Our own options, before the type. */
	if (type && type_len > sizeof(OPTION_PREFIX) - 1 &&
	    memcmp(type, OPTION_PREFIX, sizeof(OPTION_PREFIX) - 1) == 0) {
		int rc = parse_options(type, type_len, &opts, &why);

		if (rc == -2) {
			free(opts.classes);
			return -1;
		}
		if (rc < 0)
			goto skip;
		type = next_token(&p, end, &type_len);
	}
	if (!type || !proxy_authorized_keys_type_known(type, type_len)) {
		why = mentions_known_type(p, end) ?
		    "options before the key type are not supported; line ignored" :
		    "unknown or unsupported key type; line ignored";
		goto skip;
	}
	b64 = next_token(&p, end, &b64_len);
	if (!b64) {
		why = "key type without key data";
		goto skip;
	}
	blob = (unsigned char *)base64_decode(b64, b64_len, &blob_len);
	if (!blob) {
		why = "key data is not valid base64";
		goto skip;
	}
	if (!blob_matches_type(blob, blob_len, type, type_len)) {
		free(blob);
		why = "key data does not match its declared type";
		goto skip;
	}
	if (out->n == PROXY_AUTHORIZED_KEYS_MAX_KEYS) {
		free(blob);
		free(opts.classes);
		return -2;
	}
	while (p < end && is_blank(*p))
		p++;
	k = &out->keys[out->n];
	memset(k, 0, sizeof(*k));
	k->type = strndup(type, type_len);
	k->base64 = strndup(b64, b64_len);
	k->comment = strndup(p, (size_t)(end - p));
	k->blob = blob;
	k->blob_len = blob_len;
	k->line = line;
	k->max_sessions = opts.max_sessions;
	k->max_builders = opts.max_builders;
	k->classes = opts.classes;
	out->n++;
	if (!k->type || !k->base64 || !k->comment)
		return -1;
	return 1;
skip:
	free(opts.classes);
	warn_line(out, w, line, why);
	return 0;
}

int proxy_authorized_keys_parse(const char *text, size_t len,
    struct proxy_authorized_keys *out, char **err)
{
	struct buf warnings;
	const char *p = text, *end = text + len;
	int line = 0;

	memset(out, 0, sizeof(*out));
	*err = NULL;
	if (len > PROXY_AUTHORIZED_KEYS_MAX_TEXT) {
		*err = str_printf("authorized keys: %zu bytes is over the limit of %d", len,
		    PROXY_AUTHORIZED_KEYS_MAX_TEXT);
		return -1;
	}
	if (len && memchr(text, '\0', len)) {
		*err = str_printf("authorized keys: text contains a NUL byte");
		return -1;
	}
	out->keys = calloc(PROXY_AUTHORIZED_KEYS_MAX_KEYS, sizeof(*out->keys));
	if (!out->keys)
		goto nomem;
	buf_init(&warnings, WARNINGS_MAX);
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *s = p, *e = eol ? eol : end;
		int rc;

		p = eol ? eol + 1 : end;
		line++;
		if (e > s && e[-1] == '\r')
			e--;
		while (s < e && is_blank(*s))
			s++;
		while (e > s && is_blank(e[-1]))
			e--;
		if (s == e || *s == '#')
			continue;
		if (e - s > PROXY_AUTHORIZED_KEYS_MAX_LINE) {
			warn_line(out, &warnings, line, "line too long");
			continue;
		}
		rc = parse_line(out, &warnings, s, e, line);
		if (rc == -1) {
			buf_finish(&warnings);
			goto nomem;
		}
		if (rc == -2) {
			buf_finish(&warnings);
			proxy_authorized_keys_finish(out);
			*err = str_printf("authorized keys: more than %d keys",
			    PROXY_AUTHORIZED_KEYS_MAX_KEYS);
			return -1;
		}
	}
	out->warnings = warnings.len ? buf_steal(&warnings) : NULL;
	buf_finish(&warnings);
	return 0;
nomem:
	proxy_authorized_keys_finish(out);
	*err = str_printf("authorized keys: out of memory");
	return -1;
}

void proxy_authorized_keys_finish(struct proxy_authorized_keys *keys)
{
	if (!keys)
		return;
	for (size_t i = 0; i < keys->n; i++) {
		free(keys->keys[i].type);
		free(keys->keys[i].base64);
		free(keys->keys[i].blob);
		free(keys->keys[i].comment);
		free(keys->keys[i].classes);
	}
	free(keys->keys);
	free(keys->warnings);
	memset(keys, 0, sizeof(*keys));
}
