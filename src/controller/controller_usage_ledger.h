/* The usage ledger: what the controller has counted and not yet written to
 * the API. Per identity ("ns/identity"): the counters of sessions that
 * ended since the last write of its NixUsage, and the builders it saw end
 * (with the time). Per builder ("ns/name"): the totals its NixBuilder's
 * status.usage shows. Pure: no I/O, no clock; the usage pass and the
 * builder pass read and settle it.
 *
 * A write in flight: usage_ledger_begin moves an identity's pending counts
 * aside (what the write adds); usage_ledger_end drops them when the write
 * landed, or puts them back when it did not, so a 409 or an API outage
 * loses nothing and counts nothing twice. At most one write per identity
 * is in flight (the work queue never runs one key twice at once). */
#ifndef NRBC_CONTROLLER_USAGE_LEDGER_H
#define NRBC_CONTROLLER_USAGE_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "controller_usage.h"

/* Builder ends remembered per identity until written; beyond, the oldest
 * is dropped and that builder's end is its last sighting (lastSeen). */
#define USAGE_LEDGER_MAX_ENDED 64

struct usage_ledger;

struct usage_ledger *usage_ledger_create(void);
/* Accepts NULL. */
void usage_ledger_destroy(struct usage_ledger *l);

/* A session of identity in ns ended; builder_key ("ns/name") is the builder
 * that served it, or NULL, and builder_seen what its cached status.usage
 * says (NULL: nothing). 0, or -1 when out of memory (nothing counted). */
int usage_ledger_session_ended(struct usage_ledger *l, const char *ns, const char *identity,
    const char *builder_key, const struct usage_counts *builder_seen,
    const struct usage_counts *c);
/* Builder name (uid) of identity in ns was seen gone at end_ms. 0 or -1. */
int usage_ledger_builder_ended(struct usage_ledger *l, const char *ns, const char *identity,
    const char *name, const char *uid, int64_t end_ms);

/* Whether identity in ns has anything not yet written. */
bool usage_ledger_pending(const struct usage_ledger *l, const char *ns, const char *identity);
/* Starts a write: *add gets the counts it adds, *ended and *n_ended the builder
 * ends it settles (valid until usage_ledger_end). Nothing pending: zeros.
 * A second begin before the end adds nothing more (the first is in flight). */
void usage_ledger_begin(struct usage_ledger *l, const char *ns, const char *identity,
    struct usage_counts *add, const struct usage_ended **ended, size_t *n_ended);
/* The write begun last landed (written) or did not. */
void usage_ledger_end(struct usage_ledger *l, const char *ns, const char *identity,
    bool written);

/* The totals of builder_key's status.usage. The first time a builder is
 * met (here or in a session's end), its totals start from seen, what its
 * cached status says (NULL: nothing); from then on this process is the one
 * writer and seen is not read again. 0, or -1 when out of memory. */
int usage_ledger_builder_counts(struct usage_ledger *l, const char *builder_key,
    const struct usage_counts *seen, struct usage_counts *out);
/* The builder is gone: its totals go. */
void usage_ledger_builder_forget(struct usage_ledger *l, const char *builder_key);

/* Leadership won (again): another leader may have written builders'
 * status since, so every builder's totals start again from the cache. */
void usage_ledger_reseed_builders(struct usage_ledger *l);

/* Identities with something pending (for the passes after a leadership
 * change), as "ns/identity". */
void usage_ledger_foreach_pending(const struct usage_ledger *l,
    void (*fn)(const char *ns, const char *identity, void *data), void *data);

#endif
