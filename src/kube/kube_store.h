/* The informers' cache: objects kept as compact JSON text, keyed by
 * "namespace/name". A jansson object costs about 4 KiB even trimmed to the
 * few fields the controller reads (every value and key is its own
 * allocation); its text costs a fifth of that. So 5,000 requests and 5,000
 * pods fit in a few MB, and an object is parsed only when someone asks.
 *
 * Objects handed out are loans: they stay valid until kube_store_release(),
 * which the owner calls once per event-loop turn. json_incref one to keep it
 * longer. Two gets of one key give two objects; never compare pointers. */
#ifndef NRBC_KUBE_STORE_H
#define NRBC_KUBE_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct kube_store;

struct kube_store *kube_store_create(void);
/* Frees the objects and every loan. Accepts NULL. */
void kube_store_destroy(struct kube_store *s);

/* Keeps obj's text under key (replacing any); obj itself is not kept. */
int kube_store_put(struct kube_store *s, const char *key, const json_t *obj);
/* A loan; NULL when absent (or when the text cannot be parsed: logged). */
json_t *kube_store_get(struct kube_store *s, const char *key);
bool kube_store_has(const struct kube_store *s, const char *key);
void kube_store_del(struct kube_store *s, const char *key);
size_t kube_store_size(const struct kube_store *s);
/* Bytes of text held: for metrics and tests. */
size_t kube_store_text_bytes(const struct kube_store *s);

/* fn sees each object, borrowed for the call only (each is freed once fn
 * returns, so a long walk never holds more than one); false stops the walk.
 * fn must not put or delete. */
void kube_store_foreach(struct kube_store *s,
    bool (*fn)(const char *key, json_t *obj, void *data), void *data);

/* Ends every loan made by kube_store_get. */
void kube_store_release(struct kube_store *s);

#endif
