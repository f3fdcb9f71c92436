/* Exec credential plugins (a kubeconfig user's `exec:`), as client-go runs
 * them: the command with its args and env plus KUBERNETES_EXEC_INFO, stdin
 * closed, stdout one ExecCredential (client.authentication.k8s.io/v1 or
 * v1beta1) with a bearer token or a client certificate and key. The result
 * is cached until status.expirationTimestamp, or until the API answers 401.
 *
 * Running the plugin blocks the caller (bounded by a timeout): it happens
 * once at start-up and again only when the credential expires or is
 * refused. In-cluster configurations never use it. */
#ifndef NRBC_KUBE_EXEC_H
#define NRBC_KUBE_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* What the kubeconfig says; every pointer is borrowed and copied. */
struct kube_exec_spec {
	const char *api_version;  /* client.authentication.k8s.io/v1 or v1beta1 */
	const char *command;      /* PATH look-up unless it has a '/' */
	const char *const *args;  /* nargs strings */
	size_t nargs;
	const char *const *env;   /* nenv "NAME=value" strings added to ours */
	size_t nenv;
	const char *install_hint; /* shown when the command is missing; may be NULL */
	const char *base_dir;     /* resolves a relative command path with a '/' */
	/* KUBERNETES_EXEC_INFO's spec.cluster (JSON object text) when the
	 * kubeconfig asks for provideClusterInfo; NULL otherwise. */
	const char *cluster_json;
};

struct kube_exec;

/* origin names the kubeconfig and user for messages. NULL with *err set
 * (heap) when the spec is unusable (unknown apiVersion, no command). */
struct kube_exec *kube_exec_create(const struct kube_exec_spec *spec, const char *origin,
    char **err);
/* Accepts NULL. Wipes cached secrets. */
void kube_exec_destroy(struct kube_exec *x);

/* The current credential, running the plugin when none is cached or the
 * cached one expired at `now`. Exactly one of *token or (*cert, *key) is set;
 * the pointers stay owned by x and valid until the next call. Returns 0, or
 * -1 with *err (heap) saying what the plugin did wrong, with its stderr. */
int kube_exec_credential(struct kube_exec *x, time_t now, const char **token,
    const char **cert, const char **key, char **err);

/* The API refused the credential (401): the next call runs the plugin again. */
void kube_exec_invalidate(struct kube_exec *x);

/* How many times the plugin ran (tests). */
unsigned kube_exec_runs(const struct kube_exec *x);

/* Parses a plugin's stdout. expected_version is the spec's apiVersion.
 * On success the heap strings are set (unused ones NULL) and *expiry is
 * the expirationTimestamp, or 0 when there is none. Returns 0, or -1 with
 * *err (heap). */
int kube_exec_parse(const char *text, size_t len, const char *expected_version,
    char **token, char **cert, char **key, time_t *expiry, char **err);

#endif
