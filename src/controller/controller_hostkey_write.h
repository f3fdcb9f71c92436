/* A builder pod's host key Secret, written before its pod: the one chain
 * both the builder pass (a NixBuilder's pod) and the request pass (a
 * request's own pod) use, so no pod the controller makes carries a host
 * key that is worth anything beyond it. Below the passes: it calls none
 * of them. */
#ifndef NRBC_CONTROLLER_HOSTKEY_WRITE_H
#define NRBC_CONTROLLER_HOSTKEY_WRITE_H

struct reconcile_op;

/* What the pass does once the Secret exists: build and create the pod
 * with op->host_key.public_line in its annotation. */
typedef void (*reconcile_host_key_then)(struct reconcile_op *op, const char *secret);

/* Makes a fresh key pair into op->host_key and creates the Secret
 * "<pod_name>-host-key" in ns holding its private half, controlled by
 * op->nbr, whose kind is owner_kind ("NixBuilder", "NixBuildRequest"), so
 * it goes with its owner. A Secret of that name already there was made by
 * an earlier try whose pod never came, and nobody knows its public half
 * (the controller may not read Secrets): it is deleted and made anew.
 * Then then(op, secret name); on failure the pass ends with a retry. */
void reconcile_create_host_key(struct reconcile_op *op, const char *ns, const char *pod_name,
    const char *owner_kind, reconcile_host_key_then then);

#endif
