/* proxy_bridge's state machine against fakes: the libssh channel functions,
 * the libssh2 channel functions and proxy_upstream are defined here (the
 * test links proxy_bridge.c without libssh, libssh2 or proxy_upstream.c), so
 * each step of a channel's life, and each way the builder's side can end,
 * is driven by hand and its outcome for the client checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/server.h>
#include <libssh2.h>

#include "proxy/proxy_bridge.h"
#include "proxy/proxy_command.h"
#include "proxy/proxy_pipebuf.h"
#include "proxy/proxy_upstream.h"

/* ---- the fake client channel (libssh) ---- */

static struct {
	ssh_channel_callbacks cb;
	char out[65536];
	size_t out_len;
	char err[65536];
	size_t err_len;
	uint32_t window;
	int eofs, closes;
	int exit_status; /* -1: none sent */
	char exit_signal[32];
	int frees;
} client;

static char client_channel_storage, builder_channel_storage;

ssh_channel ssh_channel_new(ssh_session session)
{
	return (ssh_channel)(void *)&client_channel_storage;
}

int ssh_set_channel_callbacks(ssh_channel channel, ssh_channel_callbacks cb)
{
	client.cb = cb;
	return SSH_OK;
}

int ssh_remove_channel_callbacks(ssh_channel channel, ssh_channel_callbacks cb)
{
	return SSH_OK;
}

void ssh_channel_free(ssh_channel channel)
{
	client.frees++;
}

uint32_t ssh_channel_window_size(ssh_channel channel)
{
	return client.window;
}

int ssh_channel_write(ssh_channel channel, const void *data, uint32_t len)
{
	memcpy(client.out + client.out_len, data, len);
	client.out_len += len;
	return (int)len;
}

int ssh_channel_write_stderr(ssh_channel channel, const void *data, uint32_t len)
{
	memcpy(client.err + client.err_len, data, len);
	client.err_len += len;
	return (int)len;
}

int ssh_channel_send_eof(ssh_channel channel)
{
	client.eofs++;
	return SSH_OK;
}

int ssh_channel_close(ssh_channel channel)
{
	client.closes++;
	return SSH_OK;
}

int ssh_channel_request_send_exit_status(ssh_channel channel, int exit_status)
{
	client.exit_status = exit_status;
	return SSH_OK;
}

int ssh_channel_request_send_exit_signal(ssh_channel channel, const char *signum, int core,
    const char *errmsg, const char *lang)
{
	snprintf(client.exit_signal, sizeof(client.exit_signal), "%s", signum);
	return SSH_OK;
}

int ssh_channel_poll(ssh_channel channel, int is_stderr)
{
	return 0;
}

int ssh_channel_read_nonblocking(ssh_channel channel, void *dest, uint32_t count,
    int is_stderr)
{
	return 0;
}

/* ---- the fake builder channel (libssh2) ---- */

static struct {
	int open_rc;        /* 0: the open succeeds */
	int exec_rc;
	char in[65536];     /* what the bridge wrote to the builder */
	size_t in_len;
	const char *output; /* what the builder sends on stdout, once */
	int eof;            /* libssh2_channel_eof's answer */
	int wait_closed_rc; /* 0: CLOSE came; else an error */
	int read_rc;        /* an error to return from reads, 0: none */
	int exit_status;
	const char *exit_signal;
	int eofs_sent, frees;
} builder;

LIBSSH2_CHANNEL *libssh2_channel_open_ex(LIBSSH2_SESSION *session, const char *channel_type,
    unsigned int channel_type_len, unsigned int window_size, unsigned int packet_size,
    const char *message, unsigned int message_len)
{
	return builder.open_rc ? NULL : (LIBSSH2_CHANNEL *)(void *)&builder_channel_storage;
}

int libssh2_session_last_errno(LIBSSH2_SESSION *session)
{
	return builder.open_rc;
}

int libssh2_channel_setenv_ex(LIBSSH2_CHANNEL *channel, const char *varname,
    unsigned int varname_len, const char *value, unsigned int value_len)
{
	return 0;
}

int libssh2_channel_process_startup(LIBSSH2_CHANNEL *channel, const char *request,
    unsigned int request_len, const char *message, unsigned int message_len)
{
	return builder.exec_rc;
}

ssize_t libssh2_channel_write_ex(LIBSSH2_CHANNEL *channel, int stream_id, const char *buf,
    size_t buflen)
{
	memcpy(builder.in + builder.in_len, buf, buflen);
	builder.in_len += buflen;
	return (ssize_t)buflen;
}

int libssh2_channel_send_eof(LIBSSH2_CHANNEL *channel)
{
	builder.eofs_sent++;
	return 0;
}

ssize_t libssh2_channel_read_ex(LIBSSH2_CHANNEL *channel, int stream_id, char *buf,
    size_t buflen)
{
	size_t n;

	if (builder.read_rc)
		return builder.read_rc;
	if (stream_id != 0 || !builder.output)
		return LIBSSH2_ERROR_EAGAIN;
	n = strlen(builder.output);
	memcpy(buf, builder.output, n);
	builder.output = NULL;
	return (ssize_t)n;
}

int libssh2_poll_channel_read(LIBSSH2_CHANNEL *channel, int extended)
{
	return 0;
}

int libssh2_channel_eof(LIBSSH2_CHANNEL *channel)
{
	return builder.eof;
}

int libssh2_channel_wait_closed(LIBSSH2_CHANNEL *channel)
{
	return builder.wait_closed_rc;
}

int libssh2_channel_get_exit_status(LIBSSH2_CHANNEL *channel)
{
	return builder.exit_status;
}

int libssh2_channel_get_exit_signal(LIBSSH2_CHANNEL *channel, char **exitsignal,
    size_t *exitsignal_len, char **errmsg, size_t *errmsg_len, char **langtag,
    size_t *langtag_len)
{
	*exitsignal = builder.exit_signal ? strdup(builder.exit_signal) : NULL;
	if (exitsignal_len)
		*exitsignal_len = builder.exit_signal ? strlen(builder.exit_signal) : 0;
	return 0;
}

void libssh2_free(LIBSSH2_SESSION *session, void *ptr)
{
	free(ptr);
}

int libssh2_channel_free(LIBSSH2_CHANNEL *channel)
{
	builder.frees++;
	return 0;
}

/* ---- the fake builder connection ---- */

struct proxy_upstream {
	bool ready;
};

bool proxy_upstream_is_ready(const struct proxy_upstream *u)
{
	return u && u->ready;
}

LIBSSH2_SESSION *proxy_upstream_session(const struct proxy_upstream *u)
{
	return NULL;
}

bool proxy_upstream_may_call(const struct proxy_upstream *u, const void *op)
{
	return u->ready;
}

int proxy_upstream_after(struct proxy_upstream *u, const void *op, int rc)
{
	/* A transport error takes the whole connection with it. */
	if (rc == LIBSSH2_ERROR_SOCKET_DISCONNECT || rc == LIBSSH2_ERROR_SOCKET_RECV)
		u->ready = false;
	return rc;
}

bool proxy_upstream_claim_open(struct proxy_upstream *u, const void *owner)
{
	return true;
}

void proxy_upstream_release_open(struct proxy_upstream *u, const void *owner)
{
}

const char *proxy_upstream_error(const struct proxy_upstream *u)
{
	return "socket disconnect";
}

/* ---- fixtures ---- */

static int wakes;
/* The budget every bridge of the process shares (here: the one bridge). */
static struct proxy_pipebuf_budget budget;

static void wake(void *data)
{
	wakes++;
}

struct fixture {
	struct proxy_command_policy *policy;
	struct proxy_bridge *b;
	struct proxy_upstream up;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char *err = NULL;
	struct proxy_bridge_env env = { .session_id = 1, .wake = wake, .budget = &budget };

	memset(&client, 0, sizeof(client));
	memset(&builder, 0, sizeof(builder));
	memset(&budget, 0, sizeof(budget));
	client.exit_status = -1;
	client.window = 1u << 20;
	f->policy = proxy_command_policy_create(NULL, false, &err);
	assert_non_null(f->policy);
	env.policy = f->policy;
	f->b = proxy_bridge_create((ssh_session)(void *)&client_channel_storage, &env);
	assert_non_null(f->b);
	assert_non_null(client.cb);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	proxy_bridge_destroy(f->b);
	proxy_command_policy_destroy(f->policy);
	free(f);
	return 0;
}

static int exec_request(const char *command)
{
	return client.cb->channel_exec_request_function(NULL, NULL, command, client.cb->userdata);
}

/* exec accepted, builder connection ready, command started. */
static void start_running(struct fixture *f)
{
	assert_int_equal(exec_request("nix-store --serve --write"), 0);
	assert_true(proxy_bridge_wants_builder(f->b));
	f->up.ready = true;
	proxy_bridge_run(f->b, &f->up);
	assert_false(proxy_bridge_wants_builder(f->b));
	assert_true(proxy_bridge_ran(f->b));
}

static bool client_told(const char *line)
{
	client.err[client.err_len] = '\0';
	return strstr(client.err, line) != NULL;
}

/* ---- tests ---- */

static void test_clean_exit_status_is_relayed(void **state)
{
	struct fixture *f = *state;

	start_running(f);
	client.cb->channel_data_function(NULL, NULL, "hello", 5, 0, client.cb->userdata);
	builder.output = "world";
	proxy_bridge_run(f->b, &f->up);
	assert_int_equal(builder.in_len, 5);
	assert_memory_equal(builder.in, "hello", 5);
	assert_int_equal(client.out_len, 5);
	assert_memory_equal(client.out, "world", 5);
	/* EOF, then CLOSE with exit status 3. */
	builder.eof = 1;
	builder.exit_status = 3;
	proxy_bridge_run(f->b, &f->up);
	assert_int_equal(client.exit_status, 3);
	assert_int_equal(proxy_bridge_exit_status(f->b), 3);
	assert_int_equal(client.err_len, 0);
	assert_int_equal(client.closes, 1);
	client.cb->channel_close_function(NULL, NULL, client.cb->userdata);
	proxy_bridge_run(f->b, &f->up);
	assert_true(proxy_bridge_is_done(f->b));
}

/* The race the suite found: the builder's EOF arrives, then its connection
 * breaks before the CLOSE (and its exit status) do. libssh2 says exit status
 * 0 for a channel that never got one: that must not reach the client. */
static void test_eof_then_connection_lost_is_held_not_exit_0(void **state)
{
	struct fixture *f = *state;

	start_running(f);
	builder.eof = 1;
	builder.wait_closed_rc = LIBSSH2_ERROR_SOCKET_DISCONNECT;
	proxy_bridge_run(f->b, &f->up);
	assert_true(proxy_bridge_is_held(f->b));
	assert_non_null(proxy_bridge_lost_reason(f->b));
	assert_int_equal(client.exit_status, -1);
	assert_int_equal(client.closes, 0);
	/* Held until told why; runs change nothing. */
	proxy_bridge_builder_lost(f->b, "connection lost");
	proxy_bridge_run(f->b, NULL);
	assert_true(proxy_bridge_is_held(f->b));
	assert_int_equal(client.exit_status, -1);
	proxy_bridge_fail(f->b, "builder pod p failed: deleted", 1);
	proxy_bridge_run(f->b, NULL);
	assert_int_equal(client.exit_status, 1);
	assert_true(client_told("nrbc: builder pod p failed: deleted\n"));
	assert_int_equal(client.closes, 1);
}

static void test_read_error_is_held(void **state)
{
	struct fixture *f = *state;

	start_running(f);
	builder.output = "partial output";
	proxy_bridge_run(f->b, &f->up);
	builder.read_rc = LIBSSH2_ERROR_SOCKET_RECV;
	proxy_bridge_run(f->b, &f->up);
	assert_true(proxy_bridge_is_held(f->b));
	/* What came before the loss reached the client. */
	assert_int_equal(client.out_len, strlen("partial output"));
	assert_int_equal(client.exit_status, -1);
}

static void test_connection_lost_under_a_running_command_holds(void **state)
{
	struct fixture *f = *state;

	start_running(f);
	proxy_bridge_builder_lost(f->b, "builder answered no keepalive for 90s");
	assert_true(proxy_bridge_is_held(f->b));
	assert_string_equal(proxy_bridge_lost_reason(f->b), "builder answered no keepalive for 90s");
	/* The channel went with the connection: it is not freed here. */
	proxy_bridge_fail(f->b, "lost", 1);
	proxy_bridge_run(f->b, NULL);
	assert_int_equal(builder.frees, 0);
	assert_int_equal(client.exit_status, 1);
}

static void test_connection_lost_before_the_command_waits_again(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(exec_request("nix-daemon --stdio"), 0);
	builder.exec_rc = LIBSSH2_ERROR_EAGAIN;
	f->up.ready = true;
	proxy_bridge_run(f->b, &f->up);
	assert_true(proxy_bridge_wants_builder(f->b));
	proxy_bridge_builder_lost(f->b, "refused");
	f->up.ready = false;
	assert_true(proxy_bridge_wants_builder(f->b));
	assert_false(proxy_bridge_ran(f->b));
	/* Another builder: the command starts there. */
	builder.exec_rc = 0;
	f->up.ready = true;
	proxy_bridge_run(f->b, &f->up);
	assert_true(proxy_bridge_ran(f->b));
}

static void test_killed_by_signal_says_so(void **state)
{
	struct fixture *f = *state;

	start_running(f);
	builder.eof = 1;
	builder.exit_signal = "KILL";
	proxy_bridge_run(f->b, &f->up);
	assert_string_equal(client.exit_signal, "KILL");
	assert_int_equal(client.exit_status, -1);
	assert_true(client_told("nrbc: the command on the builder was killed by signal KILL"));
}

static void test_builder_refusing_the_command_fails_it(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(exec_request("nix-store --serve"), 0);
	builder.exec_rc = LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED;
	f->up.ready = true;
	proxy_bridge_run(f->b, &f->up);
	assert_false(proxy_bridge_ran(f->b));
	assert_int_equal(client.exit_status, 1);
	assert_true(client_told("starting the command on the builder failed"));
}

static void test_client_closing_mid_command_ends_without_exit(void **state)
{
	struct fixture *f = *state;

	start_running(f);
	client.cb->channel_close_function(NULL, NULL, client.cb->userdata);
	proxy_bridge_run(f->b, &f->up);
	assert_true(proxy_bridge_is_done(f->b));
	assert_int_equal(client.exit_status, -1);
	assert_int_equal(builder.frees, 1);
}

static void test_client_eof_reaches_the_builder(void **state)
{
	struct fixture *f = *state;

	start_running(f);
	client.cb->channel_eof_function(NULL, NULL, client.cb->userdata);
	proxy_bridge_run(f->b, &f->up);
	assert_int_equal(builder.eofs_sent, 1);
	proxy_bridge_run(f->b, &f->up);
	assert_int_equal(builder.eofs_sent, 1);
}

static void test_shell_is_refused_with_a_reason(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(client.cb->channel_shell_request_function(NULL, NULL,
	    client.cb->userdata), 0);
	proxy_bridge_run(f->b, NULL);
	assert_int_equal(client.exit_status, 1);
	assert_true(client_told("interactive shells are not available"));
	assert_false(proxy_bridge_wants_builder(f->b));
}

static void test_disallowed_command_is_refused(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(exec_request("sh -c id"), 0);
	proxy_bridge_run(f->b, NULL);
	assert_int_equal(client.exit_status, 1);
	assert_true(client_told("refused \"sh -c id\""));
	/* A second exec on the same channel is refused outright. */
	assert_int_not_equal(exec_request("nix-daemon --stdio"), 0);
}

static void test_notices_only_while_waiting(void **state)
{
	struct fixture *f = *state;

	proxy_bridge_notify(f->b, "before exec");
	assert_int_equal(client.err_len, 0);
	assert_int_equal(exec_request("nix-daemon --stdio"), 0);
	proxy_bridge_notify(f->b, "builder pod p: Pending");
	proxy_bridge_notify(f->b, "builder pod p: Pending");
	assert_true(client_told("nrbc: builder pod p: Pending\n"));
	assert_int_equal(client.err_len, strlen("nrbc: builder pod p: Pending\n"));
}

static int client_data(const char *data, size_t len)
{
	return client.cb->channel_data_function(NULL, NULL, (void *)data, (uint32_t)len, 0,
	    client.cb->userdata);
}

static void test_data_before_exec_closes_the_channel(void **state)
{
	struct fixture *f = *state;

	/* All of it is taken (libssh keeps nothing) and none of it stored. */
	assert_int_equal(client_data("garbage", 7), 7);
	assert_int_equal(budget.held, 0);
	proxy_bridge_run(f->b, NULL);
	assert_true(client_told("data came before a command"));
	assert_int_equal(client.exit_status, 1);
	assert_int_equal(client.closes, 1);
	assert_false(proxy_bridge_wants_builder(f->b));
	/* What follows is dropped too, and a late exec is refused. */
	assert_int_equal(client_data("more", 4), 4);
	assert_int_equal(budget.held, 0);
	assert_int_not_equal(exec_request("nix-daemon --stdio"), 0);
}

static void test_budget_counts_what_the_buffers_hold(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(exec_request("nix-daemon --stdio"), 0);
	/* After the exec, data waits for the builder in the bridge. */
	assert_int_equal(client_data("0123456789", 10), 10);
	assert_int_equal(budget.held, 10);
	f->up.ready = true;
	proxy_bridge_run(f->b, &f->up);
	assert_true(proxy_bridge_ran(f->b));
	assert_int_equal(builder.in_len, 10);
	assert_memory_equal(builder.in, "0123456789", 10);
	assert_int_equal(budget.held, 0);
	assert_true(budget.peak >= 10);
}

static void test_full_budget_takes_no_client_data(void **state)
{
	struct fixture *f = *state;

	/* Other channels hold the whole budget. */
	budget.limit = 100;
	budget.held = 100;
	start_running(f);
	assert_int_equal(client_data("abc", 3), 0); /* stays in libssh */
	proxy_bridge_run(f->b, &f->up);
	assert_int_equal(builder.in_len, 0);
	assert_true(proxy_bridge_waits_for_budget(f->b));
	/* Room again: the bridge pulls what libssh held (none here). */
	budget.held = 0;
	proxy_bridge_run(f->b, &f->up);
	assert_false(proxy_bridge_waits_for_budget(f->b));
	assert_int_equal(client_data("abc", 3), 3);
	proxy_bridge_run(f->b, &f->up);
	assert_int_equal(builder.in_len, 3);
	assert_int_equal(budget.held, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_clean_exit_status_is_relayed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof_then_connection_lost_is_held_not_exit_0,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_error_is_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_lost_under_a_running_command_holds,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_lost_before_the_command_waits_again,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_killed_by_signal_says_so, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder_refusing_the_command_fails_it, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_client_closing_mid_command_ends_without_exit,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_eof_reaches_the_builder, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_shell_is_refused_with_a_reason, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_disallowed_command_is_refused, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_notices_only_while_waiting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_before_exec_closes_the_channel, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_budget_counts_what_the_buffers_hold, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_full_budget_takes_no_client_data, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
