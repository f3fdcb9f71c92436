/* Where the Kubernetes API is and how to authenticate to it: in-cluster
 * service-account files or a kubeconfig file (parsed with libyaml). */
#ifndef NRBC_KUBE_CONFIG_H
#define NRBC_KUBE_CONFIG_H

#include <curl/curl.h>

struct kube_config;

/* Loads, in order of preference: the kubeconfig at path (when non-NULL), the
 * in-cluster config (when KUBERNETES_SERVICE_HOST is set), $KUBECONFIG, then
 * ~/.kube/config. context NULL means the file's current-context.
 * On failure returns NULL and sets *err to a heap message naming the file
 * and the field that is wrong (the caller frees it). */
struct kube_config *kube_config_load(const char *path, const char *context, char **err);

/* In-cluster: KUBERNETES_SERVICE_HOST/PORT and the service-account files in
 * dir (NULL: /var/run/secrets/kubernetes.io/serviceaccount, overridable with
 * NRBC_SERVICEACCOUNT_DIR for tests): token, ca.crt, namespace. */
struct kube_config *kube_config_in_cluster(const char *dir, char **err);

/* Parses kubeconfig text; base_dir resolves relative file paths. */
struct kube_config *kube_config_parse(const char *text, size_t len, const char *base_dir,
    const char *context, char **err);

void kube_config_destroy(struct kube_config *cfg);

/* "https://127.0.0.1:6443" without a trailing slash. */
const char *kube_config_server(const struct kube_config *cfg);
/* The context's namespace, the in-cluster namespace file, or "default". */
const char *kube_config_namespace(const struct kube_config *cfg);

/* Sets TLS options (CA, client certificate, verification) on an easy handle
 * and appends an "Authorization: Bearer" header when a token is configured.
 * A token file is re-read when its modification time changes, so rotated
 * service-account tokens are picked up. Returns 0, or -1 with *err set. */
int kube_config_apply(struct kube_config *cfg, CURL *easy, struct curl_slist **headers,
    char **err);

#endif
