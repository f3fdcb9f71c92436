/* Authentication of Nix clients (public keys from the proxy's keys, the one
 * user name clients log in as, --max-auth-tries over every method), and the
 * requests refused without a word to the client, each logged once a session. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "dns_label.h"
#include "key_identity.h"
#include "log.h"
#include "metrics.h"
#include "proxy_keys.h"
#include "proxy_session_internal.h"
#include "proxy_siblings.h"

_Static_assert(PROXY_SESSION_IDENTITY_LEN == KEY_IDENTITY_LEN, "one identity");

static int session_identity_of(ssh_key pubkey, char out[PROXY_SESSION_IDENTITY_LEN + 1])
{
	return key_identity_of(pubkey, out);
}

/* Every authentication attempt, of every method, goes through here: counted
 * (toward --max-auth-tries and in nrbc_proxy_auth_attempts_total) and logged
 * with the method, the user name (escaped) and, for keys, the fingerprint. */
static void session_auth_count(struct proxy_session *s, const char *method, const char *result)
{
	char labels[96];

	if (!s->env->metrics)
		return;
	snprintf(labels, sizeof(labels), "method=\"%s\",result=\"%s\"", method, result);
	metric_add(metrics_counter(s->env->metrics, "nrbc_proxy_auth_attempts_total",
	    "Client authentication attempts, by method and result.", labels), 1);
}

static void session_auth_failed(struct proxy_session *s, const char *method, const char *user,
    const char *fingerprint, const char *why)
{
	char u[LOG_ESCAPE_MAX];

	s->auth_failures++;
	metric_add(s->env->auth_failures, 1);
	session_auth_count(s, method, "failure");
	log_info("session=%llu from %s: %s authentication refused for user \"%s\"%s%s: %s "
	    "(%d/%d)", (unsigned long long)s->id, s->peer, method,
	    log_escape(u, 64, user, (size_t)-1), fingerprint ? " key " : "",
	    fingerprint ? fingerprint : "", why, s->auth_failures, s->env->max_auth_tries);
	s->again = true;
}

static bool session_user_ok(const struct proxy_session *s, const char *user)
{
	return !s->env->client_user || !*s->env->client_user ||
	    strcmp(user, s->env->client_user) == 0 || dns_label_valid(user, strlen(user));
}

/* The builder class the user name names: "" for the default. */
static const char *session_class_of(const struct proxy_session *s, const char *user)
{
	if (!s->env->client_user || !*s->env->client_user ||
	    strcmp(user, s->env->client_user) == 0)
		return "";
	return user;
}

/* The key may not use the class it asked for: every command it runs is
 * told so. Heap string or NULL. */
static char *session_class_refusal(const struct proxy_session *s, int key_index,
    const char *user)
{
	if (proxy_keys_client_may_use(s->env->keys, key_index, user))
		return NULL;
	return str_printf("this key may not use builder class \"%s\" (ssh-ng://%s@...); it may "
	    "use: %s", user, user, proxy_keys_client_classes(s->env->keys, key_index));
}

/* "SHA256:..." (heap, free with ssh_string_free_char) or NULL. */
static char *session_key_fingerprint(ssh_key key)
{
	unsigned char *hash = NULL;
	size_t hlen = 0;
	char *fp;

	if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) < 0)
		return NULL;
	fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
	ssh_clean_pubkey_hash(&hash);
	return fp;
}

/* "type base64" of a public key, or NULL. Heap. */
static char *session_key_line(ssh_key key)
{
	char *b64 = NULL, *line;

	if (ssh_pki_export_pubkey_base64(key, &b64) != SSH_OK)
		return NULL;
	line = str_printf("%s %s", ssh_key_type_to_char(ssh_key_type(key)), b64);
	ssh_string_free_char(b64);
	return line;
}

/* A builder logging in with its own host key to reach a sibling of its
 * identity (proxy_siblings.h); not a client key, so it counts in no key's
 * limits, only among all sessions. */
static int session_auth_sibling(struct proxy_session *s, const char *user, ssh_key pubkey,
    char signature_state, const char *fp)
{
	char *line = session_key_line(pubkey), *refusal = NULL;
	struct proxy_sibling sib;
	const char *why = "cannot read the key";
	int rc = line ? proxy_builder_sibling(s->env->builder, line, &sib, &why) : -1;

	free(line);
	if (rc < 0) {
		session_auth_failed(s, "publickey", user, fp, why);
		return SSH_AUTH_DENIED;
	}
	if (signature_state == SSH_PUBLICKEY_STATE_NONE) {
		proxy_sibling_finish(&sib);
		return SSH_AUTH_SUCCESS;
	}
	if (s->env->on_authenticated &&
	    s->env->on_authenticated(s->env->data, s->id, -1, &refusal) < 0)
		s->limit_refusal = refusal ? refusal : strdup("the proxy is at a session limit");
	session_auth_count(s, "publickey", s->limit_refusal ? "limited" : "sibling");
	proxy_sibling_finish(&s->sibling);
	s->sibling = sib;
	s->is_sibling = true;
	snprintf(s->identity, sizeof(s->identity), "%.*s", PROXY_SESSION_IDENTITY_LEN, sib.identity);
	s->authenticated = true;
	s->user = strdup(user);
	s->builder_class = strdup("");
	s->key_comment = strdup("");
	log_info("session=%llu from %s: builder %s logged in with its host key %s; bridged to "
	    "its sibling %s", (unsigned long long)s->id, s->peer, sib.source, fp ? fp : "?",
	    sib.name);
	s->again = true;
	return SSH_AUTH_SUCCESS;
}

int proxy_session_auth_pubkey(ssh_session ssh, const char *user, struct ssh_key_struct *pubkey,
    char signature_state, void *userdata)
{
	struct proxy_session *s = userdata;
	const char *comment = NULL;
	int idx = proxy_keys_find_client(s->env->keys, pubkey, &comment);
	char *fp, *refusal = NULL;
	char u[LOG_ESCAPE_MAX], c[LOG_ESCAPE_MAX];

	if (s->authenticated || s->auth_failures >= s->env->max_auth_tries)
		return SSH_AUTH_DENIED;
	fp = session_key_fingerprint(pubkey);
	if (strcmp(user, PROXY_SIBLING_USER) == 0 && (signature_state == SSH_PUBLICKEY_STATE_NONE ||
	    signature_state == SSH_PUBLICKEY_STATE_VALID)) {
		int rc = session_auth_sibling(s, user, pubkey, signature_state, fp);

		ssh_string_free_char(fp);
		return rc;
	}
	if (!session_user_ok(s, user)) {
		char why[160];
		snprintf(why, sizeof(why), "neither the user name clients log in as (\"%.64s\") "
		    "nor a builder class name", s->env->client_user);
		session_auth_failed(s, "publickey", user, fp, why);
		goto denied;
	}
	if (idx < 0 || (signature_state != SSH_PUBLICKEY_STATE_NONE &&
	    signature_state != SSH_PUBLICKEY_STATE_VALID)) {
		session_auth_failed(s, "publickey", user, fp,
		    idx >= 0 ? "bad signature" : "key not in the authorized keys");
		goto denied;
	}
	if (signature_state == SSH_PUBLICKEY_STATE_NONE) {
		ssh_string_free_char(fp);
		return SSH_AUTH_SUCCESS; /* "would this key do?": yes */
	}
	if (session_identity_of(pubkey, s->identity) < 0) {
		log_error("session=%llu cannot hash the client key", (unsigned long long)s->id);
		goto denied;
	}
	if (s->env->on_authenticated &&
	    s->env->on_authenticated(s->env->data, s->id, idx, &refusal) < 0) {
		/* Authenticated, but it may not have a builder: every command it
		 * runs gets the reason (stderr, exit 1). */
		s->limit_refusal = refusal ? refusal : strdup("the proxy is at a session limit");
		session_auth_count(s, "publickey", "limited");
	} else {
		session_auth_count(s, "publickey", "success");
	}
	if (!s->limit_refusal)
		s->limit_refusal = session_class_refusal(s, idx, user);
	s->authenticated = true;
	s->max_builders = proxy_keys_client_max_builders(s->env->keys, idx);
	s->user = strdup(user);
	s->builder_class = strdup(session_class_of(s, user));
	s->key_comment = strdup(comment ? comment : "");
	log_info("session=%llu from %s: authenticated user \"%s\" with key %s \"%s\"%s%s",
	    (unsigned long long)s->id, s->peer, log_escape(u, 64, user, (size_t)-1),
	    fp ? fp : "?", log_escape(c, 100, comment ? comment : "", (size_t)-1),
	    s->limit_refusal ? "; refused: " : "", s->limit_refusal ? s->limit_refusal : "");
	ssh_string_free_char(fp);
	s->again = true;
	return SSH_AUTH_SUCCESS;
denied:
	ssh_string_free_char(fp);
	return SSH_AUTH_DENIED;
}

int proxy_session_auth_password(ssh_session ssh, const char *user, const char *password,
    void *userdata)
{
	struct proxy_session *s = userdata;

	if (!s->authenticated && s->auth_failures < s->env->max_auth_tries)
		session_auth_failed(s, "password", user, NULL, "only keys are accepted");
	return SSH_AUTH_DENIED;
}

int proxy_session_auth_none(ssh_session ssh, const char *user, void *userdata)
{
	struct proxy_session *s = userdata;
	char u[LOG_ESCAPE_MAX];

	if (s->authenticated || s->auth_failures >= s->env->max_auth_tries)
		return SSH_AUTH_DENIED;
	/* Clients start with "none" to learn the methods: the first is free. */
	if (s->auth_nones++ == 0) {
		session_auth_count(s, "none", "failure");
		log_debug("session=%llu none authentication for user \"%s\": denied",
		    (unsigned long long)s->id, log_escape(u, 64, user, (size_t)-1));
		return SSH_AUTH_DENIED;
	}
	session_auth_failed(s, "none", user, NULL, "only keys are accepted");
	return SSH_AUTH_DENIED;
}

static void session_log_refused_once(struct proxy_session *s, unsigned bit, const char *what)
{
	if (s->refused_logged & bit)
		return;
	s->refused_logged |= bit;
	log_info("session=%llu refused %s (logged once a session)", (unsigned long long)s->id,
	    what);
}

/* Whatever no other callback took: other authentication methods (counted
 * like the rest), forwarding, X11, agent, global requests. 1: libssh sends
 * the default refusal. */
int proxy_session_auth_message(ssh_session ssh, ssh_message msg, void *userdata)
{
	struct proxy_session *s = userdata;
	char what[LOG_ESCAPE_MAX + 64], d[LOG_ESCAPE_MAX];
	const char *method;

	switch (ssh_message_type(msg)) {
	case SSH_REQUEST_AUTH:
		if (s->authenticated || s->auth_failures >= s->env->max_auth_tries)
			return 1;
		switch (ssh_message_subtype(msg)) {
		case SSH_AUTH_METHOD_INTERACTIVE: method = "keyboard-interactive"; break;
		case SSH_AUTH_METHOD_PASSWORD: method = "password"; break;
		case SSH_AUTH_METHOD_HOSTBASED: method = "hostbased"; break;
		case SSH_AUTH_METHOD_GSSAPI_MIC: method = "gssapi-with-mic"; break;
		default: method = "unknown"; break;
		}
		session_auth_failed(s, method, ssh_message_auth_user(msg), NULL,
		    "only keys are accepted");
		return 1;
	case SSH_REQUEST_CHANNEL_OPEN:
		switch (ssh_message_subtype(msg)) {
		case SSH_CHANNEL_DIRECT_TCPIP:
			snprintf(what, sizeof(what), "port forwarding (to \"%s\" port %d)",
			    log_escape(d, 100, ssh_message_channel_request_open_destination(msg),
			    (size_t)-1), ssh_message_channel_request_open_destination_port(msg));
			session_log_refused_once(s, SESSION_REFUSED_FORWARD, what);
			break;
		case SSH_CHANNEL_X11:
			session_log_refused_once(s, SESSION_REFUSED_X11, "an X11 channel");
			break;
		case SSH_CHANNEL_AUTH_AGENT:
			session_log_refused_once(s, SESSION_REFUSED_AGENT, "an agent channel");
			break;
		default:
			session_log_refused_once(s, SESSION_REFUSED_FORWARD, "a forwarding channel");
			break;
		}
		return 1;
	case SSH_REQUEST_CHANNEL:
		if (ssh_message_subtype(msg) == SSH_CHANNEL_REQUEST_X11)
			session_log_refused_once(s, SESSION_REFUSED_X11, "X11 forwarding");
		else if (ssh_message_subtype(msg) != SSH_CHANNEL_REQUEST_WINDOW_CHANGE)
			session_log_refused_once(s, SESSION_REFUSED_OTHER, "a channel request");
		return 1;
	case SSH_REQUEST_GLOBAL:
		if (ssh_message_subtype(msg) == SSH_GLOBAL_REQUEST_TCPIP_FORWARD)
			session_log_refused_once(s, SESSION_REFUSED_GLOBAL,
			    "remote port forwarding (tcpip-forward)");
		return 1;
	default:
		return 1;
	}
}

/* Before the bridge's callbacks on every channel: env is refused (the
 * builder gets a fixed environment), subsystems are refused here with the
 * name escaped. */
int proxy_session_auth_env(ssh_session ssh, ssh_channel channel, const char *name,
    const char *value, void *userdata)
{
	struct proxy_session *s = userdata;
	char n[LOG_ESCAPE_MAX], what[LOG_ESCAPE_MAX + 64];

	snprintf(what, sizeof(what), "env request(s) (first: \"%s\"); env is not passed on",
	    log_escape(n, 100, name, (size_t)-1));
	session_log_refused_once(s, SESSION_REFUSED_ENV, what);
	return 1;
}

/* libssh swallows agent requests (no reply is wanted); this only logs. */
void proxy_session_auth_agent_req(ssh_session ssh, ssh_channel channel, void *userdata)
{
	session_log_refused_once(userdata, SESSION_REFUSED_AGENT, "agent forwarding");
}

int proxy_session_auth_service_request(ssh_session ssh, const char *service, void *userdata)
{
	return strcmp(service, "ssh-userauth") == 0 ? 0 : -1;
}
