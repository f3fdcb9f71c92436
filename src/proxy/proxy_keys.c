#include "proxy_keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base64.h"
#include "buf.h"
#include "csv_list.h"
#include "log.h"
#include "proxy_authorized_keys.h"

struct proxy_client_key {
	ssh_key key;
	char *comment;
	long max_sessions; /* nrbc-max-sessions=; 0: the default */
	long max_builders; /* nrbc-max-builders=; 0: the controller's */
	char *classes;     /* nrbc-classes=, "a,b"; NULL: any */
};

struct proxy_keys {
	ssh_key host_key;
	bool host_key_ephemeral;
	char *host_fingerprint;
	struct proxy_client_key *clients;
	size_t n_clients;
	char *upstream_private;
	size_t upstream_private_len;
	char *upstream_public;
	size_t upstream_public_len;
	unsigned char *builder_host_blob;
	size_t builder_host_len;
	char *builder_host_type;
};

int proxy_keys_read_file(const char *path, size_t max, char **out, char **err)
{
	struct buf b;
	char chunk[8192];
	int fd;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*err = str_printf("%s: %s", path, strerror(errno));
		return -1;
	}
	buf_init(&b, max);
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*err = str_printf("%s: %s", path, strerror(errno));
			goto bad;
		}
		if (n == 0)
			break;
		if (buf_append(&b, chunk, (size_t)n) < 0) {
			*err = str_printf("%s: larger than %zu bytes", path, max);
			goto bad;
		}
	}
	close(fd);
	if (b.len && memchr(b.data, '\0', b.len)) {
		*err = str_printf("%s: contains a NUL byte, not a key", path);
		buf_finish(&b);
		return -1;
	}
	*out = buf_steal(&b);
	buf_finish(&b);
	return *out ? 0 : -1;
bad:
	close(fd);
	buf_finish(&b);
	return -1;
}

int proxy_keys_load_files(const char *host_key_path, const char *authorized_keys_path,
    const char *private_key_path, struct proxy_key_texts *texts, char **err)
{
	char *pub_path = NULL;

	memset(texts, 0, sizeof(*texts));
	if (host_key_path &&
	    proxy_keys_read_file(host_key_path, PROXY_KEYS_MAX_FILE, &texts->host_key, err) < 0)
		goto bad;
	if (authorized_keys_path && proxy_keys_read_file(authorized_keys_path,
	    PROXY_KEYS_MAX_FILE, &texts->authorized_keys, err) < 0)
		goto bad;
	if (private_key_path) {
		if (proxy_keys_read_file(private_key_path, PROXY_KEYS_MAX_FILE,
		    &texts->private_key, err) < 0)
			goto bad;
		pub_path = str_printf("%s.pub", private_key_path);
		if (!pub_path) {
			*err = str_printf("out of memory");
			goto bad;
		}
		if (access(pub_path, F_OK) == 0 &&
		    proxy_keys_read_file(pub_path, PROXY_KEYS_MAX_FILE, &texts->public_key, err) < 0)
			goto bad;
		free(pub_path);
	}
	return 0;
bad:
	free(pub_path);
	proxy_key_texts_finish(texts);
	return -1;
}

/* The wire blob of a key's public half, base64-decoded; NULL on failure. */
static unsigned char *public_blob(const ssh_key key, size_t *len, char **b64_out)
{
	char *b64 = NULL;
	unsigned char *blob;

	if (ssh_pki_export_pubkey_base64(key, &b64) != SSH_OK || !b64)
		return NULL;
	blob = (unsigned char *)base64_decode(b64, strlen(b64), len);
	if (b64_out)
		*b64_out = b64;
	else
		ssh_string_free_char(b64);
	return blob;
}

/* The type name inside a wire blob (string(type) first). */
static char *blob_type(const unsigned char *blob, size_t len)
{
	uint32_t n;

	if (len < 4)
		return NULL;
	n = (uint32_t)blob[0] << 24 | (uint32_t)blob[1] << 16 | (uint32_t)blob[2] << 8 | blob[3];
	if (n == 0 || n > len - 4 || n > 64)
		return NULL;
	return strndup((const char *)blob + 4, n);
}

static char *fingerprint(const ssh_key key)
{
	unsigned char *hash = NULL;
	size_t hlen = 0;
	char *fp, *copy;

	if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) != 0)
		return strdup("(unknown)");
	fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
	ssh_clean_pubkey_hash(&hash);
	if (!fp)
		return strdup("(unknown)");
	copy = strdup(fp);
	ssh_string_free_char(fp);
	return copy;
}

static int load_host_key(struct proxy_keys *k, const char *text, char **err)
{
	if (text) {
		if (ssh_pki_import_privkey_base64(text, NULL, NULL, NULL, &k->host_key) != SSH_OK) {
			*err = str_printf("host key: not a private key libssh can read "
			    "(OpenSSH or PEM format, no passphrase)");
			return -1;
		}
	} else {
		if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &k->host_key) != SSH_OK) {
			*err = str_printf("host key: cannot generate an ephemeral ed25519 key");
			return -1;
		}
		k->host_key_ephemeral = true;
	}
	k->host_fingerprint = fingerprint(k->host_key);
	if (!k->host_fingerprint) {
		*err = str_printf("out of memory");
		return -1;
	}
	if (k->host_key_ephemeral) {
		log_warnx("!!! NO HOST KEY CONFIGURED: using an EPHEMERAL host key %s. Clients' "
		    "known_hosts entries break at every restart, and builders cannot be "
		    "verified (every session will fail) unless --builder-host-key is given. "
		    "Configure the Secret's \"host-key\" or --host-key. !!!", k->host_fingerprint);
		return 0;
	}
	k->builder_host_blob = public_blob(k->host_key, &k->builder_host_len, NULL);
	if (!k->builder_host_blob ||
	    !(k->builder_host_type = blob_type(k->builder_host_blob, k->builder_host_len))) {
		*err = str_printf("host key: cannot export its public half");
		return -1;
	}
	return 0;
}

static int load_clients(struct proxy_keys *k, const char *text, char **err)
{
	struct proxy_authorized_keys parsed;

	if (!text) {
		*err = str_printf("no authorized keys: anonymous access is never allowed; give "
		    "--authorized-keys or the Secret's \"authorized-keys\"");
		return -1;
	}
	if (proxy_authorized_keys_parse(text, strlen(text), &parsed, err) < 0)
		return -1;
	if (parsed.warnings)
		log_warnx("authorized keys: %zu line(s) ignored:\n%s", parsed.skipped,
		    parsed.warnings);
	k->clients = calloc(parsed.n ? parsed.n : 1, sizeof(*k->clients));
	if (!k->clients) {
		*err = str_printf("out of memory");
		goto bad;
	}
	for (size_t i = 0; i < parsed.n; i++) {
		struct proxy_authorized_key *a = &parsed.keys[i];
		enum ssh_keytypes_e type = ssh_key_type_from_name(a->type);
		ssh_key key = NULL;

		if (type == SSH_KEYTYPE_UNKNOWN ||
		    ssh_pki_import_pubkey_base64(a->base64, type, &key) != SSH_OK) {
			log_warnx("authorized keys: line %d: libssh cannot use this %s key; ignored",
			    a->line, a->type);
			continue;
		}
		k->clients[k->n_clients].key = key;
		k->clients[k->n_clients].max_sessions = a->max_sessions;
		k->clients[k->n_clients].max_builders = a->max_builders;
		k->clients[k->n_clients].comment = strdup(a->comment);
		k->clients[k->n_clients].classes = a->classes ? strdup(a->classes) : NULL;
		if (!k->clients[k->n_clients].comment ||
		    (a->classes && !k->clients[k->n_clients].classes)) {
			k->n_clients++;
			*err = str_printf("out of memory");
			goto bad;
		}
		k->n_clients++;
	}
	proxy_authorized_keys_finish(&parsed);
	if (k->n_clients == 0) {
		*err = str_printf("authorized keys: no usable key");
		return -1;
	}
	return 0;
bad:
	proxy_authorized_keys_finish(&parsed);
	return -1;
}

static int load_upstream(struct proxy_keys *k, const struct proxy_key_texts *t, char **err)
{
	ssh_key priv = NULL;
	char *b64 = NULL, *type = NULL;
	unsigned char *blob = NULL;
	size_t blob_len;
	int rc = -1;

	if (!t->private_key) {
		*err = str_printf("no private key for builders: give --private-key or the "
		    "Secret's \"private\"");
		return -1;
	}
	if (ssh_pki_import_privkey_base64(t->private_key, NULL, NULL, NULL, &priv) != SSH_OK) {
		*err = str_printf("private key: not a private key libssh can read "
		    "(OpenSSH or PEM format, no passphrase)");
		return -1;
	}
	blob = public_blob(priv, &blob_len, &b64);
	if (!blob || !(type = blob_type(blob, blob_len))) {
		*err = str_printf("private key: cannot derive its public half");
		goto out;
	}
	if (t->public_key) {
		/* "type base64 [comment]": the base64 must be the derived one. */
		const char *p = t->public_key;
		size_t tlen = strlen(type), blen = strlen(b64);

		while (*p == ' ' || *p == '\t')
			p++;
		if (strncmp(p, type, tlen) != 0 || (p[tlen] != ' ' && p[tlen] != '\t') ||
		    strncmp(p + tlen + strspn(p + tlen, " \t"), b64, blen) != 0) {
			*err = str_printf("public key does not belong to the private key");
			goto out;
		}
	}
	k->upstream_private = strdup(t->private_key);
	k->upstream_public = str_printf("%s %s nrbc-proxy\n", type, b64);
	if (!k->upstream_private || !k->upstream_public) {
		*err = str_printf("out of memory");
		goto out;
	}
	k->upstream_private_len = strlen(k->upstream_private);
	k->upstream_public_len = strlen(k->upstream_public);
	rc = 0;
out:
	ssh_key_free(priv);
	if (b64)
		ssh_string_free_char(b64);
	free(blob);
	free(type);
	return rc;
}

struct proxy_keys *proxy_keys_create(const struct proxy_key_texts *texts, char **err)
{
	struct proxy_keys *k = calloc(1, sizeof(*k));

	*err = NULL;
	if (!k) {
		*err = str_printf("out of memory");
		return NULL;
	}
	if (load_host_key(k, texts->host_key, err) < 0 ||
	    load_clients(k, texts->authorized_keys, err) < 0 ||
	    load_upstream(k, texts, err) < 0) {
		proxy_keys_destroy(k);
		return NULL;
	}
	return k;
}

int proxy_keys_parse_host_public(const char *text, unsigned char **blob, size_t *len,
    char **type, char **err)
{
	struct proxy_authorized_keys parsed;

	*err = NULL;
	if (proxy_authorized_keys_parse(text, strlen(text), &parsed, err) < 0)
		return -1;
	if (parsed.n != 1) {
		proxy_authorized_keys_finish(&parsed);
		*err = str_printf("host key: expected exactly one \"type base64\" line");
		return -1;
	}
	*blob = parsed.keys[0].blob;
	*len = parsed.keys[0].blob_len;
	*type = parsed.keys[0].type;
	parsed.keys[0].blob = NULL;
	parsed.keys[0].type = NULL;
	proxy_authorized_keys_finish(&parsed);
	return 0;
}

int proxy_keys_set_builder_host_key(struct proxy_keys *k, const char *public_text, char **err)
{
	unsigned char *blob;
	size_t len;
	char *type;

	if (proxy_keys_parse_host_public(public_text, &blob, &len, &type, err) < 0)
		return -1;
	free(k->builder_host_blob);
	free(k->builder_host_type);
	k->builder_host_blob = blob;
	k->builder_host_len = len;
	k->builder_host_type = type;
	return 0;
}

void proxy_keys_destroy(struct proxy_keys *k)
{
	if (!k)
		return;
	ssh_key_free(k->host_key);
	free(k->host_fingerprint);
	for (size_t i = 0; i < k->n_clients; i++) {
		ssh_key_free(k->clients[i].key);
		free(k->clients[i].comment);
		free(k->clients[i].classes);
	}
	free(k->clients);
	if (k->upstream_private)
		explicit_bzero(k->upstream_private, k->upstream_private_len);
	free(k->upstream_private);
	free(k->upstream_public);
	free(k->builder_host_blob);
	free(k->builder_host_type);
	free(k);
}

ssh_key proxy_keys_host_key(const struct proxy_keys *k)
{
	return k->host_key;
}

bool proxy_keys_host_key_is_ephemeral(const struct proxy_keys *k)
{
	return k->host_key_ephemeral;
}

const char *proxy_keys_host_fingerprint(const struct proxy_keys *k)
{
	return k->host_fingerprint;
}

int proxy_keys_find_client(const struct proxy_keys *k, const ssh_key pub, const char **comment)
{
	for (size_t i = 0; i < k->n_clients; i++) {
		if (ssh_key_cmp(k->clients[i].key, pub, SSH_KEY_CMP_PUBLIC) == 0) {
			if (comment)
				*comment = k->clients[i].comment;
			return (int)i;
		}
	}
	return -1;
}

const char *proxy_keys_client_classes(const struct proxy_keys *k, int index)
{
	if (index < 0 || (size_t)index >= k->n_clients)
		return NULL;
	return k->clients[index].classes;
}

bool proxy_keys_client_may_use(const struct proxy_keys *k, int index, const char *class_user)
{
	const char *list = proxy_keys_client_classes(k, index);

	return !list || csv_list_has(list, class_user, strlen(class_user));
}

long proxy_keys_client_max_sessions(const struct proxy_keys *k, int index)
{
	if (!k || index < 0 || (size_t)index >= k->n_clients)
		return 0;
	return k->clients[index].max_sessions;
}

long proxy_keys_client_max_builders(const struct proxy_keys *k, int index)
{
	if (!k || index < 0 || (size_t)index >= k->n_clients)
		return 0;
	return k->clients[index].max_builders;
}

size_t proxy_keys_client_count(const struct proxy_keys *k)
{
	return k->n_clients;
}

const char *proxy_keys_upstream_private(const struct proxy_keys *k, size_t *len)
{
	*len = k->upstream_private_len;
	return k->upstream_private;
}

const char *proxy_keys_upstream_public(const struct proxy_keys *k, size_t *len)
{
	*len = k->upstream_public_len;
	return k->upstream_public;
}

const unsigned char *proxy_keys_builder_host_key(const struct proxy_keys *k, size_t *len,
    const char **type)
{
	*len = k->builder_host_len;
	if (type)
		*type = k->builder_host_type;
	return k->builder_host_blob;
}
