/* Builders of one identity substituting from each other. A builder logs in
 * to the proxy as PROXY_SIBLING_USER with its own host key (the key the
 * controller made for it, which the proxy pins when it connects to it) and
 * is bridged to another Running builder of the same identity: a key's new
 * builder fetches what its older builders hold inside the cluster, not
 * again over the client's uplink. Never across identities: a host key
 * means its builder's identity only, and an unclaimed pool builder has
 * none. What is known of builders comes from a NixBuilder informer
 * (spec.identity, status.hostKey, status.podIP, status.phase). */
#ifndef NRBC_PROXY_SIBLINGS_H
#define NRBC_PROXY_SIBLINGS_H

#include <jansson.h>

#include "proxy_builder.h"

/* The user name a builder logs in as to reach a sibling: not a builder
 * class name, whatever classes exist. */
#define PROXY_SIBLING_USER "nrbc-sibling"

struct kube_client;
struct proxy_siblings;

/* Watches the NixBuilders of namespace ns; targets are reached on port.
 * NULL when out of memory. */
struct proxy_siblings *proxy_siblings_create(struct kube_client *client, const char *ns,
    int port);
/* Accepts NULL. */
void proxy_siblings_destroy(struct proxy_siblings *s);

/* The builder whose status.hostKey is key_line ("type base64") and the
 * oldest other Running builder of its identity. 0 with *out filled, or -1
 * with *why (static text). */
int proxy_siblings_find(const struct proxy_siblings *s, const char *key_line,
    struct proxy_sibling *out, const char **why);

/* Pure: the same over a JSON array of NixBuilder objects. */
int proxy_siblings_pick(const json_t *builders, const char *key_line, int port,
    struct proxy_sibling *out, const char **why);

#endif
