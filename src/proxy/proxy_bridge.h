/* One client channel (libssh, server side) joined to one channel on the
 * builder connection (libssh2). The client's requests are answered at once
 * (env stored, exec checked against the command policy, shell / pty /
 * subsystem refused); the upstream channel is opened once the builder
 * connection is ready, the env requests and the exec replayed, and then bytes
 * are pumped both ways with flow control that follows the SSH windows: a side
 * is only read while the other side can take what is read, through bounded
 * buffers.
 *
 * OPEN -> WAIT_BUILDER -> UP_OPEN -> UP_ENV -> UP_EXEC -> RUNNING -> ENDING
 * -> DONE. Each side of the channel closes in halves (what it sent us: EOF,
 * CLOSE, or its connection lost; what we sent it: EOF, CLOSE), each half a
 * named state. The builder's exit status is relayed only after a clean end
 * of its channel (EOF, then CLOSE). A builder channel that ends any other way
 * goes to HOLD: the command's fate is unknown, so nothing is relayed until
 * the session says why (proxy_bridge_fail), from what Kubernetes reports or,
 * after a bounded wait, from what it knows.
 *
 * libssh callbacks only record what happened and wake the session; all the
 * work happens in proxy_bridge_run(), called from the session's run loop. */
#ifndef NRBC_PROXY_BRIDGE_H
#define NRBC_PROXY_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libssh/libssh.h>

struct metric;
struct proxy_pipebuf_budget;

struct proxy_bridge;
struct proxy_command_policy;
struct proxy_upstream;

struct proxy_bridge_env {
	const struct proxy_command_policy *policy;
	uint64_t session_id;
	unsigned channel_no;
	/* Something happened on the client channel: run again. */
	void (*wake)(void *data);
	void *data;
	/* Payload bytes client -> builder and builder -> client; may be NULL. */
	struct metric *bytes_up;
	struct metric *bytes_down;
	/* The same, added up for the session (its usage); may be NULL. */
	uint64_t *session_bytes_up;
	uint64_t *session_bytes_down;
	/* What every bridge's buffers hold together (may be NULL: no limit).
	 * While it is full a bridge takes no more from either side: client
	 * data stays in libssh, which then grows the client's window no
	 * further, and builder output stays in libssh2, whose window we do not
	 * grow without reading. */
	struct proxy_pipebuf_budget *budget;
	/* Data that came before an exec (the channel is closed for it). */
	struct metric *early_data;
};

/* Creates the client channel (to be returned from libssh's channel-open
 * callback) with its callbacks. NULL on failure. */
struct proxy_bridge *proxy_bridge_create(ssh_session ssh, const struct proxy_bridge_env *env);
ssh_channel proxy_bridge_channel(const struct proxy_bridge *b);
/* Frees the client channel and, if the bridge still holds one, the builder
 * channel (only while its connection is alive: see proxy_bridge_builder_lost).
 * Accepts NULL. */
void proxy_bridge_destroy(struct proxy_bridge *b);

/* Does all the work it can now; u may be NULL or not ready yet. Returns the
 * number of payload bytes moved (for idle accounting). */
size_t proxy_bridge_run(struct proxy_bridge *b, struct proxy_upstream *u);

/* An allowed exec waits for the builder connection. */
bool proxy_bridge_wants_builder(const struct proxy_bridge *b);
/* Client data waits in libssh because the shared budget was full: run the
 * bridge again once it has room (nothing else would wake it). */
bool proxy_bridge_waits_for_budget(const struct proxy_bridge *b);
/* Will something consume what arrives on the builder connection? */
bool proxy_bridge_wants_upstream_read(const struct proxy_bridge *b);
/* The builder's channel ended without a clean close: waiting to be told why
 * (proxy_bridge_fail). */
bool proxy_bridge_is_held(const struct proxy_bridge *b);
/* What the bridge itself saw go wrong on the builder's channel (held
 * bridges), NULL if nothing. */
const char *proxy_bridge_lost_reason(const struct proxy_bridge *b);
/* Both channels are closed; the session may destroy it. */
bool proxy_bridge_is_done(const struct proxy_bridge *b);
/* The command ran on the builder (exit status known once done). */
bool proxy_bridge_ran(const struct proxy_bridge *b);
/* Exit status forwarded to the client; -1 none (signal or not finished). */
int proxy_bridge_exit_status(const struct proxy_bridge *b);
const char *proxy_bridge_command(const struct proxy_bridge *b);

/* A line for the Nix user on the channel's stderr ("nrbc: " is prepended),
 * while it waits for its builder. */
void proxy_bridge_notify(struct proxy_bridge *b, const char *message);
/* Ends the channel for the user: message on stderr, exit status, close; the
 * upstream channel, if any, is closed. */
void proxy_bridge_fail(struct proxy_bridge *b, const char *message, int exit_status);
/* The builder connection is gone (or about to be destroyed): the bridge lets
 * go of its channel on it (libssh2_session_free takes it). A running command
 * is held (its fate unknown); one not started yet waits for a builder again. */
void proxy_bridge_builder_lost(struct proxy_bridge *b, const char *why);

#endif
