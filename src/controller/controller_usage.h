/* NixUsage objects as pure functions: what one client identity (the hashed
 * key) has used, kept in the API so that it outlives its builders and a
 * controller restart. One object per identity, named after it. The
 * controller's leader is its one writer; the numbers it adds come from the
 * usage ledger (controller_usage_ledger.h), the writes from the usage pass.
 *
 * Builder time: status.activeBuilders lists the identity's live builders
 * (name, uid, since, lastSeen). Each pass moves lastSeen of a live one to
 * now; a builder no longer live is retired: its time (its end, when the
 * controller saw it, else its lastSeen, minus since) is added to
 * retiredBuilderSeconds and its entry goes, in the same update. A builder
 * is therefore counted exactly once, whatever restarts come between. */
#ifndef NRBC_CONTROLLER_USAGE_H
#define NRBC_CONTROLLER_USAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Counters that only grow: what sessions add. */
struct usage_counts {
	int64_t served;
	int64_t failed;
	int64_t bytes_up;
	int64_t bytes_down;
};

void usage_counts_add(struct usage_counts *to, const struct usage_counts *d);
bool usage_counts_zero(const struct usage_counts *c);
/* to = the larger of to and other, field by field. */
void usage_counts_max(struct usage_counts *to, const struct usage_counts *other);

/* A live builder of the identity: counted from since_ms on. */
struct usage_live {
	const char *name;
	const char *uid;
	int64_t since_ms;
};

/* A builder the controller saw end (deleted) at end_ms. */
struct usage_ended {
	const char *name;
	const char *uid;
	int64_t end_ms;
};

struct usage_input {
	const json_t *old_status;      /* NULL or the object's status */
	const struct usage_counts *add;
	const struct usage_live *live;
	size_t n_live;
	const struct usage_ended *ended;
	size_t n_ended;
	int64_t now_ms;
};

/* The new status. *changed says whether anything but the times moved
 * (counters, the builder set). 0, or -1 with *err (heap) naming the field
 * of old_status that is malformed (nothing is written over such a status:
 * the caller keeps what it would have added), or saying out of memory. */
int controller_usage_status(const struct usage_input *in, json_t **out, bool *changed,
    char **err);

/* The counters of a status (a NixUsage's, or a NixBuilder's status.usage);
 * missing fields are 0. -1 with *err when one is not a non-negative integer. */
int controller_usage_counts_parse(const json_t *obj, struct usage_counts *c, char **err);
/* {sessionsServed, sessionsFailed, bytesUp, bytesDown}. New reference. */
json_t *controller_usage_counts_json(const struct usage_counts *c);

/* A new NixUsage for identity in ns (no status: the status subresource
 * ignores it on create). New reference, NULL when out of memory. */
json_t *controller_usage_build(const char *ns, const char *identity);

/* What a session's end adds: served or failed by its phase, its bytes from
 * the request's status (bytesUp, bytesDown; absent or malformed: 0). */
void controller_usage_of_request(const json_t *nbr, bool completed, struct usage_counts *c);

/* The builders one identity may hold at once, over all classes: its
 * NixUsage's spec.maxBuilders (the admin's override in the cluster; usage
 * NULL or the field absent or 0: none), else the request's spec.maxBuilders
 * (the key's authorized_keys option, written by the proxy), else
 * flag_default (0: no quota). *source says which, for the refusal line. */
long controller_usage_max_builders(const json_t *usage, const json_t *request,
    long flag_default, const char **source);
/* The one line a session refused by the builder quota gets. Heap. */
char *controller_usage_quota_message(long max, size_t have, const char *source);

/* status.lastUpdate in ms, or -1. */
int64_t controller_usage_last_update(const json_t *status);

#endif
