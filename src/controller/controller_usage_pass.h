/* The usage pass: one identity's NixUsage brought up to date from the
 * ledger (sessions ended, builders gone) and the builder table (its live
 * builders, whose time runs). Made when missing, its status written with
 * the cached resourceVersion: a 409 retries the pass with what the ledger
 * still holds, so nothing is lost or counted twice. While the identity has
 * live builders, the pass comes back every --usage-interval to move their
 * time forward. A malformed status is never written over: the pass logs
 * which field, keeps what it would have added, and tries again later. */
#ifndef NRBC_CONTROLLER_USAGE_PASS_H
#define NRBC_CONTROLLER_USAGE_PASS_H

struct reconcile_op;

/* Usage keys: this prefix, then "ns/identity". */
#define USAGE_KEY_PREFIX "nu:"
/* The queue key of identity's usage pass in ns. Heap string. */
char *reconcile_usage_queue_key(const char *ns, const char *identity);

/* op->key: USAGE_KEY_PREFIX "ns/identity"; op->nbr: the cached NixUsage
 * or NULL. */
void reconcile_usage(struct reconcile_op *op);

#endif
