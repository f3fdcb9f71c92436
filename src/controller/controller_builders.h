/* The builder table: what the controller knows of every NixBuilder it
 * manages and which NixBuildRequests each one serves. Filled from the
 * builder and request informers and from the controller's own writes (a
 * builder it just created, a request it just bound), so that two passes
 * that run before the caches catch up never bind the same slot twice nor
 * make a second builder where one is on its way.
 *
 * Each builder moves through an explicit state machine:
 *
 *   CREATING --cached--> STARTING --pod Ready--> READY <--> IDLE
 *       \                    |                     |         |
 *        `--------------------+---> FAILED <--- DRAINING <----+--> DELETING
 *
 * CREATING: made (or claimed) by us, not in the cache yet. STARTING: its
 * pod is not Ready. READY: serving (or, unclaimed, waiting in the pool).
 * IDLE: an identity's builder with no session; deleted once idle for the
 * idle timeout. DRAINING: its pod was asked to stop (an eviction, a drain,
 * a deletion) and still runs: the sessions it holds go on, nothing new is
 * bound to it. FAILED: its pod ended or vanished; serves nothing new.
 * DELETING: deletion sent or seen. Pure: no I/O; times come from callers. */
#ifndef NRBC_CONTROLLER_BUILDERS_H
#define NRBC_CONTROLLER_BUILDERS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum builder_state {
	BUILDER_CREATING,
	BUILDER_STARTING,
	BUILDER_READY,
	BUILDER_IDLE,
	BUILDER_DRAINING,
	BUILDER_FAILED,
	BUILDER_DELETING,
	BUILDER_STATE_COUNT,
};

const char *controller_builder_state_name(enum builder_state s);

struct controller_builders;
struct controller_builder;

struct controller_builders *controller_builders_create(void);
/* Accepts NULL. */
void controller_builders_destroy(struct controller_builders *t);
size_t controller_builders_count(const struct controller_builders *t);
/* Requests bound to any builder. */
size_t controller_builders_sessions_total(const struct controller_builders *t);

/* The builder with key "ns/name", or NULL. */
struct controller_builder *controller_builders_get(struct controller_builders *t,
    const char *key);

/* A builder this controller just created (or found existing on a 409):
 * state CREATING until the informer shows it. Returns the entry (an
 * existing one is returned as it is), NULL when out of memory. */
struct controller_builder *controller_builders_add(struct controller_builders *t,
    const char *ns, const char *name, const char *identity, const char *class, long slots,
    uint64_t now_ms);

/* Informer add/update: takes identity, class, slots and uid from obj; a
 * deletionTimestamp moves it to DELETING. Returns the entry, NULL when out
 * of memory. */
struct controller_builder *controller_builders_seen(struct controller_builders *t,
    const json_t *obj, uint64_t now_ms);
/* Informer delete (or a CREATING entry given up): the entry goes; the
 * requests it served are unbound. */
void controller_builders_remove(struct controller_builders *t, const char *key);

/* The builder a new request of identity and class should join: one with a
 * free slot that is not DRAINING, FAILED or DELETING, the fullest first (so one
 * builder's store serves as many sessions as it can before another one
 * starts cold), then the oldest. NULL when every one is full. */
struct controller_builder *controller_builders_pick(struct controller_builders *t,
    const char *ns, const char *identity, const char *class);
/* As controller_builders_pick, among builders whose pod is Ready only. */
struct controller_builder *controller_builders_pick_ready(struct controller_builders *t,
    const char *ns, const char *identity, const char *class);
/* Builders of identity and class in ns whose pod is Ready (READY or IDLE),
 * full or not. */
size_t controller_builders_ready(struct controller_builders *t, const char *ns,
    const char *identity, const char *class);
/* Builders of identity and class in ns that can still serve (full or not). */
size_t controller_builders_usable(struct controller_builders *t, const char *ns,
    const char *identity, const char *class);
/* fn for each builder of identity in ns (any state; claims in flight not
 * yet). fn must not add or remove builders. */
void controller_builders_foreach_of(struct controller_builders *t, const char *ns,
    const char *identity, void (*fn)(struct controller_builder *b, void *data), void *data);
/* True while a pool claim for identity is in flight in ns/class: a new
 * request should wait for it rather than start another builder. */
bool controller_builders_claim_pending(struct controller_builders *t, const char *ns,
    const char *identity, const char *class);
/* An unclaimed pool builder of class in ns that is not being claimed,
 * READY ones first; NULL when none. */
struct controller_builder *controller_builders_pick_pool(struct controller_builders *t,
    const char *ns, const char *class);
/* Unclaimed pool builders of class in ns that can still serve (any state
 * but DRAINING, FAILED and DELETING). */
size_t controller_builders_pool_size(struct controller_builders *t, const char *ns,
    const char *class);
/* The name for the next builder of identity and class: the lowest index no
 * entry uses. Heap string. */
char *controller_builders_next_name(struct controller_builders *t, const char *ns,
    const char *identity, const char *class);

/* Binds request_key to b (nothing when bound already). 0, or -1 when out of
 * memory. */
int controller_builders_bind(struct controller_builders *t, struct controller_builder *b,
    const char *request_key, uint64_t now_ms);
/* Unbinds request_key from whichever builder serves it; returns that
 * builder, or NULL. A builder of an identity left with no session becomes
 * IDLE as of now_ms. */
struct controller_builder *controller_builders_unbind(struct controller_builders *t,
    const char *request_key, uint64_t now_ms);
/* The builder serving request_key, or NULL. */
struct controller_builder *controller_builders_serving(struct controller_builders *t,
    const char *request_key);

/* A pod-side observation: ready (pod Running and Ready), ended (pod
 * Failed, Succeeded or gone after it existed). Moves STARTING/READY/IDLE
 * accordingly, DRAINING only to FAILED; FAILED and DELETING stay. */
void controller_builder_observe_pod(struct controller_builder *b, bool ready, bool ended,
    uint64_t now_ms);
/* Its pod is terminating (why: "evicted: ...", "deleted"): moves any
 * serving state to DRAINING; FAILED and DELETING stay. */
void controller_builder_observe_drain(struct controller_builder *b, const char *why);
/* Why its pod was asked to stop, or NULL if it never was. */
const char *controller_builder_drain_reason(const struct controller_builder *b);
/* Deletion sent (or seen). */
void controller_builder_deleting(struct controller_builder *b);
/* A pool claim for identity was sent / answered. On success the builder is
 * identity's; on failure it is unclaimed again. */
void controller_builder_claim_start(struct controller_builder *b, const char *identity);
void controller_builder_claim_done(struct controller_builder *b, bool ok, uint64_t now_ms);
/* A claim was sent and not answered yet. */
bool controller_builder_claiming(const struct controller_builder *b);

enum builder_state controller_builder_state(const struct controller_builder *b);
const char *controller_builder_key(const struct controller_builder *b);
const char *controller_builder_name(const struct controller_builder *b);
const char *controller_builder_namespace(const struct controller_builder *b);
const char *controller_builder_identity_of(const struct controller_builder *b);
/* Its builder class ("" for the default class). */
const char *controller_builder_class_of(const struct controller_builder *b);
/* b is a builder of exactly this identity and class in ns: the only kind a
 * request of them may be bound to (a claimed pool builder's identity counts
 * once the claim is done; an unclaimed one serves no identity). */
bool controller_builder_serves(const struct controller_builder *b, const char *ns,
    const char *identity, const char *class);
const char *controller_builder_uid(const struct controller_builder *b);
long controller_builder_slots_of(const struct controller_builder *b);
size_t controller_builder_sessions(const struct controller_builder *b);
/* The i-th request bound to b (i < sessions). */
const char *controller_builder_request(const struct controller_builder *b, size_t i);
/* Loop ms since which the builder has had no session; 0 while it has one. */
/* Has served a request, or may have: false only for a builder this table
 * added (controller_builders_add) that no request was bound to yet. */
bool controller_builder_bound_once(const struct controller_builder *b);
uint64_t controller_builder_idle_since(const struct controller_builder *b);
/* Loop ms the entry was added (CREATING entries expire). */
uint64_t controller_builder_added_at(const struct controller_builder *b);

/* Where the builder's pod is expected before the pod cache shows it: the
 * created pod (slim), owned by the entry; NULL clears it. */
void controller_builder_expect_pod(struct controller_builder *b, json_t *pod, uint64_t now_ms);
json_t *controller_builder_expected_pod(const struct controller_builder *b, uint64_t now_ms,
    uint64_t ttl_ms);

#endif
