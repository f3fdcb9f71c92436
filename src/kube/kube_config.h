/* Where the Kubernetes API is and how to authenticate to it: in-cluster
 * service-account files, or kubeconfig files (kube_kubeconfig.c parses and
 * merges them; kube_exec.c runs their credential plugins). */
#ifndef NRBC_KUBE_CONFIG_H
#define NRBC_KUBE_CONFIG_H

#include <curl/curl.h>

struct kube_config;

/* Loads, in order of preference: the kubeconfig at path (when non-NULL), the
 * in-cluster config (when KUBERNETES_SERVICE_HOST is set), $KUBECONFIG, then
 * ~/.kube/config. context NULL means the file's current-context.
 * $KUBECONFIG is a colon-separated list merged as kubectl merges it: a
 * context, cluster or user comes whole from the first file naming it,
 * current-context from the first file setting it; missing files are
 * skipped. A user's exec credential plugin runs once here, so that a
 * missing or failing plugin is an error now.
 * On failure returns NULL and sets *err to a heap message naming the file
 * and the field that is wrong (the caller frees it). */
struct kube_config *kube_config_load(const char *path, const char *context, char **err);

/* In-cluster: KUBERNETES_SERVICE_HOST/PORT and the service-account files in
 * dir (NULL: /var/run/secrets/kubernetes.io/serviceaccount, overridable with
 * NRBC_SERVICEACCOUNT_DIR for tests): token, ca.crt, namespace. */
struct kube_config *kube_config_in_cluster(const char *dir, char **err);

/* Parses kubeconfig text; base_dir resolves relative file paths. Never runs
 * an exec plugin (that waits for the first kube_config_apply). */
struct kube_config *kube_config_parse(const char *text, size_t len, const char *base_dir,
    const char *context, char **err);

void kube_config_destroy(struct kube_config *cfg);

/* "https://127.0.0.1:6443" without a trailing slash. */
const char *kube_config_server(const struct kube_config *cfg);
/* The context's namespace, the in-cluster namespace file, or "default". */
const char *kube_config_namespace(const struct kube_config *cfg);

/* The URL requests go to: the server, or with tls-server-name the server
 * with that name as its host (kube_config_apply then connects to the real
 * host with CURLOPT_CONNECT_TO, so SNI and the certificate check use the
 * name). */
const char *kube_config_request_base(const struct kube_config *cfg);
/* NULL when the kubeconfig sets none. */
const char *kube_config_tls_server_name(const struct kube_config *cfg);
const char *kube_config_proxy_url(const struct kube_config *cfg);

/* Tells the configuration how the API answered: a 401 drops a cached exec
 * credential so the plugin runs again for the next request. */
void kube_config_note_status(struct kube_config *cfg, long status);
/* How many times the exec plugin ran (0 without one); for tests. */
unsigned kube_config_exec_runs(const struct kube_config *cfg);

/* Sets TLS options (CA, client certificate, verification, tls-server-name,
 * proxy-url) on an easy handle and appends an "Authorization: Bearer"
 * header when a token is configured. An exec plugin runs here when its
 * cached credential has expired or was refused (this blocks the caller,
 * bounded by a timeout).
 * A token file is re-read when its modification time changes, so rotated
 * service-account tokens are picked up. Returns 0, or -1 with *err set. */
int kube_config_apply(struct kube_config *cfg, CURL *easy, struct curl_slist **headers,
    char **err);

#endif
