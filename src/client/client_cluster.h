/* Reads from the cluster what a Nix client needs, with `get` only: the
 * proxy's Service (its external address and SSH port), the nrbc-client
 * ConfigMap (user, systems, builder slots, features; from the manifests),
 * the ConfigMap with the proxy's public host key (the operator publishes
 * it; the Secret with the private half stays unreadable) and, with `list`,
 * the NixBuilderClasses. */
#ifndef NRBC_CLIENT_CLUSTER_H
#define NRBC_CLIENT_CLUSTER_H

#include <jansson.h>

#include "client_render.h"
#include "kube/kube_config.h"

struct client_cluster_names {
	const char *ns;          /* "nrbc" */
	const char *service;     /* "nrbc-proxy" */
	const char *config_map;  /* "nrbc-client" */
	const char *host_key_config_map; /* "nrbc-host-key", key "host-key.pub" */
	const char *address; /* NULL, or where this machine reaches the proxy */
	long port;           /* 0, or the port that goes with address */
};

struct client_cluster;

/* Runs the three GETs and the LIST on a loop of its own and returns when
 * all answered. NULL with *err (heap) saying which object is missing or
 * forbidden and what to do about it. A LIST answered 404 (no CRD) or 403
 * (an older Role) means no classes, and a warning. */
struct client_cluster *client_cluster_fetch(struct kube_config *cfg,
    const struct client_cluster_names *names, char **err);
void client_cluster_destroy(struct client_cluster *cc);
/* Valid while cc lives. */
const struct client_facts *client_cluster_facts(const struct client_cluster *cc);
/* The NixBuilderClasses that parsed, without the default class; valid
 * while cc lives, and the caller's to add to and select from. */
struct client_class_list *client_cluster_classes(struct client_cluster *cc);
/* Warning lines (each ending in "\n") about classes left out, or NULL. */
const char *client_cluster_warnings(const struct client_cluster *cc);

/* Pure: the facts from the three objects (borrowed into f). 0, or -1 with
 * *err (heap). */
int client_cluster_facts_from(const json_t *service, const json_t *config_map,
    const json_t *host_key_config_map, const struct client_cluster_names *names,
    struct client_facts *f, char **err);

#endif
