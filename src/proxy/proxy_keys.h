/* The proxy's key material, built from texts (files or the SSH key Secret):
 * - the host key clients see. Builders of the controller's NixBuilders
 *   have host keys of their own, pinned per connection from the request's
 *   status (proxy_upstream_options.host_key); only a builder with none
 *   known (the static backend, a request without identity) must present
 *   the shared "builder host key": the public half of this one unless
 *   told otherwise;
 * - the client public keys allowed in (authorized_keys text);
 * - the private key the proxy authenticates with towards builders. */
#ifndef NRBC_PROXY_KEYS_H
#define NRBC_PROXY_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#include <libssh/libssh.h>

#include "proxy_secret.h"

#define PROXY_KEYS_MAX_FILE (1024 * 1024)

struct proxy_keys;

/*
 * texts->host_key NULL: an ephemeral ed25519 host key is generated and a loud
 * warning logged (clients' known_hosts will not match after a restart, and
 * builders cannot be verified unless a builder host key is given).
 * authorized_keys and private_key are required. public_key, when given, must
 * match private_key. NULL with *err (heap) on any problem.
 */
struct proxy_keys *proxy_keys_create(const struct proxy_key_texts *texts, char **err);
void proxy_keys_destroy(struct proxy_keys *k);

/* Reads the files into texts (each bounded by PROXY_KEYS_MAX_FILE).
 * host_key_path may be NULL; public_key is read from private_key_path".pub"
 * when that file exists. 0, or -1 with *err (heap). */
int proxy_keys_load_files(const char *host_key_path, const char *authorized_keys_path,
    const char *private_key_path, struct proxy_key_texts *texts, char **err);
/* Reads one whole file, bounded; NUL-terminated heap text. */
int proxy_keys_read_file(const char *path, size_t max, char **out, char **err);

/* One "type base64 [comment]" line (a known_hosts entry without its host)
 * as a wire-format key blob and its type name, both heap. 0, or -1 with
 * *err (heap). */
int proxy_keys_parse_host_public(const char *text, unsigned char **blob, size_t *len,
    char **type, char **err);

/* Overrides the host key builders must present ("type base64 [comment]"). */
int proxy_keys_set_builder_host_key(struct proxy_keys *k, const char *public_text, char **err);

ssh_key proxy_keys_host_key(const struct proxy_keys *k);
bool proxy_keys_host_key_is_ephemeral(const struct proxy_keys *k);
/* "SHA256:..." of the host key, for logs. */
const char *proxy_keys_host_fingerprint(const struct proxy_keys *k);

/* The index of the allowed key equal to pub, or -1. *comment: its comment. */
int proxy_keys_find_client(const struct proxy_keys *k, const ssh_key pub, const char **comment);
size_t proxy_keys_client_count(const struct proxy_keys *k);
/* The key's nrbc-classes= option ("a,b"), NULL when it has none. */
const char *proxy_keys_client_classes(const struct proxy_keys *k, int index);
/* Whether the key may use the builder class named by the user name it logs
 * in as (the client user name for the default class): any, without the
 * option. */
bool proxy_keys_client_may_use(const struct proxy_keys *k, int index, const char *class_user);
/* The key's nrbc-max-sessions= option; 0 when it has none. */
long proxy_keys_client_max_sessions(const struct proxy_keys *k, int index);
/* The key's nrbc-max-builders= option (its builder quota); 0 when it has
 * none. */
long proxy_keys_client_max_builders(const struct proxy_keys *k, int index);

/* Upstream credentials in the text forms libssh2 takes. */
const char *proxy_keys_upstream_private(const struct proxy_keys *k, size_t *len);
const char *proxy_keys_upstream_public(const struct proxy_keys *k, size_t *len);

/* The wire-format host key a builder must present, and its type name
 * ("ssh-ed25519", ...); NULL when unknown (ephemeral host key and no
 * override): then every builder connection fails verification. */
const unsigned char *proxy_keys_builder_host_key(const struct proxy_keys *k, size_t *len,
    const char **type);

#endif
