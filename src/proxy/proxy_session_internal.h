/* The session's state, shared by the two files of the module:
 * proxy_session.c (life, builder, channels, run loop) and
 * proxy_session_auth.c (authentication and the requests refused without a
 * word). Nothing outside the module includes this. */
#ifndef NRBC_PROXY_SESSION_INTERNAL_H
#define NRBC_PROXY_SESSION_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/server.h>
#include <uv.h>

#include "proxy_session.h"
#include "proxy_builder.h"

/* Nix opens one session channel per SSH connection (it runs one command
 * per connection: nix-store --serve or nix-daemon --stdio). One spare, for
 * a client that opens its next channel before the close of the last one
 * has crossed; every channel more was only ever an attacker's, each able to
 * make libssh hold a window (1.28 MB) of data. */
#define SESSION_MAX_CHANNELS 2
/* Hex digits of the client identity (128 bits of the key's SHA-256). */
#define PROXY_SESSION_IDENTITY_LEN 32

/* Requests refused without a word to the client are logged once a session. */
#define SESSION_REFUSED_ENV 1u
#define SESSION_REFUSED_FORWARD 2u
#define SESSION_REFUSED_X11 4u
#define SESSION_REFUSED_AGENT 8u
#define SESSION_REFUSED_GLOBAL 16u
#define SESSION_REFUSED_OTHER 32u

enum session_state {
	SESSION_KEX,
	SESSION_AUTH,
	SESSION_READY,
	SESSION_WAIT_BUILDER,
	SESSION_CONNECTING,
	SESSION_BRIDGING,
	SESSION_BUILDER_LOST, /* the builder connection broke: finding out why */
	SESSION_FAILED,
	SESSION_CLOSING,
};

/* The session's claim on a builder from proxy_builder. */
enum session_hold {
	SESSION_HOLD_NONE,     /* never asked */
	SESSION_HOLD_ASKED,    /* acquired: events for this session may come */
	SESSION_HOLD_RELEASED, /* released: no event follows */
};

struct proxy_bridge;
struct proxy_upstream;

struct proxy_session {
	const struct proxy_session_env *env;
	uint64_t id;
	char peer[64];
	enum session_state state;
	ssh_session ssh;
	ssh_event event;
	struct ssh_server_callbacks_struct server_cb;
	/* The client socket as the uv_poll sees it: a duplicate of libssh's
	 * descriptor, owned by the session and closed only after the poll
	 * handle is closed. libssh closes its own descriptor by itself when a
	 * write fails (ssh_socket_nonblocking_flush); the poll must never be
	 * left on, or restarted on, a closed descriptor (epoll_ctl EBADF is an
	 * abort() in libuv, and a reused number would be someone else's). */
	int poll_fd;
	uv_poll_t poll;
	uv_timer_t timer;
	uv_idle_t kick;
	int pending_closes;
	int poll_events;
	bool running, again;
	bool created; /* handed out by proxy_session_create */
	/* authentication (proxy_session_auth.c) */
	bool authenticated;
	int auth_failures;
	int auth_nones;       /* "none" attempts: the first is free */
	char *limit_refusal;  /* admitted by the key but over a session limit */
	bool channels_told;   /* closing: the channels in use were told why */
	bool limit_told;      /* the refusal went to the client's channels: close */
	struct ssh_channel_callbacks_struct guard_cb; /* env/subsystem, before the bridge's */
	unsigned refused_logged; /* SESSION_REFUSED_* bits: one log line each */
	char *user;
	char *builder_class;  /* "" for the default class; NULL until authenticated */
	/* A builder logged in with its host key (proxy_siblings.h): the sibling
	 * it is bridged to, instead of a builder asked for. */
	bool is_sibling;
	struct proxy_sibling sibling;
	char *key_comment;
	/* Hex SHA-256 prefix of the client's public key: which builders this
	 * session may be served by (never the key itself). */
	char identity[PROXY_SESSION_IDENTITY_LEN + 1];
	long max_builders;     /* the key's nrbc-max-builders=; 0: none */
	/* Payload its channels moved (client -> builder, builder -> client):
	 * recorded with its end for the identity's usage. */
	uint64_t bytes_up;
	uint64_t bytes_down;
	/* channels */
	struct proxy_bridge *bridges[SESSION_MAX_CHANNELS];
	int n_bridges;
	unsigned channel_seq;
	/* builder */
	enum session_hold hold;
	int reacquires;         /* builders asked for again (one took no connection) */
	uint64_t wait_started;  /* loop time the builder was asked for */
	char *builder_status;   /* the wait's last progress text */
	bool status_withheld;   /* builder_status not shown to the client yet */
	char *builder_name;     /* the pod (or address) it was bound to */
	/* Where that builder is and the host key it must show (NULL: the
	 * shared one), for a connection made ahead to it. */
	char *builder_host, *builder_host_key;
	int builder_port;
	struct proxy_upstream *upstream;
	char *upstream_failure; /* reported by the upstream, handled by the run loop */
	char *lost_reason;      /* why the builder connection broke (BUILDER_LOST) */
	char *failure;
	bool bridged;           /* a command ran on a builder */
	/* keepalive: the client's last sign of life, and our last probe */
	uint64_t client_heard, keepalive_sent;
	/* time */
	uint64_t created_at, state_since, last_activity;
};

/* proxy_session_auth.c: libssh server and channel callbacks (userdata: the
 * session). They only record what happened and set s->again. */
int proxy_session_auth_pubkey(ssh_session ssh, const char *user, struct ssh_key_struct *pubkey,
    char signature_state, void *userdata);
int proxy_session_auth_password(ssh_session ssh, const char *user, const char *password,
    void *userdata);
int proxy_session_auth_none(ssh_session ssh, const char *user, void *userdata);
int proxy_session_auth_service_request(ssh_session ssh, const char *service, void *userdata);
/* Whatever no other callback took; 1: libssh sends the default refusal. */
int proxy_session_auth_message(ssh_session ssh, ssh_message msg, void *userdata);
int proxy_session_auth_env(ssh_session ssh, ssh_channel channel, const char *name,
    const char *value, void *userdata);
void proxy_session_auth_agent_req(ssh_session ssh, ssh_channel channel, void *userdata);

#endif
