/* Where a configuration comes from: --kubeconfig, the pod's service
 * account, $KUBECONFIG, ~/.kube/config; the kubeconfig format itself is
 * kube_kubeconfig.c's, the in-cluster one kube_config.c's. */
#include "kube_config.h"

#include <stdlib.h>
#include <time.h>

#include "buf.h"
#include "kube_config_private.h"
#include "kube_exec.h"
#include "kube_kubeconfig.h"

struct kube_config *kube_config_parse(const char *text, size_t len, const char *base_dir,
    const char *context, char **err)
{
	return kube_kubeconfig_parse(text, len, base_dir, context, err);
}

/* The exec plugin runs at load time so that a missing or failing plugin is
 * reported at start-up, not as a failed first request. */
static struct kube_config *prime_exec(struct kube_config *cfg, char **err)
{
	const char *token, *cert, *key;

	if (cfg && cfg->exec &&
	    kube_exec_credential(cfg->exec, time(NULL), &token, &cert, &key, err) < 0) {
		kube_config_destroy(cfg);
		return NULL;
	}
	return cfg;
}

struct kube_config *kube_config_load(const char *path, const char *context, char **err)
{
	const char *env, *home, *host;
	struct kube_config *cfg;
	char *def;

	if (path && path[0])
		return prime_exec(kube_kubeconfig_load_file(path, context, err), err);
	host = getenv("KUBERNETES_SERVICE_HOST");
	if (host && host[0])
		return kube_config_in_cluster(NULL, err);
	env = getenv("KUBECONFIG");
	if (env && env[0])
		return prime_exec(kube_kubeconfig_load_list(env, context, err), err);
	home = getenv("HOME");
	if (!home || !home[0]) {
		kube_config_set_err(err, "kubeconfig: no --kubeconfig, KUBERNETES_SERVICE_HOST, KUBECONFIG or "
		    "HOME to find one");
		return NULL;
	}
	def = str_printf("%s/.kube/config", home);
	if (!def) {
		kube_config_set_err(err, "kubeconfig: out of memory");
		return NULL;
	}
	cfg = kube_kubeconfig_load_file(def, context, err);
	free(def);
	return prime_exec(cfg, err);
}
