/* One streaming watch request: newline-delimited JSON events parsed as
 * bytes arrive. The informer builds list+watch+relist on top of this. */
#ifndef NRBC_KUBE_WATCH_H
#define NRBC_KUBE_WATCH_H

#include <jansson.h>
#include <stddef.h>

#include "kube_client.h"

enum kube_watch_event_type {
	KUBE_WATCH_ADDED,
	KUBE_WATCH_MODIFIED,
	KUBE_WATCH_DELETED,
	KUBE_WATCH_BOOKMARK,
	KUBE_WATCH_ERROR, /* object is a Status; code 410 means the resourceVersion is gone */
};

const char *kube_watch_event_type_name(enum kube_watch_event_type t);

/* Incremental parser of a watch stream, usable without any network so it
 * can be unit-tested and fuzzed. Lines longer than max_line fail. */
struct kube_watch_parser;
typedef void (*kube_watch_event_cb)(enum kube_watch_event_type type, json_t *object,
    void *data);
struct kube_watch_parser *kube_watch_parser_create(size_t max_line, kube_watch_event_cb cb,
    void *data);
void kube_watch_parser_destroy(struct kube_watch_parser *p);
/* Feeds bytes; calls cb for each complete event (object borrowed for the
 * call; cb must not destroy the parser). Blank lines are skipped. Returns 0,
 * or -1 with *err set on a malformed line (not JSON, not an object, no
 * "type" string, unknown type, no "object") or one longer than max_line;
 * *err points into the parser (valid until it is destroyed), which is then
 * unusable. max_line 0 means 16 MiB. */
int kube_watch_parser_feed(struct kube_watch_parser *p, const char *data, size_t len,
    const char **err);
/* Bytes of an incomplete last line held back: non-zero at the end of a
 * stream means it was cut off inside an event. */
size_t kube_watch_parser_pending(const struct kube_watch_parser *p);

struct kube_watch;
/* Called once when the stream ends for any reason; err NULL on a clean end
 * (server closed the watch after its timeout). The watch is finished after
 * this call and must be destroyed by the owner (may be done inside). */
typedef void (*kube_watch_end_cb)(const char *err, long http_status, void *data);

/* Starts GET ...?watch=1&allowWatchBookmarks=true&resourceVersion=RV
 * &timeoutSeconds=(random 300-600). on_event may destroy the watch; no
 * event or end callback follows. A malformed line ends the watch with an
 * error. Returns NULL when the request could not be started. */
struct kube_watch *kube_watch_start(struct kube_client *c, const struct kube_resource *r,
    const char *ns, const char *label_selector, const char *field_selector,
    const char *resource_version, kube_watch_event_cb on_event, kube_watch_end_cb on_end,
    void *data);
/* Stops the stream; no callback after this. Accepts NULL. */
void kube_watch_destroy(struct kube_watch *w);

#endif
