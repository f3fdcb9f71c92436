/* What the reconciler remembers about each NixBuildRequest between passes,
 * in a table keyed "ns/name": when the informer first showed it (latency
 * metrics, the scale-out wait), the pod it created that the pod cache does
 * not show yet, and the resourceVersion its own status write made stale.
 * The informer's events add and remove entries; the passes read and update
 * their fields. Needs no loop: callers pass the loop time. */
#ifndef NRBC_CONTROLLER_RECONCILE_STATE_H
#define NRBC_CONTROLLER_RECONCILE_STATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* One request's entry. Defined here rather than opaque because the passes
 * keep their own fields in it; key, uid and next are the table's. */
struct reconcile_state {
	char *key;
	uint64_t first_seen;     /* loop ms when the informer first showed it */
	bool pod_created_timed;
	bool running_timed;
	char *uid;               /* the incarnation the fields below are about */
	char *stale_rv;          /* resourceVersion our last status write replaced */
	json_t *expected_pod;    /* created by us, not yet so in the pod cache */
	uint64_t expected_at;
	struct reconcile_state *next;
};

struct reconcile_state_table;

struct reconcile_state_table *reconcile_state_table_create(void);
/* Frees every entry. Accepts NULL. */
void reconcile_state_table_destroy(struct reconcile_state_table *t);

/* The entry of key, or NULL. */
struct reconcile_state *reconcile_state_find(struct reconcile_state_table *t, const char *key);
/* The entry of key for the incarnation uid, made (first seen at now) when
 * there is none; a new uid (the request deleted and made again under the
 * same name) starts it afresh. NULL when out of memory. */
struct reconcile_state *reconcile_state_get(struct reconcile_state_table *t, const char *key,
    const char *uid, uint64_t now);
void reconcile_state_remove(struct reconcile_state_table *t, const char *key);
/* Loop ms from the request's first sighting to now; 0 for one not in t. */
uint64_t reconcile_state_age_ms(struct reconcile_state_table *t, const char *key, uint64_t now);
/* Forgets the expected pod (the cache shows it now, or it never came). */
void reconcile_state_clear_expected(struct reconcile_state *s);

#endif
