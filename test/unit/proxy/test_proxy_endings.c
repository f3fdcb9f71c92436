/* proxy_endings against a fake Kubernetes client (defined here): every
 * status patch and delete is recorded, and the test answers it with the
 * status it wants, then runs the loop for the retries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "kube/kube_client.h"
#include "proxy/proxy_endings.h"

const struct kube_resource kube_resource_nixbuildrequests = {
	"nix.io", "v1alpha1", "nixbuildrequests", "NixBuildRequest", true
};

enum fake_kind { FAKE_PATCH, FAKE_DELETE };

/* The one request in flight (the queue sends one per request name). */
struct fake_request {
	enum fake_kind kind;
	char name[64];
	char phase[16];
	json_int_t bytes_up, bytes_down;
	kube_response_cb cb;
	void *data;
	uint64_t id;
	bool pending;
};

static struct fake_request fake;
static uint64_t fake_next_id = 1;
static unsigned fake_patches, fake_deletes, fake_cancels;
static uint64_t fake_sent_at[16];
static unsigned fake_sent;
static uv_loop_t *fake_loop;

static uint64_t fake_record(enum fake_kind kind, const char *name, kube_response_cb cb,
    void *data)
{
	assert_false(fake.pending);
	memset(&fake, 0, sizeof(fake));
	fake.kind = kind;
	snprintf(fake.name, sizeof(fake.name), "%s", name);
	fake.cb = cb;
	fake.data = data;
	fake.id = fake_next_id++;
	fake.pending = true;
	if (fake_sent < 16)
		fake_sent_at[fake_sent++] = uv_now(fake_loop);
	return fake.id;
}

uint64_t kube_patch_merge(struct kube_client *c, const struct kube_resource *r,
    const char *ns, const char *name, const json_t *patch, bool status_subresource,
    kube_response_cb cb, void *data)
{
	const char *phase = json_string_value(json_object_get(json_object_get(patch, "status"),
	    "phase"));

	assert_true(status_subresource);
	assert_string_equal(ns, "nrbc");
	assert_non_null(json_object_get(json_object_get(patch, "status"), "completionTime"));
	fake_patches++;
	fake_record(FAKE_PATCH, name, cb, data);
	snprintf(fake.phase, sizeof(fake.phase), "%s", phase ? phase : "");
	fake.bytes_up = json_integer_value(json_object_get(json_object_get(patch, "status"),
	    "bytesUp"));
	fake.bytes_down = json_integer_value(json_object_get(json_object_get(patch, "status"),
	    "bytesDown"));
	return fake.id;
}

uint64_t kube_delete(struct kube_client *c, const struct kube_resource *r, const char *ns,
    const char *name, const char *precondition_uid, const char *propagation,
    kube_response_cb cb, void *data)
{
	fake_deletes++;
	return fake_record(FAKE_DELETE, name, cb, data);
}

void kube_client_cancel(struct kube_client *c, uint64_t id)
{
	if (fake.pending && fake.id == id) {
		fake.pending = false;
		fake_cancels++;
	}
}

/* Answers the request in flight with status. */
static void answer(long status)
{
	struct kube_response resp = { .status = status, .reason = "", .message = "" };

	assert_true(fake.pending);
	fake.pending = false;
	resp.message = status ? "refused" : "Couldn't connect to server";
	fake.cb(&resp, fake.data);
}

/* Runs the loop until the next try is sent (its backoff passed). */
static void run_until_sent(uv_loop_t *loop)
{
	/* UV_RUN_ONCE returns at once when no timer is armed. */
	for (int i = 0; i < 1000 && !fake.pending; i++)
		uv_run(loop, UV_RUN_ONCE);
	assert_true(fake.pending);
}

static unsigned empties;

static void on_empty(void *data)
{
	empties++;
}

struct fixture {
	uv_loop_t loop;
	struct proxy_endings *e;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	fake_loop = &f->loop;
	f->e = proxy_endings_create(&f->loop, NULL, "nrbc");
	assert_non_null(f->e);
	proxy_endings_on_empty(f->e, on_empty, NULL);
	memset(&fake, 0, sizeof(fake));
	fake_patches = fake_deletes = fake_cancels = fake_sent = empties = 0;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	proxy_endings_destroy(f->e);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	free(f);
	return 0;
}

static void test_status_then_delete(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(proxy_endings_finish(f->e, "build-1", true, "done"), 0);
	assert_true(proxy_endings_holds(f->e, "build-1"));
	assert_int_equal(fake.kind, FAKE_PATCH);
	assert_string_equal(fake.phase, "Completed");
	answer(200);
	assert_int_equal(fake.kind, FAKE_DELETE);
	assert_string_equal(fake.name, "build-1");
	assert_int_equal(empties, 0);
	answer(200);
	assert_false(proxy_endings_holds(f->e, "build-1"));
	assert_int_equal(proxy_endings_count(f->e), 0);
	assert_int_equal(empties, 1);
}

/* The payload the session moved goes into the status, for its usage. */
static void test_status_carries_the_bytes(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(proxy_endings_finish_bytes(f->e, "build-7", true, "done", 12345,
	    678), 0);
	assert_int_equal(fake.kind, FAKE_PATCH);
	assert_int_equal(fake.bytes_up, 12345);
	assert_int_equal(fake.bytes_down, 678);
	answer(200);
	answer(200);
	assert_int_equal(proxy_endings_count(f->e), 0);
}

static void test_failures_are_tried_again_with_backoff(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(proxy_endings_finish(f->e, "build-2", false, "lost"), 0);
	assert_string_equal(fake.phase, "Failed");
	answer(0);              /* no answer: the API is away */
	assert_false(fake.pending);
	run_until_sent(&f->loop);
	assert_int_equal(fake.kind, FAKE_PATCH);
	answer(503);
	run_until_sent(&f->loop);
	assert_int_equal(fake.kind, FAKE_PATCH);
	/* 0.5 s, then 1 s (uv_now's millisecond clock, a little slack). */
	assert_true(fake_sent_at[1] - fake_sent_at[0] >= 490);
	assert_true(fake_sent_at[2] - fake_sent_at[1] >= 990);
	answer(200);
	/* The delete starts afresh: its first failure waits 0.5 s again. */
	assert_int_equal(fake.kind, FAKE_DELETE);
	answer(403);            /* RBAC being fixed */
	run_until_sent(&f->loop);
	assert_int_equal(fake.kind, FAKE_DELETE);
	assert_true(fake_sent_at[4] - fake_sent_at[3] >= 490);
	assert_true(fake_sent_at[4] - fake_sent_at[3] < 990);
	assert_int_equal(empties, 0);
	answer(202);
	assert_int_equal(fake_patches, 3);
	assert_int_equal(fake_deletes, 2);
	assert_int_equal(proxy_endings_count(f->e), 0);
	assert_int_equal(empties, 1);
}

static void test_a_refused_status_still_deletes(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(proxy_endings_finish(f->e, "build-3", true, NULL), 0);
	answer(422);
	assert_int_equal(fake.kind, FAKE_DELETE);
	answer(404);            /* gone already: done too */
	assert_int_equal(empties, 1);
}

static void test_a_request_gone_needs_no_delete(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(proxy_endings_finish(f->e, "build-4", true, NULL), 0);
	answer(404);
	assert_false(fake.pending);
	assert_int_equal(fake_deletes, 0);
	assert_int_equal(empties, 1);
}

static void test_one_end_per_name(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(proxy_endings_delete(f->e, "build-5"), 0);
	/* A second end of the same request changes nothing (and sends nothing:
	 * the fake would fail on a second request in flight). */
	assert_int_equal(proxy_endings_finish(f->e, "build-5", true, NULL), 0);
	assert_int_equal(proxy_endings_count(f->e), 1);
	assert_int_equal(fake.kind, FAKE_DELETE);
	answer(200);
	assert_int_equal(fake_patches, 0);
	assert_int_equal(empties, 1);
}

static void test_destroy_gives_up_and_cancels(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(proxy_endings_finish(f->e, "build-6", true, NULL), 0);
	assert_true(fake.pending);
	proxy_endings_destroy(f->e);
	f->e = NULL;
	assert_int_equal(fake_cancels, 1);
	assert_int_equal(empties, 0);   /* given up, not landed */
}

static void test_destroy_while_waiting_to_retry(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(proxy_endings_delete(f->e, "build-7"), 0);
	answer(500);
	assert_false(fake.pending);
	proxy_endings_destroy(f->e);   /* the retry timer goes with it */
	f->e = NULL;
	assert_int_equal(fake_cancels, 0);
	assert_int_equal(fake_deletes, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_status_then_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_carries_the_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failures_are_tried_again_with_backoff, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_a_refused_status_still_deletes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_a_request_gone_needs_no_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_end_per_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_gives_up_and_cancels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_while_waiting_to_retry, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
