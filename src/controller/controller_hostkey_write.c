#include "controller_hostkey_write.h"

#include <stdlib.h>
#include <string.h>

#include "controller_hostkey.h"
#include "controller_reconcile_internal.h"
#include "controller_reconcile_op.h"
#include "log.h"

static void host_key_send(struct reconcile_op *op);

static void host_key_fail(struct reconcile_op *op)
{
	reconcile_op_finish(op, KUBE_QUEUE_RETRY, 0);
}

static void on_host_key_deleted(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;

	op->request = 0;
	if (resp->status >= 300 && resp->status != 404) {
		log_error("%s: cannot delete the stale host key Secret %s: HTTP %ld %s", op->key,
		    op->host_key_write.secret, resp->status, resp->message);
		host_key_fail(op);
		return;
	}
	host_key_send(op);
}

static void on_host_key_created(const struct kube_response *resp, void *data)
{
	struct reconcile_op *op = data;
	struct reconcile_host_key_write *w = &op->host_key_write;

	op->request = 0;
	if (resp->status == 409) {
		log_info("%s: host key Secret %s exists without a pod; making a new one",
		    op->key, w->secret);
		op->request = kube_delete(op->r->client, &kube_resource_secrets, w->ns, w->secret,
		    NULL, NULL, on_host_key_deleted, op);
		if (!op->request)
			host_key_fail(op);
		return;
	}
	if (resp->status != 201) {
		log_error("%s: cannot create its host key Secret %s: HTTP %ld %s", op->key,
		    w->secret, resp->status, resp->message);
		host_key_fail(op);
		return;
	}
	w->then(op, w->secret);
}

/* A fresh pair each try: a Secret that did not land may have been seen by
 * nobody, but a new key costs nothing. */
static void host_key_send(struct reconcile_op *op)
{
	struct reconcile_host_key_write *w = &op->host_key_write;
	json_t *secret = NULL;

	controller_hostkey_finish(&op->host_key);
	if (controller_hostkey_generate(&op->host_key) == 0)
		secret = controller_hostkey_secret(w->ns, w->secret, op->nbr, w->owner_kind,
		    &op->host_key);
	if (!secret) {
		log_error("%s: cannot make its host key", op->key);
		host_key_fail(op);
		return;
	}
	op->request = kube_create(op->r->client, &kube_resource_secrets, w->ns, secret,
	    on_host_key_created, op);
	json_decref(secret);
	if (!op->request)
		host_key_fail(op);
}

void reconcile_create_host_key(struct reconcile_op *op, const char *ns, const char *pod_name,
    const char *owner_kind, reconcile_host_key_then then)
{
	struct reconcile_host_key_write *w = &op->host_key_write;

	free(w->ns);
	free(w->secret);
	w->ns = strdup(ns);
	w->secret = controller_hostkey_secret_name(pod_name);
	w->owner_kind = owner_kind;
	w->then = then;
	if (!w->ns || !w->secret) {
		host_key_fail(op);
		return;
	}
	host_key_send(op);
}
