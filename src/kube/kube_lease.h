/* Leader election on a coordination.k8s.io/v1 Lease, as client-go does it:
 * the holder renews spec.renewTime every retry period; a candidate takes the
 * lease over when the record has not changed for leaseDurationSeconds by
 * its own clock (so clocks need not agree) or when it is released (empty
 * holder). Every write carries the resourceVersion read, so two candidates
 * never both win: the loser gets 409.
 *
 * Like client-go, expiry is judged only by the local observation time of
 * the record, never by the renewTime written in it: a candidate that first
 * sees a lease (even one renewed hours ago by another node's clock) waits
 * one lease duration. A holder that stops releases the lease (empty
 * holder), which candidates take at once; a holder that loses the API for
 * longer than the renew deadline stops acting but keeps campaigning, and
 * takes its own record back as soon as the API answers. */
#ifndef NRBC_KUBE_LEASE_H
#define NRBC_KUBE_LEASE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "kube_client.h"

struct kube_lease_options {
	const char *namespace;
	const char *name;
	const char *identity;        /* unique per process: see kube_lease_identity */
	uint64_t lease_duration_ms;  /* 15 s */
	uint64_t renew_deadline_ms;  /* 10 s: leading ends without a renewal this long */
	uint64_t retry_period_ms;    /* 2 s */
};

struct kube_lease_callbacks {
	void (*started_leading)(void *data);
	/* Leadership is lost (renewals failed past the deadline, or another
	 * holder took over, or the lease was deleted): stop acting now. The
	 * process stays a candidate; started_leading follows if it wins the
	 * lease again. */
	void (*stopped_leading)(void *data);
};

struct kube_lease;

struct kube_lease *kube_lease_create(struct kube_client *c, const struct kube_lease_options *o,
    const struct kube_lease_callbacks *cb, void *data);
int kube_lease_start(struct kube_lease *l);
bool kube_lease_is_leader(const struct kube_lease *l);
/* Stops campaigning; when leading, gives the lease up (empty holder,
 * duration 1 s) so another replica takes over at once. done runs once,
 * later, from the loop, when that is finished or failed; stopped_leading
 * is not called. */
void kube_lease_release(struct kube_lease *l, void (*done)(void *data), void *data);
/* Cancels everything without callbacks. Accepts NULL. */
void kube_lease_destroy(struct kube_lease *l);

/* "<POD_NAME or hostname>_<16 random hex digits>". Heap string. */
char *kube_lease_identity(void);

/* --- pure parts, for tests -------------------------------------------- */

enum kube_lease_action {
	KUBE_LEASE_WAIT,    /* someone else holds a live lease */
	KUBE_LEASE_ACQUIRE, /* free, released or expired: take it (update) */
	KUBE_LEASE_RENEW,   /* ours: renew it (update) */
};

/* What to do with the lease as read. expired: its record has not changed
 * for its leaseDurationSeconds as observed locally. */
enum kube_lease_action kube_lease_decide(const json_t *lease, const char *identity,
    bool expired);

/* The object to write: a new Lease when current is NULL (create), else
 * current (resourceVersion kept) taken over (acquire: acquireTime = now,
 * leaseTransitions + 1 when the holder changes), renewed, or released
 * (empty holder, duration 1 s). now_us: wall clock in microseconds. */
enum kube_lease_write {
	KUBE_LEASE_WRITE_ACQUIRE,
	KUBE_LEASE_WRITE_RENEW,
	KUBE_LEASE_WRITE_RELEASE,
};
json_t *kube_lease_build(const json_t *current, const char *ns, const char *name,
    const char *identity, uint64_t duration_ms, enum kube_lease_write what, int64_t now_us);

/* The part of a lease whose change proves its holder alive; heap string. */
char *kube_lease_record(const json_t *lease);

/* MicroTime "2006-01-02T15:04:05.000000Z" into out. */
void kube_lease_format_time(int64_t us, char out[40]);

#endif
