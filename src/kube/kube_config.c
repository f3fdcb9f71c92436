#include "kube_config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "kube_config_private.h"
#include "kube_exec.h"
#include "log.h"

#define KUBE_CONFIG_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

/* ---------- small helpers ---------- */

void kube_config_set_err(char **err, const char *fmt, ...)
{
	struct buf b;
	va_list ap;

	if (!err)
		return;
	free(*err);
	buf_init(&b, 8192);
	va_start(ap, fmt);
	if (buf_vprintf(&b, fmt, ap) < 0) {
		buf_finish(&b);
		*err = NULL;
	} else {
		*err = buf_steal(&b);
	}
	va_end(ap);
	if (!*err)
		*err = strdup("kubeconfig: out of memory");
}

void kube_config_blob_free(struct kube_blob *b)
{
	if (b->data) {
		/* Keys and tokens should not linger in freed memory. */
		memset(b->data, 0, b->len);
		free(b->data);
	}
	b->data = NULL;
	b->len = 0;
}

void kube_config_free_secret(char *s)
{
	if (s) {
		memset(s, 0, strlen(s));
		free(s);
	}
}

/* Reads a whole file, at most max bytes. Returns 0 or -errno (-EFBIG when too large). */
int kube_config_read_file(const char *path, size_t max, struct kube_blob *out)
{
	struct buf b;
	char chunk[8192];
	ssize_t n;
	int fd, rc = 0;

	out->data = NULL;
	out->len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	buf_init(&b, max);
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			break;
		}
		if (n == 0)
			break;
		if (buf_append(&b, chunk, (size_t)n) < 0) {
			rc = -EFBIG;
			break;
		}
	}
	close(fd);
	if (rc < 0) {
		buf_finish(&b);
		return rc;
	}
	if (!b.data && buf_append(&b, "", 0) < 0)
		return -ENOMEM;
	out->len = b.len;
	out->data = buf_steal(&b);
	return 0;
}

const char *kube_config_file_error(int rc)
{
	return rc == -EFBIG ? "file too large" : strerror(-rc);
}

/* A token goes into an HTTP header: a control character would let a
 * file inject headers, and is never part of a real token. */
bool kube_config_token_valid(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return s[0] != '\0';
}

static void trim_trailing_space(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' ||
	    s[n - 1] == '\t'))
		s[--n] = '\0';
}

struct kube_config *kube_config_new(const char *origin)
{
	struct kube_config *cfg = calloc(1, sizeof(*cfg));

	if (!cfg)
		return NULL;
	cfg->origin = strdup(origin);
	if (!cfg->origin) {
		free(cfg);
		return NULL;
	}
	return cfg;
}

struct kube_config *kube_config_in_cluster(const char *dir, char **err)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	struct kube_config *cfg = NULL;
	struct kube_blob ns = { 0 };
	char *origin = NULL, *path = NULL;
	int rc;

	if (!dir)
		dir = getenv("NRBC_SERVICEACCOUNT_DIR");
	if (!dir || !dir[0])
		dir = KUBE_CONFIG_SA_DIR;
	origin = str_printf("in-cluster config %s", dir);
	if (!origin)
		goto nomem;
	if (!host || !host[0]) {
		kube_config_set_err(err, "%s: KUBERNETES_SERVICE_HOST is not set", origin);
		goto fail;
	}
	if (!port || !port[0])
		port = "443";
	cfg = kube_config_new(origin);
	if (!cfg)
		goto nomem;
	/* An IPv6 service address needs brackets in a URL. */
	cfg->server = strchr(host, ':') ? str_printf("https://[%s]:%s", host, port) :
	    str_printf("https://%s:%s", host, port);
	if (!cfg->server)
		goto nomem;
	path = str_printf("%s/ca.crt", dir);
	if (!path)
		goto nomem;
	rc = kube_config_read_file(path, KUBE_CONFIG_MAX_FILE, &cfg->ca);
	if (rc < 0) {
		kube_config_set_err(err, "%s: cannot read %s: %s", origin, path, kube_config_file_error(rc));
		goto fail;
	}
	free(path);
	cfg->token_file = str_printf("%s/token", dir);
	if (!cfg->token_file)
		goto nomem;
	if (kube_config_token_refresh(cfg, err) < 0)
		goto fail;
	path = str_printf("%s/namespace", dir);
	if (!path)
		goto nomem;
	rc = kube_config_read_file(path, 256, &ns);
	if (rc == 0) {
		trim_trailing_space(ns.data);
		cfg->ns = ns.data[0] ? strdup(ns.data) : NULL;
		kube_config_blob_free(&ns);
	}
	free(path);
	path = NULL;
	if (!cfg->ns)
		cfg->ns = strdup("default");
	if (!cfg->ns)
		goto nomem;
	free(origin);
	return cfg;
nomem:
	kube_config_set_err(err, "%s: out of memory", origin ? origin : "in-cluster config");
fail:
	free(path);
	free(origin);
	kube_config_destroy(cfg);
	return NULL;
}

void kube_config_destroy(struct kube_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->origin);
	free(cfg->server);
	free(cfg->ns);
	kube_config_blob_free(&cfg->ca);
	kube_config_blob_free(&cfg->cert);
	kube_config_blob_free(&cfg->key);
	kube_config_free_secret(cfg->token);
	free(cfg->token_file);
	free(cfg->username);
	kube_config_free_secret(cfg->password);
	free(cfg->tls_server_name);
	free(cfg->request_base);
	curl_slist_free_all(cfg->connect_to);
	free(cfg->proxy_url);
	kube_exec_destroy(cfg->exec);
	free(cfg);
}

const char *kube_config_server(const struct kube_config *cfg)
{
	return cfg->server;
}

const char *kube_config_namespace(const struct kube_config *cfg)
{
	return cfg->ns;
}

const char *kube_config_request_base(const struct kube_config *cfg)
{
	return cfg->request_base ? cfg->request_base : cfg->server;
}

const char *kube_config_tls_server_name(const struct kube_config *cfg)
{
	return cfg->tls_server_name;
}

const char *kube_config_proxy_url(const struct kube_config *cfg)
{
	return cfg->proxy_url;
}

void kube_config_note_status(struct kube_config *cfg, long status)
{
	if (status == 401 && cfg->exec)
		kube_exec_invalidate(cfg->exec);
}

unsigned kube_config_exec_runs(const struct kube_config *cfg)
{
	return cfg->exec ? kube_exec_runs(cfg->exec) : 0;
}

/* Re-reads the token file when its identity or mtime changed. Kubelet
 * rotates projected tokens by swapping a symlink, which changes the inode;
 * an in-place rewrite changes the mtime. On a read failure after a good
 * read the old token is kept: it is probably still valid for a while. */
int kube_config_token_refresh(struct kube_config *cfg, char **err)
{
	struct kube_blob text;
	struct stat st;
	int rc;

	if (stat(cfg->token_file, &st) < 0) {
		rc = -errno;
		goto fail;
	}
	if (cfg->token_read && st.st_dev == cfg->token_dev && st.st_ino == cfg->token_ino &&
	    st.st_size == cfg->token_size &&
	    st.st_mtim.tv_sec == cfg->token_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == cfg->token_mtime.tv_nsec)
		return 0;
	rc = kube_config_read_file(cfg->token_file, KUBE_CONFIG_MAX_TOKEN, &text);
	if (rc < 0)
		goto fail;
	trim_trailing_space(text.data);
	if (!kube_config_token_valid(text.data)) {
		kube_config_blob_free(&text);
		rc = -ENODATA;
		goto fail;
	}
	kube_config_free_secret(cfg->token);
	cfg->token = text.data;
	if (cfg->token_read)
		log_info("%s: token file %s changed, using the new token", cfg->origin,
		    cfg->token_file);
	cfg->token_read = true;
	cfg->token_dev = st.st_dev;
	cfg->token_ino = st.st_ino;
	cfg->token_size = st.st_size;
	cfg->token_mtime = st.st_mtim;
	return 0;
fail:
	if (cfg->token_read) {
		log_warnx("%s: cannot re-read token file %s: %s; keeping the previous token",
		    cfg->origin, cfg->token_file, rc == -ENODATA ? "empty or contains control characters" : kube_config_file_error(rc));
		return 0;
	}
	kube_config_set_err(err, "%s: token file %s: %s", cfg->origin, cfg->token_file,
	    rc == -ENODATA ? "empty or contains control characters" : kube_config_file_error(rc));
	return -1;
}

static int set_blob(CURL *easy, CURLoption opt, const struct kube_blob *b)
{
	struct curl_blob blob = {
		.data = b->data,
		.len = b->len,
		.flags = CURL_BLOB_COPY,
	};

	return curl_easy_setopt(easy, opt, &blob) == CURLE_OK ? 0 : -1;
}

int kube_config_apply(struct kube_config *cfg, CURL *easy, struct curl_slist **headers,
    char **err)
{
	struct curl_slist *h;
	const char *token;
	char *auth;

	if (cfg->insecure) {
		if (curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK ||
		    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK)
			goto curl_fail;
	} else if (cfg->ca.data) {
		/* Only the cluster's CA: a public CA must not vouch for the API. */
		if (set_blob(easy, CURLOPT_CAINFO_BLOB, &cfg->ca) < 0 ||
		    curl_easy_setopt(easy, CURLOPT_CAPATH, NULL) != CURLE_OK)
			goto curl_fail;
	}
	if (cfg->cert.data) {
		if (set_blob(easy, CURLOPT_SSLCERT_BLOB, &cfg->cert) < 0 ||
		    curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM") != CURLE_OK ||
		    set_blob(easy, CURLOPT_SSLKEY_BLOB, &cfg->key) < 0 ||
		    curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM") != CURLE_OK)
			goto curl_fail;
	}
	if (cfg->username && cfg->password) {
		if (curl_easy_setopt(easy, CURLOPT_USERNAME, cfg->username) != CURLE_OK ||
		    curl_easy_setopt(easy, CURLOPT_PASSWORD, cfg->password) != CURLE_OK)
			goto curl_fail;
	}
	if (cfg->connect_to &&
	    curl_easy_setopt(easy, CURLOPT_CONNECT_TO, cfg->connect_to) != CURLE_OK)
		goto curl_fail;
	/* Without proxy-url libcurl honours https_proxy and no_proxy, as
	 * client-go does; with it, every request goes through it (an empty
	 * CURLOPT_NOPROXY overrides $no_proxy), as in client-go. */
	if (cfg->proxy_url &&
	    (curl_easy_setopt(easy, CURLOPT_PROXY, cfg->proxy_url) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_NOPROXY, "") != CURLE_OK))
		goto curl_fail;
	if (cfg->token_file && kube_config_token_refresh(cfg, err) < 0)
		return -1;
	token = cfg->token;
	if (cfg->exec) {
		const char *cert, *key;

		if (kube_exec_credential(cfg->exec, time(NULL), &token, &cert, &key, err) < 0)
			return -1;
		if (cert) {
			struct kube_blob c = { .data = (char *)cert, .len = strlen(cert) };
			struct kube_blob k = { .data = (char *)key, .len = strlen(key) };

			if (set_blob(easy, CURLOPT_SSLCERT_BLOB, &c) < 0 ||
			    curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM") != CURLE_OK ||
			    set_blob(easy, CURLOPT_SSLKEY_BLOB, &k) < 0 ||
			    curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM") != CURLE_OK)
				goto curl_fail;
		}
	}
	if (token) {
		auth = str_printf("Authorization: Bearer %s", token);
		if (!auth)
			goto nomem;
		h = curl_slist_append(*headers, auth);
		kube_config_free_secret(auth);
		if (!h)
			goto nomem;
		*headers = h;
	}
	return 0;
curl_fail:
	kube_config_set_err(err, "%s: libcurl refused a TLS option", cfg->origin);
	return -1;
nomem:
	kube_config_set_err(err, "%s: out of memory", cfg->origin);
	return -1;
}
