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
#include <yaml.h>

#include "buf.h"
#include "log.h"

#define KUBE_CONFIG_MAX_FILE (4u << 20)   /* kubeconfig, certificates, keys */
#define KUBE_CONFIG_MAX_TOKEN (64u << 10) /* bearer tokens */
#define KUBE_CONFIG_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

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
};

/* ---------- small helpers ---------- */

static void set_err(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(char **err, const char *fmt, ...)
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

static void blob_free(struct kube_blob *b)
{
	if (b->data) {
		/* Keys and tokens should not linger in freed memory. */
		memset(b->data, 0, b->len);
		free(b->data);
	}
	b->data = NULL;
	b->len = 0;
}

static void free_secret(char *s)
{
	if (s) {
		memset(s, 0, strlen(s));
		free(s);
	}
}

/* Reads a whole file, at most max bytes. Returns 0 or -errno (-EFBIG when too large). */
static int read_file(const char *path, size_t max, struct kube_blob *out)
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

static const char *file_error(int rc)
{
	return rc == -EFBIG ? "file too large" : strerror(-rc);
}

static char *resolve_path(const char *base_dir, const char *path)
{
	if (path[0] == '/' || !base_dir || !base_dir[0])
		return strdup(path);
	return str_printf("%s/%s", base_dir, path);
}

/* A token goes into an HTTP header: a control character would let a
 * file inject headers, and is never part of a real token. */
static bool token_valid(const char *s)
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

static int b64_value(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/* Standard base64 with padding optional; whitespace is skipped because
 * hand-edited kubeconfigs sometimes wrap long lines. */
static int base64_decode(const char *in, size_t len, struct kube_blob *out)
{
	uint32_t acc = 0;
	size_t bits = 0, o = 0, pad = 0;
	char *data;

	data = malloc(len / 4 * 3 + 4);
	if (!data)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)in[i];
		int v;

		if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
			continue;
		if (ch == '=') {
			pad++;
			continue;
		}
		v = b64_value(ch);
		if (v < 0 || pad > 0)
			goto bad;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			data[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	if (pad > 2 || bits >= 6)
		goto bad;
	data[o] = '\0';
	out->data = data;
	out->len = o;
	return 0;
bad:
	free(data);
	return -1;
}

/* ---------- YAML navigation ---------- */

struct kc_parse {
	yaml_document_t doc;
	const char *origin;
	const char *base_dir;
	char **err;
};

static const char *scalar(yaml_node_t *n)
{
	if (!n || n->type != YAML_SCALAR_NODE)
		return NULL;
	/* Embedded NUL bytes (a "\0" escape) would silently truncate. */
	if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length)
		return NULL;
	return (const char *)n->data.scalar.value;
}

static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
	yaml_node_pair_t *p;

	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		const char *k = scalar(yaml_document_get_node(doc, p->key));

		if (k && strcmp(k, key) == 0)
			return yaml_document_get_node(doc, p->value);
	}
	return NULL;
}

/* A string field: absent → *out NULL and 0; present but not a string → -1. */
static int get_str(struct kc_parse *kp, yaml_node_t *map, const char *path, const char *key,
    const char **out)
{
	yaml_node_t *n = map_get(&kp->doc, map, key);

	*out = NULL;
	if (!n)
		return 0;
	if (n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0)
		return 0; /* "key:" with nothing is null in YAML */
	*out = scalar(n);
	if (!*out) {
		set_err(kp->err, "%s: %s.%s: expected a string", kp->origin, path, key);
		return -1;
	}
	return 0;
}

/* Finds the entry of the list `list` (e.g. "contexts") whose name is `name`
 * and returns its `inner` mapping (e.g. "context"). */
static yaml_node_t *find_named(struct kc_parse *kp, yaml_node_t *root, const char *list,
    const char *what, const char *inner, const char *name, char *path, size_t pathlen)
{
	yaml_node_t *seq = map_get(&kp->doc, root, list);
	yaml_node_item_t *it;
	size_t i = 0;

	if (seq && seq->type != YAML_SEQUENCE_NODE) {
		set_err(kp->err, "%s: %s: expected a list", kp->origin, list);
		return NULL;
	}
	if (seq) {
		for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
		    it++, i++) {
			yaml_node_t *entry = yaml_document_get_node(&kp->doc, *it);
			const char *n = scalar(map_get(&kp->doc, entry, "name"));
			yaml_node_t *body;

			if (!n || strcmp(n, name) != 0)
				continue;
			snprintf(path, pathlen, "%s[%zu].%s", list, i, inner);
			body = map_get(&kp->doc, entry, inner);
			if (!body || body->type != YAML_MAPPING_NODE) {
				set_err(kp->err, "%s: %s: missing or not a mapping", kp->origin,
				    path);
				return NULL;
			}
			return body;
		}
	}
	set_err(kp->err, "%s: %s \"%s\" not found", kp->origin, what, name);
	return NULL;
}

/* Loads one credential from either FIELD (a file) or FIELD-data (base64). */
static int load_blob(struct kc_parse *kp, yaml_node_t *map, const char *path,
    const char *file_key, const char *data_key, struct kube_blob *out)
{
	const char *file, *data;
	char *full;
	int rc;

	if (get_str(kp, map, path, file_key, &file) < 0 ||
	    get_str(kp, map, path, data_key, &data) < 0)
		return -1;
	if (data) {
		if (base64_decode(data, strlen(data), out) < 0) {
			set_err(kp->err, "%s: %s.%s: invalid base64", kp->origin, path, data_key);
			return -1;
		}
		return 0;
	}
	if (!file)
		return 0;
	full = resolve_path(kp->base_dir, file);
	if (!full) {
		set_err(kp->err, "%s: out of memory", kp->origin);
		return -1;
	}
	rc = read_file(full, KUBE_CONFIG_MAX_FILE, out);
	if (rc < 0) {
		set_err(kp->err, "%s: %s.%s: cannot read %s: %s", kp->origin, path, file_key, full,
		    file_error(rc));
		free(full);
		return -1;
	}
	free(full);
	return 0;
}

static int dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (!s)
		return 0;
	*out = strdup(s);
	return *out ? 0 : -1;
}

static int parse_cluster(struct kc_parse *kp, yaml_node_t *cluster, const char *path,
    struct kube_config *cfg)
{
	const char *server, *insecure;
	size_t n;

	if (get_str(kp, cluster, path, "server", &server) < 0)
		return -1;
	if (!server) {
		set_err(kp->err, "%s: %s.server: missing", kp->origin, path);
		return -1;
	}
	if (strncmp(server, "https://", 8) != 0 && strncmp(server, "http://", 7) != 0) {
		set_err(kp->err, "%s: %s.server: \"%s\" is not an http(s) URL", kp->origin, path,
		    server);
		return -1;
	}
	cfg->server = strdup(server);
	if (!cfg->server)
		goto nomem;
	n = strlen(cfg->server);
	while (n > 0 && cfg->server[n - 1] == '/')
		cfg->server[--n] = '\0';
	if (get_str(kp, cluster, path, "insecure-skip-tls-verify", &insecure) < 0)
		return -1;
	if (insecure && strcmp(insecure, "true") == 0)
		cfg->insecure = true;
	else if (insecure && strcmp(insecure, "false") != 0) {
		set_err(kp->err, "%s: %s.insecure-skip-tls-verify: expected true or false",
		    kp->origin, path);
		return -1;
	}
	return load_blob(kp, cluster, path, "certificate-authority",
	    "certificate-authority-data", &cfg->ca);
nomem:
	set_err(kp->err, "%s: out of memory", kp->origin);
	return -1;
}

static int parse_user(struct kc_parse *kp, yaml_node_t *user, const char *path,
    struct kube_config *cfg)
{
	const char *token, *token_file, *username, *password;

	if (map_get(&kp->doc, user, "exec") || map_get(&kp->doc, user, "auth-provider")) {
		set_err(kp->err, "%s: %s: exec and auth-provider credentials are not supported; "
		    "use a token, tokenFile or client certificate", kp->origin, path);
		return -1;
	}
	if (load_blob(kp, user, path, "client-certificate", "client-certificate-data",
	    &cfg->cert) < 0)
		return -1;
	if (load_blob(kp, user, path, "client-key", "client-key-data", &cfg->key) < 0)
		return -1;
	if (!cfg->cert.data != !cfg->key.data) {
		set_err(kp->err, "%s: %s: client-certificate and client-key must be given together",
		    kp->origin, path);
		return -1;
	}
	if (get_str(kp, user, path, "token", &token) < 0 ||
	    get_str(kp, user, path, "tokenFile", &token_file) < 0 ||
	    get_str(kp, user, path, "username", &username) < 0 ||
	    get_str(kp, user, path, "password", &password) < 0)
		return -1;
	if (token && !token_valid(token)) {
		set_err(kp->err, "%s: %s.token: empty or contains control characters",
		    kp->origin, path);
		return -1;
	}
	if (dup_opt(token, &cfg->token) < 0 || dup_opt(username, &cfg->username) < 0 ||
	    dup_opt(password, &cfg->password) < 0)
		goto nomem;
	if (token_file) {
		cfg->token_file = resolve_path(kp->base_dir, token_file);
		if (!cfg->token_file)
			goto nomem;
	}
	return 0;
nomem:
	set_err(kp->err, "%s: out of memory", kp->origin);
	return -1;
}

static struct kube_config *config_new(const char *origin)
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

static int token_refresh(struct kube_config *cfg, char **err);

static struct kube_config *parse_named(const char *text, size_t len, const char *base_dir,
    const char *context, const char *origin, char **err)
{
	struct kc_parse kp = { .origin = origin, .base_dir = base_dir, .err = err };
	yaml_parser_t parser;
	yaml_node_t *root, *ctx, *cluster, *user;
	struct kube_config *cfg = NULL;
	const char *cluster_name, *user_name, *ns;
	char ctx_path[64], cluster_path[64], user_path[64];
	bool doc_loaded = false;

	if (!yaml_parser_initialize(&parser)) {
		set_err(err, "%s: out of memory", origin);
		return NULL;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &kp.doc)) {
		set_err(err, "%s: invalid YAML at line %zu column %zu: %s", origin,
		    parser.problem_mark.line + 1, parser.problem_mark.column + 1,
		    parser.problem ? parser.problem : "unknown error");
		goto fail;
	}
	doc_loaded = true;
	root = yaml_document_get_root_node(&kp.doc);
	if (!root) {
		set_err(err, "%s: empty document", origin);
		goto fail;
	}
	if (root->type != YAML_MAPPING_NODE) {
		set_err(err, "%s: top level is not a mapping", origin);
		goto fail;
	}
	if (!context) {
		if (get_str(&kp, root, "", "current-context", &context) < 0)
			goto fail;
		if (!context || !context[0]) {
			set_err(err, "%s: current-context is not set and no context was given",
			    origin);
			goto fail;
		}
	}
	ctx = find_named(&kp, root, "contexts", "context", "context", context, ctx_path,
	    sizeof(ctx_path));
	if (!ctx)
		goto fail;
	if (get_str(&kp, ctx, ctx_path, "cluster", &cluster_name) < 0 ||
	    get_str(&kp, ctx, ctx_path, "user", &user_name) < 0 ||
	    get_str(&kp, ctx, ctx_path, "namespace", &ns) < 0)
		goto fail;
	if (!cluster_name) {
		set_err(err, "%s: %s.cluster: missing", origin, ctx_path);
		goto fail;
	}
	cluster = find_named(&kp, root, "clusters", "cluster", "cluster", cluster_name,
	    cluster_path, sizeof(cluster_path));
	if (!cluster)
		goto fail;
	cfg = config_new(origin);
	if (!cfg) {
		set_err(err, "%s: out of memory", origin);
		goto fail;
	}
	if (parse_cluster(&kp, cluster, cluster_path, cfg) < 0)
		goto fail;
	if (user_name && user_name[0]) {
		user = find_named(&kp, root, "users", "user", "user", user_name, user_path,
		    sizeof(user_path));
		if (!user || parse_user(&kp, user, user_path, cfg) < 0)
			goto fail;
	}
	cfg->ns = strdup(ns && ns[0] ? ns : "default");
	if (!cfg->ns) {
		set_err(err, "%s: out of memory", origin);
		goto fail;
	}
	/* Read a token file now so a wrong path is reported at start-up. */
	if (cfg->token_file && token_refresh(cfg, err) < 0)
		goto fail;
	yaml_document_delete(&kp.doc);
	yaml_parser_delete(&parser);
	return cfg;
fail:
	kube_config_destroy(cfg);
	if (doc_loaded)
		yaml_document_delete(&kp.doc);
	yaml_parser_delete(&parser);
	return NULL;
}

struct kube_config *kube_config_parse(const char *text, size_t len, const char *base_dir,
    const char *context, char **err)
{
	return parse_named(text, len, base_dir, context, "kubeconfig", err);
}

static struct kube_config *load_file(const char *path, const char *context, char **err)
{
	struct kube_blob text;
	struct kube_config *cfg;
	char *origin, *base_dir, *slash;
	int rc;

	origin = str_printf("kubeconfig %s", path);
	base_dir = strdup(path);
	if (!origin || !base_dir) {
		free(origin);
		free(base_dir);
		set_err(err, "kubeconfig %s: out of memory", path);
		return NULL;
	}
	slash = strrchr(base_dir, '/');
	if (slash)
		*slash = '\0';
	else
		base_dir[0] = '\0';
	if (slash == base_dir)
		snprintf(base_dir, 2, "/");
	rc = read_file(path, KUBE_CONFIG_MAX_FILE, &text);
	if (rc < 0) {
		set_err(err, "%s: cannot read: %s", origin, file_error(rc));
		free(origin);
		free(base_dir);
		return NULL;
	}
	cfg = parse_named(text.data, text.len, base_dir, context, origin, err);
	blob_free(&text);
	free(origin);
	free(base_dir);
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
		set_err(err, "%s: KUBERNETES_SERVICE_HOST is not set", origin);
		goto fail;
	}
	if (!port || !port[0])
		port = "443";
	cfg = config_new(origin);
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
	rc = read_file(path, KUBE_CONFIG_MAX_FILE, &cfg->ca);
	if (rc < 0) {
		set_err(err, "%s: cannot read %s: %s", origin, path, file_error(rc));
		goto fail;
	}
	free(path);
	cfg->token_file = str_printf("%s/token", dir);
	if (!cfg->token_file)
		goto nomem;
	if (token_refresh(cfg, err) < 0)
		goto fail;
	path = str_printf("%s/namespace", dir);
	if (!path)
		goto nomem;
	rc = read_file(path, 256, &ns);
	if (rc == 0) {
		trim_trailing_space(ns.data);
		cfg->ns = ns.data[0] ? strdup(ns.data) : NULL;
		blob_free(&ns);
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
	set_err(err, "%s: out of memory", origin ? origin : "in-cluster config");
fail:
	free(path);
	free(origin);
	kube_config_destroy(cfg);
	return NULL;
}

struct kube_config *kube_config_load(const char *path, const char *context, char **err)
{
	const char *env, *home, *host;
	struct kube_config *cfg;
	char *first, *colon, *def;

	if (path && path[0])
		return load_file(path, context, err);
	host = getenv("KUBERNETES_SERVICE_HOST");
	if (host && host[0])
		return kube_config_in_cluster(NULL, err);
	env = getenv("KUBECONFIG");
	if (env && env[0]) {
		/* kubectl merges a colon-separated list; we take its first file. */
		first = strdup(env);
		if (!first) {
			set_err(err, "kubeconfig: out of memory");
			return NULL;
		}
		colon = strchr(first, ':');
		if (colon)
			*colon = '\0';
		cfg = load_file(first, context, err);
		free(first);
		return cfg;
	}
	home = getenv("HOME");
	if (!home || !home[0]) {
		set_err(err, "kubeconfig: no --kubeconfig, KUBERNETES_SERVICE_HOST, KUBECONFIG or "
		    "HOME to find one");
		return NULL;
	}
	def = str_printf("%s/.kube/config", home);
	if (!def) {
		set_err(err, "kubeconfig: out of memory");
		return NULL;
	}
	cfg = load_file(def, context, err);
	free(def);
	return cfg;
}

void kube_config_destroy(struct kube_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->origin);
	free(cfg->server);
	free(cfg->ns);
	blob_free(&cfg->ca);
	blob_free(&cfg->cert);
	blob_free(&cfg->key);
	free_secret(cfg->token);
	free(cfg->token_file);
	free(cfg->username);
	free_secret(cfg->password);
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

/* Re-reads the token file when its identity or mtime changed. Kubelet
 * rotates projected tokens by swapping a symlink, which changes the inode;
 * an in-place rewrite changes the mtime. On a read failure after a good
 * read the old token is kept: it is probably still valid for a while. */
static int token_refresh(struct kube_config *cfg, char **err)
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
	rc = read_file(cfg->token_file, KUBE_CONFIG_MAX_TOKEN, &text);
	if (rc < 0)
		goto fail;
	trim_trailing_space(text.data);
	if (!token_valid(text.data)) {
		blob_free(&text);
		rc = -ENODATA;
		goto fail;
	}
	free_secret(cfg->token);
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
		    cfg->origin, cfg->token_file, rc == -ENODATA ? "empty or contains control characters" : file_error(rc));
		return 0;
	}
	set_err(err, "%s: token file %s: %s", cfg->origin, cfg->token_file,
	    rc == -ENODATA ? "empty or contains control characters" : file_error(rc));
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
	if (cfg->token_file && token_refresh(cfg, err) < 0)
		return -1;
	if (cfg->token) {
		auth = str_printf("Authorization: Bearer %s", cfg->token);
		if (!auth)
			goto nomem;
		h = curl_slist_append(*headers, auth);
		free_secret(auth);
		if (!h)
			goto nomem;
		*headers = h;
	}
	return 0;
curl_fail:
	set_err(err, "%s: libcurl refused a TLS option", cfg->origin);
	return -1;
nomem:
	set_err(err, "%s: out of memory", cfg->origin);
	return -1;
}
