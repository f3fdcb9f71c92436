/* Kubernetes Events (core v1) about an object, fire and forget: a failed or
 * dropped Event is logged, never retried, and never holds up the caller. */
#ifndef NRBC_KUBE_EVENT_H
#define NRBC_KUBE_EVENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "kube_client.h"

#define KUBE_EVENT_NORMAL "Normal"
#define KUBE_EVENT_WARNING "Warning"
/* Longer messages are cut (at a UTF-8 boundary), as client-go does. */
#define KUBE_EVENT_MAX_MESSAGE 1024

struct kube_event_recorder;

/* component: "nrbc-controller"; instance: who records (host or pod name).
 * At most max_in_flight Events are being sent at once; more are dropped. */
struct kube_event_recorder *kube_event_recorder_create(struct kube_client *c,
    const char *component, const char *instance, size_t max_in_flight);
/* Cancels Events still being sent. Accepts NULL. */
void kube_event_recorder_destroy(struct kube_event_recorder *r);

/* Sends an Event about obj (an object of resource res, as read from the
 * API: metadata.name, namespace, uid, resourceVersion). type is
 * KUBE_EVENT_NORMAL or KUBE_EVENT_WARNING. Returns 0 when sent off, -1 when
 * dropped (too many in flight, or the request could not start). */
int kube_event_record(struct kube_event_recorder *r, const json_t *obj,
    const struct kube_resource *res, const char *type, const char *reason,
    const char *message);

/* Events sent, failed (API error) and dropped so far. */
uint64_t kube_event_recorder_sent(const struct kube_event_recorder *r);
uint64_t kube_event_recorder_failed(const struct kube_event_recorder *r);
uint64_t kube_event_recorder_dropped(const struct kube_event_recorder *r);

/* The Event object itself, a pure function for tests: now_ms is the wall
 * clock, seq makes the name unique among Events made in the same ms. */
json_t *kube_event_build(const json_t *obj, const struct kube_resource *res,
    const char *type, const char *reason, const char *message, const char *component,
    const char *instance, int64_t now_ms, uint64_t seq);

#endif
