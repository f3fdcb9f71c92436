/* kubeconfig files, parsed with libyaml: one file, or the $KUBECONFIG list
 * merged as kubectl merges it. Used by kube_config.c, which owns the
 * result (struct kube_config). Exec plugins are set up, never run here. */
#ifndef NRBC_KUBE_KUBECONFIG_H
#define NRBC_KUBE_KUBECONFIG_H

#include <stddef.h>

struct kube_config;

/* Text of one kubeconfig; base_dir resolves its relative paths. */
struct kube_config *kube_kubeconfig_parse(const char *text, size_t len, const char *base_dir,
    const char *context, char **err);
struct kube_config *kube_kubeconfig_load_file(const char *path, const char *context,
    char **err);
/* A colon-separated list: a context, cluster or user comes whole from the
 * first file naming it, current-context from the first file setting one;
 * missing files are skipped (all missing is an error). */
struct kube_config *kube_kubeconfig_load_list(const char *list, const char *context,
    char **err);

#endif
