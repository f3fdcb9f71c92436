/* Prometheus series of usage by identity, from the NixUsage objects in the
 * cache: every replica shows the same numbers, the API's, whoever leads
 * (aggregate with max by (identity), not sum). Label cardinality is bound:
 * the first max_identities identities a process sees get a series of their
 * own, every later one is added into identity="other" (so a sum over
 * identities stays right). Which identities got a label is said by
 * nrbc_usage_identities{labelled="true"|"false"}. */
#ifndef NRBC_CONTROLLER_USAGE_METRICS_H
#define NRBC_CONTROLLER_USAGE_METRICS_H

#include <jansson.h>
#include <stddef.h>

#include "metrics.h"

/* The label value of the series that holds identities beyond the bound. */
#define USAGE_METRICS_OTHER "other"

struct usage_metrics;

/* NULL when out of memory; reg must outlive it. */
struct usage_metrics *usage_metrics_create(struct metrics *reg, size_t max_identities);
/* Accepts NULL. */
void usage_metrics_destroy(struct usage_metrics *m);
/* A NixUsage changed: old_obj NULL when added, new_obj NULL when deleted.
 * Counters grow by what the status grew (a status that shrank, e.g. an
 * object deleted and made again, adds nothing); the builders gauge follows. */
void usage_metrics_update(struct usage_metrics *m, const json_t *old_obj, const json_t *new_obj);

#endif
