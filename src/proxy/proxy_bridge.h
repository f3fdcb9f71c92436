/* One client channel (libssh, server side) joined to one channel on the
 * builder connection (libssh2). The client's requests are answered at once
 * (env stored, exec checked against the command policy, shell / pty /
 * subsystem refused); the upstream channel is opened once the builder
 * connection is ready, the env requests and the exec replayed, and then bytes
 * are pumped both ways with flow control that follows the SSH windows: a side
 * is only read while the other side can take what is read, through bounded
 * buffers. EOF, close and exit-status / exit-signal travel back to the client.
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
};

/* Creates the client channel (to be returned from libssh's channel-open
 * callback) with its callbacks. NULL on failure. */
struct proxy_bridge *proxy_bridge_create(ssh_session ssh, const struct proxy_bridge_env *env);
ssh_channel proxy_bridge_channel(const struct proxy_bridge *b);
/* upstream_alive false: the builder connection is gone or going, leave its
 * channel to libssh2_session_free. Accepts NULL. */
void proxy_bridge_destroy(struct proxy_bridge *b, bool upstream_alive);

/* Does all the work it can now; u may be NULL or not ready yet. Returns the
 * number of payload bytes moved (for idle accounting). */
size_t proxy_bridge_run(struct proxy_bridge *b, struct proxy_upstream *u);

/* An allowed exec waits for the builder connection. */
bool proxy_bridge_wants_builder(const struct proxy_bridge *b);
/* Will something consume what arrives on the builder connection? */
bool proxy_bridge_wants_upstream_read(const struct proxy_bridge *b);
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

#endif
