#include "kube_kubeconfig.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "base64.h"
#include "buf.h"
#include "kube_config_private.h"
#include "kube_exec.h"

static char *resolve_path(const char *base_dir, const char *path)
{
	if (path[0] == '/' || !base_dir || !base_dir[0])
		return strdup(path);
	return str_printf("%s/%s", base_dir, path);
}

/* ---------- YAML navigation ---------- */

struct kc_parse {
	yaml_document_t *doc;
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
	yaml_node_t *n = map_get(kp->doc, map, key);

	*out = NULL;
	if (!n)
		return 0;
	if (n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0)
		return 0; /* "key:" with nothing is null in YAML */
	*out = scalar(n);
	if (!*out) {
		kube_config_set_err(kp->err, "%s: %s.%s: expected a string", kp->origin, path, key);
		return -1;
	}
	return 0;
}

/* Finds the entry of the list `list` (e.g. "contexts") whose name is `name`
 * and returns its `inner` mapping (e.g. "context"). NULL with *absent set
 * when this document has no such entry; NULL with an error when it is
 * malformed. */
static yaml_node_t *find_named(struct kc_parse *kp, yaml_node_t *root, const char *list,
    const char *inner, const char *name, char *path, size_t pathlen, bool *absent)
{
	yaml_node_t *seq = map_get(kp->doc, root, list);
	yaml_node_item_t *it;
	size_t i = 0;

	*absent = false;
	if (seq && seq->type == YAML_SCALAR_NODE && seq->data.scalar.length == 0)
		seq = NULL; /* "users:" with nothing is an empty list */
	if (seq && seq->type != YAML_SEQUENCE_NODE) {
		kube_config_set_err(kp->err, "%s: %s: expected a list", kp->origin, list);
		return NULL;
	}
	if (seq) {
		for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
		    it++, i++) {
			yaml_node_t *entry = yaml_document_get_node(kp->doc, *it);
			const char *n = scalar(map_get(kp->doc, entry, "name"));
			yaml_node_t *body;

			if (!n || strcmp(n, name) != 0)
				continue;
			snprintf(path, pathlen, "%s[%zu].%s", list, i, inner);
			body = map_get(kp->doc, entry, inner);
			if (!body || body->type != YAML_MAPPING_NODE) {
				kube_config_set_err(kp->err, "%s: %s: missing or not a mapping", kp->origin,
				    path);
				return NULL;
			}
			return body;
		}
	}
	*absent = true;
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
		out->data = base64_decode_lenient(data, strlen(data), &out->len);
		if (!out->data) {
			kube_config_set_err(kp->err, "%s: %s.%s: invalid base64", kp->origin, path, data_key);
			return -1;
		}
		return 0;
	}
	if (!file)
		return 0;
	full = resolve_path(kp->base_dir, file);
	if (!full) {
		kube_config_set_err(kp->err, "%s: out of memory", kp->origin);
		return -1;
	}
	rc = kube_config_read_file(full, KUBE_CONFIG_MAX_FILE, out);
	if (rc < 0) {
		kube_config_set_err(kp->err, "%s: %s.%s: cannot read %s: %s", kp->origin, path, file_key, full,
		    kube_config_file_error(rc));
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

/* tls-server-name: requests go to https://NAME:PORT/... so that libcurl
 * sends NAME as SNI and checks the certificate against it, while
 * CURLOPT_CONNECT_TO sends the connection to the server's real host:port.
 * The Host header carries NAME too; the API server does not look at it. */
static int set_tls_server_name(struct kc_parse *kp, const char *path, struct kube_config *cfg,
    const char *name)
{
	const char *scheme_end = strstr(cfg->server, "://"), *auth, *end, *host_end, *rest;
	char *host = NULL, *port = NULL, *connect;
	struct curl_slist *l;
	bool https = strncmp(cfg->server, "https://", 8) == 0;

	if (!scheme_end) {
		kube_config_set_err(kp->err, "%s: %s.server: \"%s\" has no host", kp->origin, path,
		    cfg->server);
		return -1;
	}
	auth = scheme_end + 3;
	if (strpbrk(name, ":/[]@ ?#")) {
		kube_config_set_err(kp->err, "%s: %s.tls-server-name: \"%s\" is not a host name", kp->origin,
		    path, name);
		return -1;
	}
	rest = auth + strcspn(auth, "/?#");
	if (auth[0] == '[') {
		end = memchr(auth, ']', (size_t)(rest - auth));
		if (!end)
			goto bad_server;
		host_end = end + 1;
	} else {
		host_end = memchr(auth, ':', (size_t)(rest - auth));
		if (!host_end)
			host_end = rest;
	}
	if (host_end == auth)
		goto bad_server;
	host = strndup(auth, (size_t)(host_end - auth));
	if (host_end < rest && *host_end == ':' && host_end + 1 < rest)
		port = strndup(host_end + 1, (size_t)(rest - host_end - 1));
	else if (host_end == rest)
		port = strdup(https ? "443" : "80");
	else
		goto bad_server;
	if (!host || !port)
		goto nomem;
	cfg->tls_server_name = strdup(name);
	cfg->request_base = str_printf("%s://%s:%s%s", https ? "https" : "http", name, port,
	    rest);
	connect = str_printf("%s:%s:%s:%s", name, port, host, port);
	if (!cfg->tls_server_name || !cfg->request_base || !connect)
		goto nomem_connect;
	l = curl_slist_append(NULL, connect);
	free(connect);
	if (!l)
		goto nomem;
	cfg->connect_to = l;
	free(host);
	free(port);
	return 0;
nomem_connect:
	free(connect);
nomem:
	free(host);
	free(port);
	kube_config_set_err(kp->err, "%s: out of memory", kp->origin);
	return -1;
bad_server:
	free(host);
	free(port);
	kube_config_set_err(kp->err, "%s: %s.server: \"%s\" has no host[:port] to send tls-server-name to",
	    kp->origin, path, cfg->server);
	return -1;
}

static int parse_cluster(struct kc_parse *kp, yaml_node_t *cluster, const char *path,
    struct kube_config *cfg)
{
	const char *server, *insecure, *tls_name, *proxy;
	size_t n;

	if (get_str(kp, cluster, path, "server", &server) < 0)
		return -1;
	if (!server) {
		kube_config_set_err(kp->err, "%s: %s.server: missing", kp->origin, path);
		return -1;
	}
	if (strncmp(server, "https://", 8) != 0 && strncmp(server, "http://", 7) != 0) {
		kube_config_set_err(kp->err, "%s: %s.server: \"%s\" is not an http(s) URL", kp->origin, path,
		    server);
		return -1;
	}
	cfg->server = strdup(server);
	if (!cfg->server)
		goto nomem;
	n = strlen(cfg->server);
	while (n > 0 && cfg->server[n - 1] == '/')
		cfg->server[--n] = '\0';
	if (!strstr(cfg->server, "://")) {
		/* "https:///" is all slashes after the scheme. */
		kube_config_set_err(kp->err, "%s: %s.server: \"%s\" has no host", kp->origin, path,
		    server);
		return -1;
	}
	if (get_str(kp, cluster, path, "insecure-skip-tls-verify", &insecure) < 0)
		return -1;
	if (insecure && strcmp(insecure, "true") == 0)
		cfg->insecure = true;
	else if (insecure && strcmp(insecure, "false") != 0) {
		kube_config_set_err(kp->err, "%s: %s.insecure-skip-tls-verify: expected true or false",
		    kp->origin, path);
		return -1;
	}
	if (get_str(kp, cluster, path, "tls-server-name", &tls_name) < 0 ||
	    get_str(kp, cluster, path, "proxy-url", &proxy) < 0)
		return -1;
	if (tls_name && tls_name[0] && set_tls_server_name(kp, path, cfg, tls_name) < 0)
		return -1;
	if (proxy && proxy[0]) {
		if (!strstr(proxy, "://")) {
			kube_config_set_err(kp->err, "%s: %s.proxy-url: \"%s\" is not a URL (http://, https:// "
			    "or socks5://)", kp->origin, path, proxy);
			return -1;
		}
		if (!(cfg->proxy_url = strdup(proxy)))
			goto nomem;
	}
	return load_blob(kp, cluster, path, "certificate-authority",
	    "certificate-authority-data", &cfg->ca);
nomem:
	kube_config_set_err(kp->err, "%s: out of memory", kp->origin);
	return -1;
}

/* A list of strings ("args"); absent is empty. Returns the count or -1. */
static int get_str_list(struct kc_parse *kp, yaml_node_t *map, const char *path,
    const char *key, const char **out, size_t max)
{
	yaml_node_t *seq = map_get(kp->doc, map, key);
	yaml_node_item_t *it;
	size_t n = 0;

	if (!seq || (seq->type == YAML_SCALAR_NODE && seq->data.scalar.length == 0))
		return 0;
	if (seq->type != YAML_SEQUENCE_NODE)
		goto bad;
	for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++) {
		const char *v = scalar(yaml_document_get_node(kp->doc, *it));

		if (!v)
			goto bad;
		if (n == max) {
			kube_config_set_err(kp->err, "%s: %s.%s: more than %zu entries", kp->origin, path, key,
			    max);
			return -1;
		}
		out[n++] = v;
	}
	return (int)n;
bad:
	kube_config_set_err(kp->err, "%s: %s.%s: expected a list of strings", kp->origin, path, key);
	return -1;
}

/* KUBERNETES_EXEC_INFO's spec.cluster, for provideClusterInfo. */
static char *cluster_info_json(const struct kube_config *cfg)
{
	json_t *c = json_pack("{s:s}", "server", cfg->server);
	char *ca = NULL, *text = NULL;

	if (!c)
		return NULL;
	if (cfg->ca.data) {
		ca = base64_encode(cfg->ca.data, cfg->ca.len);
		if (!ca || json_object_set_new(c, "certificate-authority-data", json_string(ca)))
			goto out;
	}
	if ((cfg->tls_server_name && json_object_set_new(c, "tls-server-name",
	    json_string(cfg->tls_server_name))) ||
	    (cfg->proxy_url && json_object_set_new(c, "proxy-url", json_string(cfg->proxy_url))) ||
	    (cfg->insecure && json_object_set_new(c, "insecure-skip-tls-verify", json_true())))
		goto out;
	text = json_dumps(c, JSON_COMPACT);
out:
	free(ca);
	json_decref(c);
	return text;
}

#define KUBE_CONFIG_MAX_EXEC_ITEMS 64

/* user.exec: an exec credential plugin (kube_exec runs it). */
static int parse_exec(struct kc_parse *kp, yaml_node_t *exec, const char *user_path,
    struct kube_config *cfg)
{
	const char *args[KUBE_CONFIG_MAX_EXEC_ITEMS], *provide, *interactive;
	char *env[KUBE_CONFIG_MAX_EXEC_ITEMS] = { 0 }, *cluster = NULL, path[96], *origin = NULL;
	struct kube_exec_spec spec = { .base_dir = kp->base_dir };
	yaml_node_t *envs;
	yaml_node_item_t *it;
	int nargs, rc = -1;
	size_t nenv = 0;

	snprintf(path, sizeof(path), "%s.exec", user_path);
	if (exec->type != YAML_MAPPING_NODE) {
		kube_config_set_err(kp->err, "%s: %s: expected a mapping", kp->origin, path);
		return -1;
	}
	if (get_str(kp, exec, path, "apiVersion", &spec.api_version) < 0 ||
	    get_str(kp, exec, path, "command", &spec.command) < 0 ||
	    get_str(kp, exec, path, "installHint", &spec.install_hint) < 0 ||
	    get_str(kp, exec, path, "provideClusterInfo", &provide) < 0 ||
	    get_str(kp, exec, path, "interactiveMode", &interactive) < 0)
		return -1;
	if (interactive && strcmp(interactive, "Always") == 0) {
		kube_config_set_err(kp->err, "%s: %s.interactiveMode: Always needs a terminal; nrbc runs "
		    "plugins without one (use IfAvailable or Never)", kp->origin, path);
		return -1;
	}
	nargs = get_str_list(kp, exec, path, "args", args, KUBE_CONFIG_MAX_EXEC_ITEMS);
	if (nargs < 0)
		return -1;
	spec.args = args;
	spec.nargs = (size_t)nargs;
	envs = map_get(kp->doc, exec, "env");
	if (envs && !(envs->type == YAML_SCALAR_NODE && envs->data.scalar.length == 0)) {
		if (envs->type != YAML_SEQUENCE_NODE)
			goto bad_env;
		for (it = envs->data.sequence.items.start; it < envs->data.sequence.items.top;
		    it++) {
			yaml_node_t *e = yaml_document_get_node(kp->doc, *it);
			const char *name = scalar(map_get(kp->doc, e, "name"));
			const char *value = scalar(map_get(kp->doc, e, "value"));

			if (!name || !name[0] || strchr(name, '=') || !value)
				goto bad_env;
			if (nenv == KUBE_CONFIG_MAX_EXEC_ITEMS) {
				kube_config_set_err(kp->err, "%s: %s.env: more than %d entries", kp->origin,
				    path, KUBE_CONFIG_MAX_EXEC_ITEMS);
				goto out;
			}
			if (!(env[nenv++] = str_printf("%s=%s", name, value)))
				goto nomem;
		}
	}
	spec.env = (const char *const *)env;
	spec.nenv = nenv;
	if (provide && strcmp(provide, "true") == 0) {
		if (!(cluster = cluster_info_json(cfg)))
			goto nomem;
		spec.cluster_json = cluster;
	}
	origin = str_printf("%s: %s", kp->origin, user_path);
	if (!origin)
		goto nomem;
	cfg->exec = kube_exec_create(&spec, origin, kp->err);
	rc = cfg->exec ? 0 : -1;
	goto out;
bad_env:
	kube_config_set_err(kp->err, "%s: %s.env: expected a list of {name, value}", kp->origin, path);
	goto out;
nomem:
	kube_config_set_err(kp->err, "%s: out of memory", kp->origin);
out:
	for (size_t i = 0; i < nenv; i++)
		free(env[i]);
	free(cluster);
	free(origin);
	return rc;
}

static int parse_user(struct kc_parse *kp, yaml_node_t *user, const char *path,
    struct kube_config *cfg)
{
	const char *token, *token_file, *username, *password;

	yaml_node_t *exec = map_get(kp->doc, user, "exec");

	if (map_get(kp->doc, user, "auth-provider")) {
		kube_config_set_err(kp->err, "%s: %s: auth-provider credentials are not supported (kubectl "
		    "dropped them too); use an exec plugin, a token or a client certificate",
		    kp->origin, path);
		return -1;
	}
	if (exec && parse_exec(kp, exec, path, cfg) < 0)
		return -1;
	if (load_blob(kp, user, path, "client-certificate", "client-certificate-data",
	    &cfg->cert) < 0)
		return -1;
	if (load_blob(kp, user, path, "client-key", "client-key-data", &cfg->key) < 0)
		return -1;
	if (!cfg->cert.data != !cfg->key.data) {
		kube_config_set_err(kp->err, "%s: %s: client-certificate and client-key must be given together",
		    kp->origin, path);
		return -1;
	}
	if (get_str(kp, user, path, "token", &token) < 0 ||
	    get_str(kp, user, path, "tokenFile", &token_file) < 0 ||
	    get_str(kp, user, path, "username", &username) < 0 ||
	    get_str(kp, user, path, "password", &password) < 0)
		return -1;
	if (token && !kube_config_token_valid(token)) {
		kube_config_set_err(kp->err, "%s: %s.token: empty or contains control characters",
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
	kube_config_set_err(kp->err, "%s: out of memory", kp->origin);
	return -1;
}

/* One kubeconfig document; a merged configuration has several. */
struct kc_doc {
	yaml_document_t doc;
	bool loaded;
	bool empty; /* an empty file defines nothing, as for kubectl */
	char *origin;   /* "kubeconfig PATH", for messages */
	char *base_dir; /* resolves the file's relative paths */
};

static void doc_finish(struct kc_doc *d)
{
	if (d->loaded)
		yaml_document_delete(&d->doc);
	d->loaded = false;
	free(d->origin);
	free(d->base_dir);
	d->origin = d->base_dir = NULL;
}

/* Parses YAML text into d (origin and base_dir already set). */
static int doc_load(struct kc_doc *d, const char *text, size_t len, char **err)
{
	yaml_parser_t parser;
	yaml_node_t *root;

	if (!yaml_parser_initialize(&parser)) {
		kube_config_set_err(err, "%s: out of memory", d->origin);
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &d->doc)) {
		kube_config_set_err(err, "%s: invalid YAML at line %zu column %zu: %s", d->origin,
		    parser.problem_mark.line + 1, parser.problem_mark.column + 1,
		    parser.problem ? parser.problem : "unknown error");
		yaml_parser_delete(&parser);
		return -1;
	}
	yaml_parser_delete(&parser);
	d->loaded = true;
	root = yaml_document_get_root_node(&d->doc);
	if (!root) {
		d->empty = true;
		return 0;
	}
	if (root->type != YAML_MAPPING_NODE) {
		kube_config_set_err(err, "%s: top level is not a mapping", d->origin);
		return -1;
	}
	return 0;
}

static struct kc_parse doc_parse(struct kc_doc *d, char **err)
{
	struct kc_parse kp = { .doc = &d->doc, .origin = d->origin, .base_dir = d->base_dir,
		.err = err };

	return kp;
}

/* kubectl's merge of $KUBECONFIG: for contexts, clusters and users the
 * first file that defines a name wins, whole. *found is that file. */
static yaml_node_t *merged_find(struct kc_doc *docs, size_t n, const char *list,
    const char *what, const char *inner, const char *name, char *path, size_t pathlen,
    struct kc_parse *found, const char *origin, char **err)
{
	for (size_t i = 0; i < n; i++) {
		struct kc_parse kp = doc_parse(&docs[i], err);
		yaml_node_t *body;
		bool absent;

		if (docs[i].empty)
			continue;
		body = find_named(&kp, yaml_document_get_root_node(kp.doc), list, inner, name,
		    path, pathlen, &absent);
		if (body) {
			*found = kp;
			return body;
		}
		if (!absent)
			return NULL;
	}
	kube_config_set_err(err, "%s: %s \"%s\" not found", origin, what, name);
	return NULL;
}

/* current-context from the first file that sets one. */
static int merged_current_context(struct kc_doc *docs, size_t n, const char *origin,
    const char **context, char **err)
{
	for (size_t i = 0; i < n; i++) {
		struct kc_parse kp = doc_parse(&docs[i], err);

		if (docs[i].empty)
			continue;
		if (get_str(&kp, yaml_document_get_root_node(kp.doc), "", "current-context",
		    context) < 0)
			return -1;
		if (*context && (*context)[0])
			return 0;
	}
	kube_config_set_err(err, "%s: current-context is not set and no context was given", origin);
	return -1;
}

static struct kube_config *resolve(struct kc_doc *docs, size_t n, const char *context,
    const char *origin, char **err)
{
	struct kc_parse ctx_kp, cluster_kp, user_kp;
	yaml_node_t *ctx, *cluster, *user;
	struct kube_config *cfg = NULL;
	const char *cluster_name, *user_name, *ns;
	char ctx_path[64], cluster_path[64], user_path[64];
	bool any = false;

	for (size_t i = 0; i < n; i++)
		any = any || !docs[i].empty;
	if (!any) {
		kube_config_set_err(err, "%s: empty document", origin);
		return NULL;
	}
	if (!context && merged_current_context(docs, n, origin, &context, err) < 0)
		return NULL;
	ctx = merged_find(docs, n, "contexts", "context", "context", context, ctx_path,
	    sizeof(ctx_path), &ctx_kp, origin, err);
	if (!ctx)
		return NULL;
	if (get_str(&ctx_kp, ctx, ctx_path, "cluster", &cluster_name) < 0 ||
	    get_str(&ctx_kp, ctx, ctx_path, "user", &user_name) < 0 ||
	    get_str(&ctx_kp, ctx, ctx_path, "namespace", &ns) < 0)
		return NULL;
	if (!cluster_name) {
		kube_config_set_err(err, "%s: %s.cluster: missing", ctx_kp.origin, ctx_path);
		return NULL;
	}
	cluster = merged_find(docs, n, "clusters", "cluster", "cluster", cluster_name,
	    cluster_path, sizeof(cluster_path), &cluster_kp, origin, err);
	if (!cluster)
		return NULL;
	cfg = kube_config_new(origin);
	if (!cfg) {
		kube_config_set_err(err, "%s: out of memory", origin);
		return NULL;
	}
	if (parse_cluster(&cluster_kp, cluster, cluster_path, cfg) < 0)
		goto fail;
	if (user_name && user_name[0]) {
		user = merged_find(docs, n, "users", "user", "user", user_name, user_path,
		    sizeof(user_path), &user_kp, origin, err);
		if (!user || parse_user(&user_kp, user, user_path, cfg) < 0)
			goto fail;
	}
	cfg->ns = strdup(ns && ns[0] ? ns : "default");
	if (!cfg->ns) {
		kube_config_set_err(err, "%s: out of memory", origin);
		goto fail;
	}
	/* Read a token file now so a wrong path is reported at start-up. */
	if (cfg->token_file && kube_config_token_refresh(cfg, err) < 0)
		goto fail;
	return cfg;
fail:
	kube_config_destroy(cfg);
	return NULL;
}

struct kube_config *kube_kubeconfig_parse(const char *text, size_t len, const char *base_dir,
    const char *context, char **err)
{
	struct kc_doc d = { 0 };
	struct kube_config *cfg = NULL;

	d.origin = strdup("kubeconfig");
	d.base_dir = strdup(base_dir ? base_dir : "");
	if (!d.origin || !d.base_dir)
		kube_config_set_err(err, "kubeconfig: out of memory");
	else if (doc_load(&d, text, len, err) == 0)
		cfg = resolve(&d, 1, context, d.origin, err);
	doc_finish(&d);
	return cfg;
}

/* Reads and parses one file into d. ENOENT is returned as 1 (kubectl skips
 * missing files in $KUBECONFIG); other failures -1 with *err. */
static int doc_load_file(struct kc_doc *d, const char *path, bool missing_ok, char **err)
{
	struct kube_blob text;
	char *slash;
	int rc;

	d->origin = str_printf("kubeconfig %s", path);
	d->base_dir = strdup(path);
	if (!d->origin || !d->base_dir) {
		kube_config_set_err(err, "kubeconfig %s: out of memory", path);
		return -1;
	}
	slash = strrchr(d->base_dir, '/');
	if (slash)
		*slash = '\0';
	else
		d->base_dir[0] = '\0';
	if (slash == d->base_dir)
		snprintf(d->base_dir, 2, "/");
	rc = kube_config_read_file(path, KUBE_CONFIG_MAX_FILE, &text);
	if (rc == -ENOENT && missing_ok)
		return 1;
	if (rc < 0) {
		kube_config_set_err(err, "%s: cannot read: %s", d->origin, kube_config_file_error(rc));
		return -1;
	}
	rc = doc_load(d, text.data, text.len, err);
	kube_config_blob_free(&text);
	return rc;
}

#define KUBE_CONFIG_MAX_FILES 32

/* $KUBECONFIG: a colon-separated list, merged as kubectl merges it. */
struct kube_config *kube_kubeconfig_load_list(const char *list, const char *context,
    char **err)
{
	struct kc_doc docs[KUBE_CONFIG_MAX_FILES] = { 0 };
	struct kube_config *cfg = NULL;
	char *copy = strdup(list), *p, *next, *origin = NULL;
	size_t n = 0;
	int rc;

	if (!copy) {
		kube_config_set_err(err, "kubeconfig: out of memory");
		return NULL;
	}
	for (p = copy; p; p = next) {
		next = strchr(p, ':');
		if (next)
			*next++ = '\0';
		if (!p[0])
			continue;
		if (n == KUBE_CONFIG_MAX_FILES) {
			kube_config_set_err(err, "KUBECONFIG: more than %d files", KUBE_CONFIG_MAX_FILES);
			goto out;
		}
		rc = doc_load_file(&docs[n], p, true, err);
		if (rc < 0) {
			n++;
			goto out;
		}
		if (rc == 1) {
			doc_finish(&docs[n]);
			continue;
		}
		n++;
	}
	if (n == 0) {
		kube_config_set_err(err, "KUBECONFIG=%s: none of its files exists", list);
		goto out;
	}
	origin = n == 1 ? strdup(docs[0].origin) : str_printf("kubeconfig %s", list);
	if (!origin) {
		kube_config_set_err(err, "kubeconfig: out of memory");
		goto out;
	}
	cfg = resolve(docs, n, context, origin, err);
out:
	for (size_t i = 0; i < n; i++)
		doc_finish(&docs[i]);
	free(origin);
	free(copy);
	return cfg;
}

struct kube_config *kube_kubeconfig_load_file(const char *path, const char *context,
    char **err)
{
	struct kc_doc d = { 0 };
	struct kube_config *cfg = NULL;

	if (doc_load_file(&d, path, false, err) == 0)
		cfg = resolve(&d, 1, context, d.origin, err);
	doc_finish(&d);
	return cfg;
}
