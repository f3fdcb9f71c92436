#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kube/kube_client.h"
#include "kube/kube_config.h"

static void check_path(const struct kube_resource *r, const char *ns, const char *name,
    const char *sub, const char *query, const char *want)
{
	char *p = kube_path(r, ns, name, sub, query);

	assert_non_null(p);
	assert_string_equal(p, want);
	free(p);
}

static void test_paths(void **state)
{
	check_path(&kube_resource_pods, "default", "web-1", NULL, NULL,
	    "/api/v1/namespaces/default/pods/web-1");
	check_path(&kube_resource_pods, NULL, NULL, NULL, "watch=1",
	    "/api/v1/pods?watch=1");
	check_path(&kube_resource_pods, "", NULL, NULL, NULL, "/api/v1/pods");
	check_path(&kube_resource_pods, "ns", "p", "status", NULL,
	    "/api/v1/namespaces/ns/pods/p/status");
	check_path(&kube_resource_nixbuildrequests, "ns", "b", "status", NULL,
	    "/apis/nix.io/v1alpha1/namespaces/ns/nixbuildrequests/b/status");
	check_path(&kube_resource_leases, "kube-system", "nrbc", NULL, NULL,
	    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/nrbc");
	check_path(&kube_resource_events, "ns", NULL, NULL, "limit=5",
	    "/api/v1/namespaces/ns/events?limit=5");
	check_path(&kube_resource_secrets, "ns", "s", NULL, NULL,
	    "/api/v1/namespaces/ns/secrets/s");
	check_path(&kube_resource_configmaps, "ns", "c", NULL, NULL,
	    "/api/v1/namespaces/ns/configmaps/c");
	/* A subresource without a name makes no sense and is dropped. */
	check_path(&kube_resource_pods, "ns", NULL, "status", NULL,
	    "/api/v1/namespaces/ns/pods");
	/* Hostile names cannot escape their path segment. */
	check_path(&kube_resource_pods, "a/b", "../x?y", NULL, NULL,
	    "/api/v1/namespaces/a%2Fb/pods/..%2Fx%3Fy");
}

static void test_escape(void **state)
{
	char *e = kube_url_escape("app=nrbc,tier in (a b),x!=y~z_.-");

	assert_string_equal(e, "app%3Dnrbc%2Ctier%20in%20%28a%20b%29%2Cx%21%3Dy~z_.-");
	free(e);
	e = kube_url_escape("");
	assert_string_equal(e, "");
	free(e);
	e = kube_url_escape("\xff\x01");
	assert_string_equal(e, "%FF%01");
	free(e);
}

static void test_resources(void **state)
{
	assert_string_equal(kube_resource_pods.group, "");
	assert_string_equal(kube_resource_pods.kind, "Pod");
	assert_string_equal(kube_resource_nixbuildrequests.group, "nix.io");
	assert_string_equal(kube_resource_nixbuildrequests.version, "v1alpha1");
	assert_string_equal(kube_resource_nixbuildrequests.kind, "NixBuildRequest");
	assert_string_equal(kube_resource_leases.group, "coordination.k8s.io");
	assert_string_equal(kube_resource_events.kind, "Event");
	assert_true(kube_resource_nixbuildrequests.namespaced);
}

/* ---------- the client against a closed loopback port ---------- */

struct calls {
	int count;
	long status;
	char message[256];
	struct kube_client *client;
	uint64_t other;
	uint64_t started;
};

static struct kube_config *local_config(void)
{
	/* Port 1 on loopback: nothing listens, so the connect fails fast. */
	static const char kc[] =
	    "current-context: c\n"
	    "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n"
	    "contexts: [{name: c, context: {cluster: k}}]\n";
	char *err = NULL;
	struct kube_config *cfg = kube_config_parse(kc, strlen(kc), NULL, NULL, &err);

	assert_non_null(cfg);
	return cfg;
}

static void on_resp(const struct kube_response *resp, void *data)
{
	struct calls *c = data;

	c->count++;
	c->status = resp->status;
	snprintf(c->message, sizeof(c->message), "%s", resp->message);
	assert_null(resp->body);
	assert_non_null(resp->reason);
}

static void test_transport_error_calls_back_once(void **state)
{
	uv_loop_t loop;
	struct kube_config *cfg = local_config();
	struct kube_client *cl;
	struct calls calls = { 0 };

	assert_int_equal(uv_loop_init(&loop), 0);
	cl = kube_client_create(&loop, cfg);
	assert_non_null(cl);
	assert_ptr_equal(kube_client_loop(cl), &loop);
	assert_ptr_equal(kube_client_config(cl), cfg);
	assert_true(kube_get(cl, &kube_resource_pods, "ns", "p", on_resp, &calls) > 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT) >= 0, 1);
	/* The loop ran dry: the client holds no handle while idle. */
	assert_int_equal(calls.count, 1);
	assert_int_equal(calls.status, 0);
	if (!strstr(calls.message, "onnect"))
		fail_msg("unexpected message \"%s\"", calls.message);
	kube_client_destroy(cl);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	kube_config_destroy(cfg);
}

static void test_cancel_never_calls_back(void **state)
{
	uv_loop_t loop;
	struct kube_config *cfg = local_config();
	struct kube_client *cl;
	struct calls a = { 0 }, b = { 0 };
	uint64_t ida, idb;

	assert_int_equal(uv_loop_init(&loop), 0);
	cl = kube_client_create(&loop, cfg);
	ida = kube_get(cl, &kube_resource_pods, "ns", "a", on_resp, &a);
	idb = kube_get(cl, &kube_resource_pods, "ns", "b", on_resp, &b);
	assert_true(ida > 0 && idb > ida);
	kube_client_cancel(cl, ida);
	kube_client_cancel(cl, ida);     /* twice: ignored */
	kube_client_cancel(cl, 987654);  /* unknown: ignored */
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(a.count, 0);
	assert_int_equal(b.count, 1);
	kube_client_destroy(cl);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	kube_config_destroy(cfg);
}

static void test_destroy_with_pending_requests(void **state)
{
	uv_loop_t loop;
	struct kube_config *cfg = local_config();
	struct kube_client *cl;
	struct calls a = { 0 };
	int before;

	assert_int_equal(uv_loop_init(&loop), 0);
	cl = kube_client_create(&loop, cfg);
	for (int i = 0; i < 10; i++)
		assert_true(kube_get(cl, &kube_resource_pods, "ns", "a", on_resp, &a) > 0);
	/* Some may finish in this turn; none may call back after destroy. */
	uv_run(&loop, UV_RUN_NOWAIT);
	before = a.count;
	kube_client_destroy(cl);
	kube_client_destroy(NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(a.count, before);
	assert_int_equal(uv_loop_close(&loop), 0);
	kube_config_destroy(cfg);
}

/* A callback that cancels a sibling and starts a new request. */
static void on_resp_chain(const struct kube_response *resp, void *data)
{
	struct calls *c = data;

	c->count++;
	if (c->count == 1) {
		kube_client_cancel(c->client, c->other);
		c->started = kube_get(c->client, &kube_resource_pods, "ns", "again",
		    on_resp_chain, c);
		assert_true(c->started > 0);
	}
}

static void test_callback_cancels_and_starts(void **state)
{
	uv_loop_t loop;
	struct kube_config *cfg = local_config();
	struct calls c = { 0 }, sibling = { 0 };

	assert_int_equal(uv_loop_init(&loop), 0);
	c.client = kube_client_create(&loop, cfg);
	assert_true(kube_get(c.client, &kube_resource_pods, "ns", "x", on_resp_chain, &c) > 0);
	c.other = kube_get(c.client, &kube_resource_pods, "ns", "y", on_resp, &sibling);
	uv_run(&loop, UV_RUN_DEFAULT);
	/* The first finished, cancelled its sibling (if still running) and
	 * the new request finished too. */
	assert_int_equal(c.count, 2);
	assert_true(sibling.count <= 1);
	kube_client_destroy(c.client);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	kube_config_destroy(cfg);
}

static void on_resp_destroy(const struct kube_response *resp, void *data)
{
	struct calls *c = data;

	c->count++;
	kube_client_destroy(c->client);
}

static void test_callback_destroys_client(void **state)
{
	uv_loop_t loop;
	struct kube_config *cfg = local_config();
	struct calls c = { 0 };

	assert_int_equal(uv_loop_init(&loop), 0);
	c.client = kube_client_create(&loop, cfg);
	for (int i = 0; i < 5; i++)
		assert_true(kube_get(c.client, &kube_resource_pods, "ns", "x", on_resp_destroy,
		    &c) > 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(c.count, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
	kube_config_destroy(cfg);
}

/* More requests than the client hands to libcurl at once: the rest wait
 * in order; cancelling waiting ones must not call them back, and every
 * other one is answered exactly once. */
static void test_many_requests_queue(void **state)
{
	uv_loop_t loop;
	struct kube_config *cfg = local_config();
	struct kube_client *cl;
	struct calls a = { 0 }, cancelled = { 0 };
	uint64_t ids[300];

	assert_int_equal(uv_loop_init(&loop), 0);
	cl = kube_client_create(&loop, cfg);
	for (int i = 0; i < 300; i++) {
		ids[i] = kube_get(cl, &kube_resource_pods, "ns", "p", on_resp,
		    i % 3 == 0 ? &cancelled : &a);
		assert_true(ids[i] > 0);
	}
	for (int i = 0; i < 300; i += 3)
		kube_client_cancel(cl, ids[i]);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(a.count, 200);
	assert_int_equal(cancelled.count, 0);
	kube_client_destroy(cl);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	kube_config_destroy(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_resources),
		cmocka_unit_test(test_transport_error_calls_back_once),
		cmocka_unit_test(test_cancel_never_calls_back),
		cmocka_unit_test(test_destroy_with_pending_requests),
		cmocka_unit_test(test_callback_cancels_and_starts),
		cmocka_unit_test(test_callback_destroys_client),
		cmocka_unit_test(test_many_requests_queue),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
