#include "proxy_bridge.h"

#include <libssh/callbacks.h>
#include <libssh/server.h>
#include <libssh2.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "proxy_command.h"
#include "proxy_pipebuf.h"
#include "proxy_upstream.h"

/* Buffer sizes. Output from the builder is read in big batches: fewer
 * wakeups and context switches per byte on a loaded machine (measured:
 * 512 KiB moves 10-20% more than 128 KiB at lower CPU per GiB). All buffers
 * are allocated on first use and released when empty, so an idle bridged
 * channel holds none of them. */
#define BRIDGE_DOWN_CAP (512 * 1024)
#define BRIDGE_ERR_CAP (16 * 1024)
/* Client data is taken into the up buffer up to this much ... */
#define BRIDGE_UP_SOFT (128 * 1024)
/* ... the rest stays in libssh's channel buffer, which then stops growing
 * the client's window. When the up buffer is empty again, the whole of that
 * leftover is pulled at once (reading part of it would let libssh grow the
 * window on top of what it still holds, without bound). libssh never holds
 * more than about two windows (2 x 1.28 MB), so this cap is never reached. */
#define BRIDGE_UP_HARD (4 * 1024 * 1024)
#define BRIDGE_MAX_ENV 64
#define BRIDGE_MAX_ENV_BYTES 16384
#define BRIDGE_ROUNDS 64
#define UPSTREAM_WINDOW (2 * 1024 * 1024)
#define UPSTREAM_PACKET 32768

enum bridge_state {
	BRIDGE_OPEN,         /* channel open, no exec yet */
	BRIDGE_WAIT_BUILDER, /* exec accepted, waiting for the builder connection */
	BRIDGE_UP_OPEN,      /* opening the channel on the builder */
	BRIDGE_UP_ENV,       /* replaying env requests */
	BRIDGE_UP_EXEC,      /* replaying the exec */
	BRIDGE_RUNNING,      /* pumping */
	BRIDGE_HOLD,         /* the builder's channel ended uncleanly: told nothing yet */
	BRIDGE_ENDING,       /* closing both channels, delivering the exit */
	BRIDGE_DONE,
};

static const char *const bridge_state_names[] = {
	[BRIDGE_OPEN] = "OPEN",
	[BRIDGE_WAIT_BUILDER] = "WAIT_BUILDER",
	[BRIDGE_UP_OPEN] = "UP_OPEN",
	[BRIDGE_UP_ENV] = "UP_ENV",
	[BRIDGE_UP_EXEC] = "UP_EXEC",
	[BRIDGE_RUNNING] = "RUNNING",
	[BRIDGE_HOLD] = "HOLD",
	[BRIDGE_ENDING] = "ENDING",
	[BRIDGE_DONE] = "DONE",
};

/* What a peer has sent on its channel; only ever moves down the list. */
enum bridge_in {
	BRIDGE_IN_OPEN,
	BRIDGE_IN_EOF,    /* no more data will come */
	BRIDGE_IN_CLOSED, /* its CLOSE: the channel is over (the builder's exit is known) */
	BRIDGE_IN_LOST,   /* its connection broke: nothing more comes, nothing goes */
};

static const char *const bridge_in_names[] = {
	[BRIDGE_IN_OPEN] = "OPEN",
	[BRIDGE_IN_EOF] = "EOF",
	[BRIDGE_IN_CLOSED] = "CLOSED",
	[BRIDGE_IN_LOST] = "LOST",
};

/* What we have sent a peer; only ever moves down the list. */
enum bridge_out {
	BRIDGE_OUT_OPEN,
	BRIDGE_OUT_EOF,
	BRIDGE_OUT_CLOSED,
};

static const char *const bridge_out_names[] = {
	[BRIDGE_OUT_OPEN] = "OPEN",
	[BRIDGE_OUT_EOF] = "EOF",
	[BRIDGE_OUT_CLOSED] = "CLOSED",
};

/* One side of the bridged channel, closing in halves. */
struct bridge_side {
	const char *name;
	enum bridge_in in;
	enum bridge_out out;
};

/* What the client is told when its channel ends. */
enum bridge_exit_kind {
	BRIDGE_EXIT_NONE,
	BRIDGE_EXIT_STATUS,
	BRIDGE_EXIT_SIGNAL,
};

struct bridge_exit {
	enum bridge_exit_kind kind;
	int status;
	char *signal;
	char *message; /* a "nrbc: " line on stderr first, or NULL */
};

struct bridge_env_var {
	char *name;
	char *value;
};

struct proxy_bridge {
	struct proxy_bridge_env env;
	enum bridge_state state;
	ssh_session ssh;
	ssh_channel cch;
	struct ssh_channel_callbacks_struct cb;
	LIBSSH2_CHANNEL *uch;
	bool open_claimed;
	char *command;
	struct bridge_env_var envs[BRIDGE_MAX_ENV];
	size_t n_env, env_next, env_bytes;
	struct proxy_pipebuf up, down[2];
	/* libssh holds more of the client's data than the up buffer took. */
	bool up_leftover;
	struct bridge_side client, builder;
	bool ran;
	struct bridge_exit exit;
	char *lost_reason;
	int forwarded_status;
	char *last_notice;
	/* operation identities for proxy_upstream's arbitration */
	char op_open, op_env, op_exec, op_read, op_write, op_eof, op_close, op_free;
};

static void bridge_set_state(struct proxy_bridge *b, enum bridge_state state)
{
	if (b->state == state)
		return;
	log_debug("session=%llu channel=%u: %s => %s", (unsigned long long)b->env.session_id,
	    b->env.channel_no, bridge_state_names[b->state], bridge_state_names[state]);
	b->state = state;
}

static void bridge_side_in(struct proxy_bridge *b, struct bridge_side *side, enum bridge_in in)
{
	if (in <= side->in)
		return;
	log_debug("session=%llu channel=%u: %s in %s => %s", (unsigned long long)b->env.session_id,
	    b->env.channel_no, side->name, bridge_in_names[side->in], bridge_in_names[in]);
	side->in = in;
}

static void bridge_side_out(struct proxy_bridge *b, struct bridge_side *side,
    enum bridge_out out)
{
	if (out <= side->out)
		return;
	log_debug("session=%llu channel=%u: %s out %s => %s", (unsigned long long)b->env.session_id,
	    b->env.channel_no, side->name, bridge_out_names[side->out], bridge_out_names[out]);
	side->out = out;
}

/* The exit the client will get; the first one set wins. */
static void bridge_set_exit(struct proxy_bridge *b, enum bridge_exit_kind kind, int status,
    char *signal, const char *message)
{
	if (b->exit.kind != BRIDGE_EXIT_NONE) {
		free(signal);
		return;
	}
	b->exit.kind = kind;
	b->exit.status = status;
	b->exit.signal = signal;
	free(b->exit.message);
	b->exit.message = message ? strdup(message) : NULL;
}

/* ---- libssh callbacks: record and wake, nothing else ---- */

static void bridge_wake(struct proxy_bridge *b)
{
	b->env.wake(b->env.data);
}

static bool bridge_accepts_requests(const struct proxy_bridge *b)
{
	return b->state == BRIDGE_OPEN && b->exit.kind == BRIDGE_EXIT_NONE;
}

static void bridge_refuse(struct proxy_bridge *b, const char *message)
{
	/* Accepting the request and then explaining beats a bare "request
	 * failed": the Nix user sees why. */
	bridge_set_exit(b, BRIDGE_EXIT_STATUS, 1, NULL, message);
	bridge_wake(b);
}

static int bridge_on_data(ssh_session session, ssh_channel channel, void *data, uint32_t len,
    int is_stderr, void *userdata)
{
	struct proxy_bridge *b = userdata;
	size_t take, space;
	char *tail;

	if (is_stderr || b->state >= BRIDGE_HOLD || b->exit.kind != BRIDGE_EXIT_NONE)
		return (int)len; /* nobody will read it: drop */
	if (b->state == BRIDGE_OPEN) {
		/* Nix sends its exec first; data before it has no command to go
		 * to, and holding it for one is what let a client fill the
		 * proxy's memory. Dropped, and the channel closed. */
		log_info("session=%llu channel=%u: %u bytes of data before any command: "
		    "closing the channel", (unsigned long long)b->env.session_id, b->env.channel_no,
		    len);
		metric_add(b->env.early_data, 1);
		bridge_refuse(b, "data came before a command: closing the channel");
		return (int)len;
	}
	if (b->up.len >= BRIDGE_UP_SOFT || proxy_pipebuf_budget_full(b->env.budget)) {
		b->up_leftover = true;
		return 0;
	}
	take = BRIDGE_UP_SOFT - b->up.len;
	if (take > len)
		take = len;
	tail = proxy_pipebuf_reserve(&b->up, take, &space);
	if (!tail) {
		b->up_leftover = true;
		return 0;
	}
	memcpy(tail, data, space);
	b->up.len += space;
	if (space < len)
		b->up_leftover = true;
	bridge_wake(b);
	return (int)space;
}

static void bridge_on_eof(ssh_session session, ssh_channel channel, void *userdata)
{
	struct proxy_bridge *b = userdata;

	bridge_side_in(b, &b->client, BRIDGE_IN_EOF);
	bridge_wake(b);
}

static void bridge_on_close(ssh_session session, ssh_channel channel, void *userdata)
{
	struct proxy_bridge *b = userdata;

	bridge_side_in(b, &b->client, BRIDGE_IN_CLOSED);
	bridge_wake(b);
}
static int bridge_on_write_wontblock(ssh_session session, ssh_channel channel, uint32_t bytes,
    void *userdata)
{
	bridge_wake(userdata);
	return 0;
}

static int bridge_on_env(ssh_session session, ssh_channel channel, const char *name,
    const char *value, void *userdata)
{
	struct proxy_bridge *b = userdata;
	size_t n = strlen(name) + strlen(value);

	if (!bridge_accepts_requests(b) || b->n_env == BRIDGE_MAX_ENV ||
	    b->env_bytes + n > BRIDGE_MAX_ENV_BYTES)
		return 1;
	b->envs[b->n_env].name = strdup(name);
	b->envs[b->n_env].value = strdup(value);
	if (!b->envs[b->n_env].name || !b->envs[b->n_env].value) {
		free(b->envs[b->n_env].name);
		free(b->envs[b->n_env].value);
		return 1;
	}
	b->n_env++;
	b->env_bytes += n;
	return 0;
}

static int bridge_on_exec(ssh_session session, ssh_channel channel, const char *command,
    void *userdata)
{
	struct proxy_bridge *b = userdata;
	enum proxy_command_verdict v;
	char *msg;

	if (!bridge_accepts_requests(b))
		return 1;
	v = proxy_command_check(b->env.policy, command, strlen(command));
	if (v != PROXY_COMMAND_ALLOWED) {
		log_info("session=%llu channel=%u: refused command \"%.200s\": %s",
		    (unsigned long long)b->env.session_id, b->env.channel_no,
		    v == PROXY_COMMAND_MALFORMED ? "(malformed)" : command,
		    v == PROXY_COMMAND_MALFORMED ? "malformed" : "not allowed");
		msg = v == PROXY_COMMAND_MALFORMED ?
		    str_printf("refused the command: %s", proxy_command_refusal(v)) :
		    str_printf("refused \"%.200s\": %s", command, proxy_command_refusal(v));
		bridge_refuse(b, msg ? msg : "refused the command");
		free(msg);
		return 0;
	}
	b->command = strdup(command);
	if (!b->command)
		return 1;
	log_info("session=%llu channel=%u: exec \"%s\"", (unsigned long long)b->env.session_id,
	    b->env.channel_no, command);
	bridge_set_state(b, BRIDGE_WAIT_BUILDER);
	bridge_wake(b);
	return 0;
}

static int bridge_on_shell(ssh_session session, ssh_channel channel, void *userdata)
{
	struct proxy_bridge *b = userdata;

	if (!bridge_accepts_requests(b))
		return 1;
	log_info("session=%llu channel=%u: refused an interactive shell",
	    (unsigned long long)b->env.session_id, b->env.channel_no);
	bridge_refuse(b, "interactive shells are not available: this proxy only runs the "
	    "commands Nix uses for remote builds");
	return 0;
}

static int bridge_on_subsystem(ssh_session session, ssh_channel channel, const char *subsystem,
    void *userdata)
{
	struct proxy_bridge *b = userdata;
	char *msg;

	if (!bridge_accepts_requests(b))
		return 1;
	log_info("session=%llu channel=%u: refused subsystem \"%.100s\"",
	    (unsigned long long)b->env.session_id, b->env.channel_no, subsystem);
	msg = str_printf("subsystem \"%.100s\" is not available: this proxy only runs the "
	    "commands Nix uses for remote builds", subsystem);
	bridge_refuse(b, msg ? msg : "subsystems are not available");
	free(msg);
	return 0;
}

static int bridge_on_pty(ssh_session session, ssh_channel channel, const char *term, int width,
    int height, int pxwidth, int pwheight, void *userdata)
{
	struct proxy_bridge *b = userdata;

	log_info("session=%llu channel=%u: refused a pty", (unsigned long long)b->env.session_id,
	    b->env.channel_no);
	return -1;
}

/* ---- creation ---- */

struct proxy_bridge *proxy_bridge_create(ssh_session ssh, const struct proxy_bridge_env *env)
{
	struct proxy_bridge *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->env = *env;
	b->ssh = ssh;
	b->up.budget = b->down[0].budget = b->down[1].budget = env->budget;
	b->forwarded_status = -1;
	b->client.name = "client";
	b->builder.name = "builder";
	b->cch = ssh_channel_new(ssh);
	if (!b->cch)
		goto bad;
	b->cb.userdata = b;
	b->cb.channel_data_function = bridge_on_data;
	b->cb.channel_eof_function = bridge_on_eof;
	b->cb.channel_close_function = bridge_on_close;
	b->cb.channel_write_wontblock_function = bridge_on_write_wontblock;
	b->cb.channel_env_request_function = bridge_on_env;
	b->cb.channel_exec_request_function = bridge_on_exec;
	b->cb.channel_shell_request_function = bridge_on_shell;
	b->cb.channel_subsystem_request_function = bridge_on_subsystem;
	b->cb.channel_pty_request_function = bridge_on_pty;
	ssh_callbacks_init(&b->cb);
	if (ssh_set_channel_callbacks(b->cch, &b->cb) != SSH_OK)
		goto bad;
	return b;
bad:
	if (b->cch)
		ssh_channel_free(b->cch);
	free(b);
	return NULL;
}

ssh_channel proxy_bridge_channel(const struct proxy_bridge *b)
{
	return b->cch;
}

void proxy_bridge_destroy(struct proxy_bridge *b)
{
	if (!b)
		return;
	if (b->cch) {
		ssh_remove_channel_callbacks(b->cch, &b->cb);
		ssh_channel_free(b->cch);
	}
	/* Only a channel on a live connection is still held here: one whose
	 * close would not go through at once is taken by the session free. */
	if (b->uch)
		libssh2_channel_free(b->uch);
	free(b->command);
	for (size_t i = 0; i < b->n_env; i++) {
		free(b->envs[i].name);
		free(b->envs[i].value);
	}
	proxy_pipebuf_finish(&b->up);
	proxy_pipebuf_finish(&b->down[0]);
	proxy_pipebuf_finish(&b->down[1]);
	free(b->exit.message);
	free(b->exit.signal);
	free(b->lost_reason);
	free(b->last_notice);
	free(b);
}

/* ---- messages to the client ---- */

/* The client still reads what we send on the channel. */
static bool bridge_client_listens(const struct proxy_bridge *b)
{
	return b->client.in < BRIDGE_IN_CLOSED && b->client.out == BRIDGE_OUT_OPEN;
}

static void bridge_client_broken(struct proxy_bridge *b)
{
	bridge_side_in(b, &b->client, BRIDGE_IN_LOST);
}

static void bridge_write_stderr_line(struct proxy_bridge *b, const char *message)
{
	char *line;
	uint32_t win;
	size_t len;

	if (!bridge_client_listens(b))
		return;
	line = str_printf("nrbc: %s\n", message);
	if (!line)
		return;
	len = strlen(line);
	win = ssh_channel_window_size(b->cch);
	/* A message that does not fit the window is cut rather than queued. */
	if (len > win)
		len = win;
	if (len && ssh_channel_write_stderr(b->cch, line, (uint32_t)len) == SSH_ERROR)
		bridge_client_broken(b);
	free(line);
}

void proxy_bridge_notify(struct proxy_bridge *b, const char *message)
{
	if (b->state != BRIDGE_WAIT_BUILDER)
		return;
	if (b->last_notice && strcmp(b->last_notice, message) == 0)
		return;
	free(b->last_notice);
	b->last_notice = strdup(message);
	bridge_write_stderr_line(b, message);
}

void proxy_bridge_fail(struct proxy_bridge *b, const char *message, int exit_status)
{
	if (b->state >= BRIDGE_ENDING)
		return;
	bridge_set_exit(b, BRIDGE_EXIT_STATUS, exit_status, NULL, message);
	bridge_set_state(b, BRIDGE_ENDING);
}

void proxy_bridge_builder_lost(struct proxy_bridge *b, const char *why)
{
	/* libssh2_session_free takes the channel with the connection. */
	b->uch = NULL;
	b->open_claimed = false;
	switch (b->state) {
	case BRIDGE_UP_OPEN:
	case BRIDGE_UP_ENV:
	case BRIDGE_UP_EXEC:
		/* Nothing ran: the command may yet get a builder. */
		b->env_next = 0;
		bridge_set_state(b, BRIDGE_WAIT_BUILDER);
		break;
	case BRIDGE_RUNNING:
		bridge_side_in(b, &b->builder, BRIDGE_IN_LOST);
		if (!b->lost_reason && why)
			b->lost_reason = strdup(why);
		bridge_set_state(b, BRIDGE_HOLD);
		break;
	default:
		break;
	}
}

/* ---- the builder side ---- */

static bool upstream_usable(struct proxy_upstream *u)
{
	return u && proxy_upstream_is_ready(u);
}

/* A call on the builder's channel failed. Before the command runs, a
 * builder that is still connected has refused: that is the answer. A
 * running command, or a connection that went with the call, is held: its
 * fate is for the session to find out. */
static void bridge_upstream_error(struct proxy_bridge *b, struct proxy_upstream *u,
    const char *what, int rc)
{
	char *msg = str_printf("%s on the builder failed: %s", what, proxy_upstream_error(u));

	log_info("session=%llu channel=%u: %s (rc %d)", (unsigned long long)b->env.session_id,
	    b->env.channel_no, msg ? msg : what, rc);
	if (b->state == BRIDGE_RUNNING) {
		bridge_side_in(b, &b->builder, BRIDGE_IN_LOST);
		if (!b->lost_reason)
			b->lost_reason = msg ? strdup(msg) : NULL;
		bridge_set_state(b, BRIDGE_HOLD);
	} else if (upstream_usable(u)) {
		proxy_bridge_fail(b, msg ? msg : what, 1);
	}
	/* else: the connection is gone; proxy_bridge_builder_lost follows. */
	free(msg);
}

static void bridge_step_up_open(struct proxy_bridge *b, struct proxy_upstream *u)
{
	LIBSSH2_SESSION *s = proxy_upstream_session(u);
	LIBSSH2_CHANNEL *ch;
	int rc;

	if (!proxy_upstream_claim_open(u, b) || !proxy_upstream_may_call(u, &b->op_open))
		return;
	b->open_claimed = true;
	ch = libssh2_channel_open_ex(s, "session", sizeof("session") - 1, UPSTREAM_WINDOW,
	    UPSTREAM_PACKET, NULL, 0);
	rc = ch ? 0 : libssh2_session_last_errno(s);
	proxy_upstream_after(u, &b->op_open, rc);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return;
	proxy_upstream_release_open(u, b);
	b->open_claimed = false;
	if (!ch) {
		if (b->state == BRIDGE_UP_OPEN)
			bridge_upstream_error(b, u, "opening a channel", rc);
		return;
	}
	b->uch = ch;
	if (b->state == BRIDGE_UP_OPEN)
		bridge_set_state(b, BRIDGE_UP_ENV);
}

static void bridge_step_up_env(struct proxy_bridge *b, struct proxy_upstream *u)
{
	while (b->env_next < b->n_env) {
		struct bridge_env_var *e = &b->envs[b->env_next];
		int rc;

		if (!proxy_upstream_may_call(u, &b->op_env))
			return;
		rc = proxy_upstream_after(u, &b->op_env, libssh2_channel_setenv_ex(b->uch, e->name,
		    (unsigned)strlen(e->name), e->value, (unsigned)strlen(e->value)));
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return;
		if (!upstream_usable(u))
			return; /* proxy_bridge_builder_lost follows */
		/* The builder's sshd decides (AcceptEnv); a refusal is not fatal. */
		if (rc)
			log_debug("session=%llu channel=%u: builder refused env %s",
			    (unsigned long long)b->env.session_id, b->env.channel_no, e->name);
		b->env_next++;
	}
	bridge_set_state(b, BRIDGE_UP_EXEC);
}

static void bridge_step_up_exec(struct proxy_bridge *b, struct proxy_upstream *u)
{
	int rc;

	if (!proxy_upstream_may_call(u, &b->op_exec))
		return;
	rc = proxy_upstream_after(u, &b->op_exec, libssh2_channel_process_startup(b->uch, "exec",
	    sizeof("exec") - 1, b->command, (unsigned)strlen(b->command)));
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return;
	if (rc) {
		bridge_upstream_error(b, u, "starting the command", rc);
		return;
	}
	b->ran = true;
	bridge_set_state(b, BRIDGE_RUNNING);
}

/* Moves the rest of what libssh holds for us into the (empty) up buffer. */
static void bridge_pull_leftover(struct proxy_bridge *b)
{
	int avail = ssh_channel_poll(b->cch, 0);
	size_t space;
	char *tail;
	int n;

	if (avail <= 0) {
		b->up_leftover = false;
		return;
	}
	if ((size_t)avail > BRIDGE_UP_HARD)
		avail = BRIDGE_UP_HARD;
	tail = proxy_pipebuf_reserve(&b->up, (size_t)avail, &space);
	if (!tail)
		return;
	n = ssh_channel_read_nonblocking(b->cch, tail, (uint32_t)space, 0);
	if (n > 0)
		b->up.len += (size_t)n;
	/* Past the hard cap more may remain; otherwise all of it is here. */
	if (n <= 0 || (n == avail && avail < BRIDGE_UP_HARD))
		b->up_leftover = false;
}

static size_t bridge_pump_up(struct proxy_bridge *b, struct proxy_upstream *u)
{
	size_t moved = 0;
	int rc;

	for (int i = 0; i < BRIDGE_ROUNDS && b->state == BRIDGE_RUNNING; i++) {
		ssize_t n;

		if (b->up.len == 0 && b->up_leftover && !proxy_pipebuf_budget_full(b->env.budget))
			bridge_pull_leftover(b);
		if (b->up.len == 0 || !proxy_upstream_may_call(u, &b->op_write))
			break;
		n = libssh2_channel_write_ex(b->uch, 0, b->up.data + b->up.off, b->up.len);
		proxy_upstream_after(u, &b->op_write, n < 0 ? (int)n : 0);
		if (n > 0) {
			proxy_pipebuf_consume(&b->up, (size_t)n);
			moved += (size_t)n;
			metric_add(b->env.bytes_up, (double)n);
			if (b->env.session_bytes_up)
				*b->env.session_bytes_up += (uint64_t)n;
			continue;
		}
		if (n == 0 || n == LIBSSH2_ERROR_EAGAIN)
			break;
		bridge_upstream_error(b, u, "sending data", (int)n);
		return moved;
	}
	if (b->state == BRIDGE_RUNNING && b->client.in >= BRIDGE_IN_EOF && b->up.len == 0 &&
	    !b->up_leftover && b->builder.out == BRIDGE_OUT_OPEN &&
	    proxy_upstream_may_call(u, &b->op_eof)) {
		rc = proxy_upstream_after(u, &b->op_eof, libssh2_channel_send_eof(b->uch));
		if (rc == 0)
			bridge_side_out(b, &b->builder, BRIDGE_OUT_EOF);
		else if (rc != LIBSSH2_ERROR_EAGAIN)
			bridge_upstream_error(b, u, "sending EOF", rc);
	}
	return moved;
}

/* Writes what a down buffer holds to the client, within its window. */
static size_t bridge_flush_down(struct proxy_bridge *b, int stream)
{
	struct proxy_pipebuf *d = &b->down[stream];
	size_t moved = 0;

	while (d->len > 0) {
		uint32_t win, chunk;
		int w;

		if (b->client.in >= BRIDGE_IN_CLOSED) {
			proxy_pipebuf_consume(d, d->len); /* the client is gone */
			break;
		}
		win = ssh_channel_window_size(b->cch);
		if (win == 0)
			break;
		chunk = d->len < win ? (uint32_t)d->len : win;
		w = stream ? ssh_channel_write_stderr(b->cch, d->data + d->off, chunk) :
		    ssh_channel_write(b->cch, d->data + d->off, chunk);
		if (w == SSH_ERROR) {
			bridge_client_broken(b);
			continue;
		}
		if (w > 0) {
			proxy_pipebuf_consume(d, (size_t)w);
			moved += (size_t)w;
			metric_add(b->env.bytes_down, (double)w);
			if (b->env.session_bytes_down)
				*b->env.session_bytes_down += (uint64_t)w;
		}
		if ((uint32_t)w < chunk)
			break;
	}
	return moved;
}

static size_t bridge_pump_down(struct proxy_bridge *b, struct proxy_upstream *u, int stream)
{
	struct proxy_pipebuf *d = &b->down[stream];
	size_t cap = stream ? BRIDGE_ERR_CAP : BRIDGE_DOWN_CAP;
	size_t moved = 0;

	for (int i = 0; i < BRIDGE_ROUNDS && b->state == BRIDGE_RUNNING; i++) {
		size_t space = 0;
		char *tail;
		ssize_t n;

		/* An empty queue may still take one read over a full budget:
		 * otherwise a bridge could wait forever for memory that only
		 * other bridges hold, and the budget is exceeded by at most one
		 * read per bridge. */
		if (d->len >= cap || (d->len && proxy_pipebuf_budget_full(b->env.budget)) ||
		    !proxy_upstream_may_call(u, &b->op_read))
			break;
		tail = proxy_pipebuf_reserve(d, cap - d->len, &space);
		if (!tail)
			break;
		n = libssh2_channel_read_ex(b->uch, stream, tail, space);
		proxy_upstream_after(u, &b->op_read, n < 0 ? (int)n : 0);
		if (n < 0 && n != LIBSSH2_ERROR_EAGAIN) {
			bridge_upstream_error(b, u, "reading output", (int)n);
			break;
		}
		if (n <= 0)
			break;
		d->len += (size_t)n;
		moved += bridge_flush_down(b, stream);
		if (d->len >= cap)
			break; /* the client is slower: stop reading until it catches up */
	}
	if (d->len == 0)
		proxy_pipebuf_finish(d);
	return moved;
}

/* The builder's channel closed cleanly: its exit-status or exit-signal came
 * before the CLOSE (sshd sends one of them when the command ends). */
static void bridge_collect_exit(struct proxy_bridge *b, struct proxy_upstream *u)
{
	char *sig = NULL, *signal = NULL, *msg = NULL;
	size_t sig_len = 0;

	if (libssh2_channel_get_exit_signal(b->uch, &sig, &sig_len, NULL, NULL, NULL, NULL) == 0 &&
	    sig) {
		signal = strndup(sig, sig_len);
		libssh2_free(proxy_upstream_session(u), sig);
	}
	if (!signal) {
		bridge_set_exit(b, BRIDGE_EXIT_STATUS, libssh2_channel_get_exit_status(b->uch), NULL,
		    NULL);
		return;
	}
	/* Nix only says "unexpected end-of-file": say what happened. */
	log_info("session=%llu channel=%u: the command was killed by signal %s",
	    (unsigned long long)b->env.session_id, b->env.channel_no, signal);
	msg = str_printf("the command on the builder was killed by signal %s%s", signal,
	    strcmp(signal, "KILL") == 0 ? " (out of memory?)" : "");
	bridge_set_exit(b, BRIDGE_EXIT_SIGNAL, 0, signal, msg ? msg : "the command was killed");
	free(msg);
}

/* The builder's output is all read and passed on: wait for the builder's
 * CLOSE, which carries the exit. The client's EOF waits for it too: after
 * an EOF nothing more may be written, not even the line that says why the
 * command ended (a signal, a lost builder). */
static void bridge_finish_running(struct proxy_bridge *b, struct proxy_upstream *u)
{
	int rc;

	if (!proxy_upstream_may_call(u, &b->op_close))
		return;
	rc = proxy_upstream_after(u, &b->op_close, libssh2_channel_wait_closed(b->uch));
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return;
	if (rc) {
		/* EOF came, CLOSE did not: the command's end is unknown. */
		bridge_upstream_error(b, u, "waiting for the command's exit", rc);
		return;
	}
	bridge_side_in(b, &b->builder, BRIDGE_IN_CLOSED);
	bridge_collect_exit(b, u);
	bridge_set_state(b, BRIDGE_ENDING);
}

static size_t bridge_step_running(struct proxy_bridge *b, struct proxy_upstream *u)
{
	size_t moved = 0;

	if (b->client.in >= BRIDGE_IN_CLOSED) {
		/* The command is over on the builder (EOF seen): its exit status
		 * is on the way and the client, which closed on our EOF, still
		 * takes it until our CLOSE goes out. Otherwise stop the command. */
		if (b->builder.in < BRIDGE_IN_EOF || b->client.in == BRIDGE_IN_LOST) {
			log_debug("session=%llu channel=%u: client closed the channel",
			    (unsigned long long)b->env.session_id, b->env.channel_no);
			bridge_set_state(b, BRIDGE_ENDING);
			return 0;
		}
		proxy_pipebuf_finish(&b->down[0]);
		proxy_pipebuf_finish(&b->down[1]);
	}
	moved += bridge_flush_down(b, 0) + bridge_flush_down(b, 1);
	moved += bridge_pump_up(b, u);
	moved += bridge_pump_down(b, u, 0);
	/* Each read ends in a recv() that would block; skip stderr's when
	 * nothing is queued for this channel at all. */
	if (b->state == BRIDGE_RUNNING && (b->down[1].len || libssh2_poll_channel_read(b->uch, 1)))
		moved += bridge_pump_down(b, u, 1);
	if (b->state != BRIDGE_RUNNING)
		return moved;
	if (libssh2_channel_eof(b->uch) == 1)
		bridge_side_in(b, &b->builder, BRIDGE_IN_EOF);
	if (b->builder.in >= BRIDGE_IN_EOF && !b->down[0].len && !b->down[1].len)
		bridge_finish_running(b, u);
	return moved;
}

/* The builder's channel is gone without its exit: what it had sent still
 * reaches the client while the session finds out why. */
static size_t bridge_step_hold(struct proxy_bridge *b)
{
	size_t moved = bridge_flush_down(b, 0) + bridge_flush_down(b, 1);

	if (b->client.in >= BRIDGE_IN_CLOSED)
		bridge_set_state(b, BRIDGE_ENDING); /* nobody left to tell */
	return moved;
}

/* ---- the end ---- */

static bool bridge_end_upstream(struct proxy_bridge *b, struct proxy_upstream *u)
{
	int rc;

	if (!upstream_usable(u)) {
		/* Gone with its connection, or about to be: the session calls
		 * proxy_bridge_builder_lost before it frees the connection. */
		return !b->uch && !b->open_claimed;
	}
	if (b->open_claimed) {
		/* libssh2 keeps one open in flight per session: finish it. */
		bridge_step_up_open(b, u);
		if (b->open_claimed)
			return false;
	}
	if (!b->uch)
		return true;
	if (!proxy_upstream_may_call(u, &b->op_free))
		return false;
	rc = proxy_upstream_after(u, &b->op_free, libssh2_channel_free(b->uch));
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return false;
	b->uch = NULL;
	bridge_side_out(b, &b->builder, BRIDGE_OUT_CLOSED);
	return true;
}

static void bridge_send_exit(struct proxy_bridge *b)
{
	switch (b->exit.kind) {
	case BRIDGE_EXIT_SIGNAL:
		ssh_channel_request_send_exit_signal(b->cch, b->exit.signal, 0, "", "");
		break;
	case BRIDGE_EXIT_STATUS:
		ssh_channel_request_send_exit_status(b->cch, b->exit.status);
		b->forwarded_status = b->exit.status;
		break;
	case BRIDGE_EXIT_NONE:
		break;
	}
}

static bool bridge_end_client(struct proxy_bridge *b)
{
	if (b->client.out != BRIDGE_OUT_CLOSED) {
		if (b->client.in != BRIDGE_IN_LOST) {
			/* A client that closed first still takes the exit status
			 * until our CLOSE: OpenSSH closes on EOF both ways. */
			if (b->exit.message)
				bridge_write_stderr_line(b, b->exit.message);
			bridge_send_exit(b);
			if (bridge_client_listens(b))
				ssh_channel_send_eof(b->cch);
			bridge_side_out(b, &b->client, BRIDGE_OUT_EOF);
		}
		/* EOF went first, so this sends the CLOSE even when the socket is
		 * busy (libssh returns before CLOSE when its EOF cannot flush). */
		ssh_channel_close(b->cch);
		bridge_side_out(b, &b->client, BRIDGE_OUT_CLOSED);
		log_debug("session=%llu channel=%u: closed (exit %s%d)",
		    (unsigned long long)b->env.session_id, b->env.channel_no,
		    b->exit.signal ? b->exit.signal : "", b->exit.signal ? 0 : b->exit.status);
	}
	return b->client.in >= BRIDGE_IN_CLOSED;
}

/* The client went away before the command ran: nothing to wait for. */
static bool bridge_client_left(const struct proxy_bridge *b)
{
	return b->client.in >= BRIDGE_IN_CLOSED;
}

size_t proxy_bridge_run(struct proxy_bridge *b, struct proxy_upstream *u)
{
	size_t moved = 0;
	enum bridge_state before;

	do {
		before = b->state;
		switch (b->state) {
		case BRIDGE_OPEN:
			if (b->exit.kind != BRIDGE_EXIT_NONE || bridge_client_left(b))
				bridge_set_state(b, BRIDGE_ENDING);
			break;
		case BRIDGE_WAIT_BUILDER:
			if (bridge_client_left(b))
				bridge_set_state(b, BRIDGE_ENDING);
			else if (upstream_usable(u))
				bridge_set_state(b, BRIDGE_UP_OPEN);
			break;
		case BRIDGE_UP_OPEN:
			if (upstream_usable(u))
				bridge_step_up_open(b, u);
			if (bridge_client_left(b) && b->state < BRIDGE_ENDING)
				bridge_set_state(b, BRIDGE_ENDING);
			break;
		case BRIDGE_UP_ENV:
			if (bridge_client_left(b))
				bridge_set_state(b, BRIDGE_ENDING);
			else if (upstream_usable(u))
				bridge_step_up_env(b, u);
			break;
		case BRIDGE_UP_EXEC:
			if (bridge_client_left(b))
				bridge_set_state(b, BRIDGE_ENDING);
			else if (upstream_usable(u))
				bridge_step_up_exec(b, u);
			break;
		case BRIDGE_RUNNING:
			if (upstream_usable(u))
				moved += bridge_step_running(b, u);
			break;
		case BRIDGE_HOLD:
			moved += bridge_step_hold(b);
			break;
		case BRIDGE_ENDING: {
			bool up_done = bridge_end_upstream(b, u);
			bool client_done = bridge_end_client(b);
			if (up_done && client_done)
				bridge_set_state(b, BRIDGE_DONE);
			break;
		}
		case BRIDGE_DONE:
			break;
		}
	} while (b->state != before);
	return moved;
}

bool proxy_bridge_wants_builder(const struct proxy_bridge *b)
{
	return b->state >= BRIDGE_WAIT_BUILDER && b->state <= BRIDGE_UP_EXEC;
}

bool proxy_bridge_waits_for_budget(const struct proxy_bridge *b)
{
	return b->up_leftover && b->up.len == 0 && b->state == BRIDGE_RUNNING &&
	    proxy_pipebuf_budget_full(b->env.budget);
}

bool proxy_bridge_wants_upstream_read(const struct proxy_bridge *b)
{
	switch (b->state) {
	case BRIDGE_UP_OPEN:
	case BRIDGE_UP_ENV:
	case BRIDGE_UP_EXEC:
		return true;
	case BRIDGE_RUNNING:
		/* Window adjusts for our writes, output while there is room,
		 * and the close after EOF. */
		return b->up.len > 0 || b->builder.in >= BRIDGE_IN_EOF ||
		    b->down[0].len < BRIDGE_DOWN_CAP || b->down[1].len < BRIDGE_ERR_CAP;
	case BRIDGE_ENDING:
		return b->uch != NULL || b->open_claimed;
	default:
		return false;
	}
}

bool proxy_bridge_is_held(const struct proxy_bridge *b)
{
	return b->state == BRIDGE_HOLD;
}

const char *proxy_bridge_lost_reason(const struct proxy_bridge *b)
{
	return b->lost_reason;
}

bool proxy_bridge_is_done(const struct proxy_bridge *b)
{
	return b->state == BRIDGE_DONE;
}

bool proxy_bridge_ran(const struct proxy_bridge *b)
{
	return b->ran;
}

int proxy_bridge_exit_status(const struct proxy_bridge *b)
{
	return b->forwarded_status;
}

const char *proxy_bridge_command(const struct proxy_bridge *b)
{
	return b->command;
}
