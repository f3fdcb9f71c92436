/* Inside the kube_config module: the configuration's fields and the
 * helpers kube_config.c (in-cluster, tokens, libcurl options) and
 * kube_kubeconfig.c (kubeconfig files) share. Not for other modules. */
#ifndef NRBC_KUBE_CONFIG_PRIVATE_H
#define NRBC_KUBE_CONFIG_PRIVATE_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "kube_config.h"

#define KUBE_CONFIG_MAX_FILE (4u << 20)   /* kubeconfig, certificates, keys */
#define KUBE_CONFIG_MAX_TOKEN (64u << 10) /* bearer tokens */

struct kube_blob {
	char *data;
	size_t len;
};

struct kube_config {
	char *origin; /* "kubeconfig PATH" or "in-cluster config DIR", for messages */
	char *server;
	char *ns;
	bool insecure;
	struct kube_blob ca;
	struct kube_blob cert;
	struct kube_blob key;
	char *token;      /* static token, or the last one read from token_file */
	char *token_file; /* re-read when it changes: service-account rotation */
	dev_t token_dev;
	ino_t token_ino;
	struct timespec token_mtime;
	off_t token_size;
	bool token_read;
	char *username; /* basic auth, rare but part of the format */
	char *password;
	char *tls_server_name;   /* SNI and the name the certificate must carry */
	char *request_base;      /* server with tls_server_name as its host */
	struct curl_slist *connect_to; /* tls_server_name:port → the server's host:port */
	char *proxy_url;
	struct kube_exec *exec;  /* exec credential plugin, or NULL */
};

/* *err (heap) = the formatted message, replacing an earlier one. */
void kube_config_set_err(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Wipes and frees; the blob is empty afterwards. */
void kube_config_blob_free(struct kube_blob *b);
/* Wipes and frees a NUL-terminated secret. Accepts NULL. */
void kube_config_free_secret(char *s);
/* Reads a whole file, at most max bytes (NUL-terminated). Returns 0 or
 * -errno (-EFBIG when too large). */
int kube_config_read_file(const char *path, size_t max, struct kube_blob *out);
const char *kube_config_file_error(int rc);
/* Non-empty and no control characters: safe in an HTTP header. */
bool kube_config_token_valid(const char *s);
/* A zeroed configuration named origin ("kubeconfig PATH"), or NULL. */
struct kube_config *kube_config_new(const char *origin);
/* (Re-)reads cfg->token_file when it changed; see kube_config.c. */
int kube_config_token_refresh(struct kube_config *cfg, char **err);

#endif
