/* nrbc proxy: flags, key material, the health server, the builder backend
 * and the SSH server on one libuv loop; SIGTERM drains: sessions get
 * --shutdown-timeout to end, then the ends of their requests (status,
 * delete) get what is left of it to land, so a restart leaves no request
 * Running behind it. */
#include <libssh/libssh.h>
#include <libssh2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "buf.h"
#include "flags.h"
#include "health.h"
#include "kube/kube_client.h"
#include "kube/kube_config.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "proxy_builder.h"
#include "proxy_command.h"
#include "proxy_keys.h"
#include "proxy_secret.h"
#include "proxy_server.h"
#include "proxy_session.h"
#include "signals.h"

struct proxy_flags {
	long port;
	char *listen_address;
	long health_port;
	char *namespace;
	char *remote_user;
	long remote_port;
	char *ssh_key_secret;
	char *host_key;
	char *authorized_keys;
	char *private_key;
	char *builder_host_key;
	char *builder_address;
	char *builder_image;
	char *kubeconfig;
	long max_sessions;
	char *max_startups;
	long max_startups_per_source;
	long max_sessions_per_key;
	long buffer_budget_mib;
	char *client_user;
	char *health_address;
	uint64_t builder_timeout_ms;
	uint64_t idle_timeout_ms;
	uint64_t builder_lost_wait_ms;
	uint64_t keepalive_interval_ms;
	long keepalive_count;
	uint64_t login_grace_ms;
	uint64_t shutdown_timeout_ms;
	uint64_t sweep_interval_ms;
	long max_auth_tries;
	long builder_spares;
	char *allow_command;
	bool allow_any_command;
	char *log_format;
	char *log_level;
};

/* The way down after SIGTERM. */
enum proxy_phase {
	PROXY_RUNNING,
	PROXY_DRAINING,  /* no new connections; live sessions finish until the deadline */
	PROXY_CUTTING,   /* deadline passed: sessions closed; their ends get the write grace */
	PROXY_FLUSHING,  /* no session left; the API writes of their ends land */
	PROXY_STOPPING,  /* everything goes */
};

static const char *const proxy_phase_names[] = {
	[PROXY_RUNNING] = "running",
	[PROXY_DRAINING] = "draining",
	[PROXY_CUTTING] = "cutting",
	[PROXY_FLUSHING] = "flushing",
	[PROXY_STOPPING] = "stopping",
};

/* Sessions cut at the shutdown deadline (or ending just before it) still
 * have their requests' ends to write: they get at least this long (the
 * manifests' grace period covers it). */
#define PROXY_WRITE_GRACE_MS 5000

struct proxy_app {
	uv_loop_t loop;
	struct proxy_flags f;
	struct kube_config *kube_cfg;
	struct kube_client *kube;
	struct proxy_keys *keys;
	struct proxy_command_policy *policy;
	struct metrics *metrics;
	struct health_server *health;
	struct proxy_server *server;
	struct proxy_builder *builder;
	struct signals *signals;
	uv_timer_t shutdown_timer;
	bool shutdown_timer_init;
	enum proxy_phase phase;
	bool stopping;
	int exit_code;
};

static const char proxy_summary[] =
    "The SSH front door for Nix clients: each connection gets its own builder.\n"
    "Clients authenticate with a key from the authorized keys; only the commands\n"
    "Nix uses run (nix-store --serve [--write], nix-daemon --stdio).";

static bool proxy_ready(void *data, const char **why)
{
	struct proxy_app *a = data;

	if (a->phase != PROXY_RUNNING || a->stopping ||
	    (a->server && proxy_server_is_draining(a->server))) {
		*why = "shutting down";
		return false;
	}
	if (a->builder && !proxy_builder_is_ready(a->builder)) {
		*why = "builder backend not ready (informer not synced)";
		return false;
	}
	return true;
}

static void proxy_on_handle_closed(uv_handle_t *h)
{
}

static void proxy_set_phase(struct proxy_app *a, enum proxy_phase phase)
{
	log_debug("proxy %s => %s", proxy_phase_names[a->phase], proxy_phase_names[phase]);
	a->phase = phase;
}

/* Everything goes; the loop ends once the close callbacks have run. */
static void proxy_stop(struct proxy_app *a)
{
	if (a->stopping)
		return;
	a->stopping = true;
	proxy_set_phase(a, PROXY_STOPPING);
	if (a->shutdown_timer_init)
		uv_close((uv_handle_t *)&a->shutdown_timer, proxy_on_handle_closed);
	proxy_server_destroy(a->server);
	a->server = NULL;
	proxy_builder_destroy(a->builder);
	a->builder = NULL;
	health_server_destroy(a->health);
	a->health = NULL;
	signals_destroy(a->signals);
	a->signals = NULL;
	kube_client_destroy(a->kube);
	a->kube = NULL;
}

static void proxy_on_flushed(void *data)
{
	struct proxy_app *a = data;

	log_info("every request's end has landed");
	proxy_stop(a);
}

static void proxy_on_shutdown_timeout(uv_timer_t *t);

static void proxy_on_drained(void *data)
{
	struct proxy_app *a = data;
	bool cut = a->phase == PROXY_CUTTING;   /* the timer runs the grace already */

	log_info("all sessions ended");
	proxy_set_phase(a, PROXY_FLUSHING);
	if (proxy_builder_flush(a->builder, proxy_on_flushed, a)) {
		proxy_stop(a);
		return;
	}
	/* The shutdown timer goes on and bounds the wait for the writes too,
	 * but a session that ended just before the deadline still leaves its
	 * end the write grace (the grace period of the Pod covers both). */
	if (!cut && a->shutdown_timer_init &&
	    uv_timer_get_due_in(&a->shutdown_timer) < PROXY_WRITE_GRACE_MS)
		uv_timer_start(&a->shutdown_timer, proxy_on_shutdown_timeout, PROXY_WRITE_GRACE_MS, 0);
}

static void proxy_on_shutdown_timeout(uv_timer_t *t)
{
	struct proxy_app *a = t->data;

	switch (a->phase) {
	case PROXY_DRAINING:
		log_warnx("shutdown timeout: closing %zu remaining session(s); their requests' "
		    "ends get %d ms more", proxy_server_session_count(a->server),
		    PROXY_WRITE_GRACE_MS);
		proxy_set_phase(a, PROXY_CUTTING);
		uv_timer_start(&a->shutdown_timer, proxy_on_shutdown_timeout, PROXY_WRITE_GRACE_MS, 0);
		/* The drained callback follows once their close callbacks ran. */
		proxy_server_close_all(a->server, "proxy shutdown timeout");
		break;
	case PROXY_CUTTING:
	case PROXY_FLUSHING:
		/* proxy_builder_destroy logs each end given up. */
		log_warnx("shutdown deadline: stopping with request ends still unwritten");
		proxy_stop(a);
		break;
	case PROXY_RUNNING:
	case PROXY_STOPPING:
		break;
	}
}

static void proxy_on_signal(void *data, int signum)
{
	struct proxy_app *a = data;

	if (!a->server) {
		proxy_stop(a);
		return;
	}
	proxy_set_phase(a, PROXY_DRAINING);
	uv_timer_init(&a->loop, &a->shutdown_timer);
	a->shutdown_timer.data = a;
	a->shutdown_timer_init = true;
	uv_timer_start(&a->shutdown_timer, proxy_on_shutdown_timeout, a->f.shutdown_timeout_ms, 0);
	proxy_server_on_drained(a->server, proxy_on_drained, a);
	/* Sessions not running a command (e.g. an idle ControlMaster) end now;
	 * the others get --shutdown-timeout. */
	proxy_server_drain(a->server, true);
}

static int proxy_load_key_texts(struct proxy_app *a, struct proxy_key_texts *t, char **err)
{
	struct proxy_key_texts files;

	memset(t, 0, sizeof(*t));
	if (a->f.ssh_key_secret) {
		if (proxy_secret_load(&a->loop, a->kube, a->f.namespace, a->f.ssh_key_secret, t,
		    err) < 0)
			return -1;
	}
	/* Files override single entries of the Secret. */
	if (proxy_keys_load_files(a->f.host_key, a->f.authorized_keys, a->f.private_key, &files,
	    err) < 0) {
		proxy_key_texts_finish(t);
		return -1;
	}
#define TAKE(field) \
	do { \
		if (files.field) { \
			free(t->field); \
			t->field = files.field; \
			files.field = NULL; \
		} \
	} while (0)
	TAKE(host_key);
	TAKE(authorized_keys);
	TAKE(private_key);
	TAKE(public_key);
#undef TAKE
	proxy_key_texts_finish(&files);
	/* As in the original project's quick start: without a list of client
	 * keys, the shared key pair's public half is the one key allowed in. */
	if (!t->authorized_keys && t->public_key) {
		t->authorized_keys = strdup(t->public_key);
		if (!t->authorized_keys) {
			*err = str_printf("out of memory");
			proxy_key_texts_finish(t);
			return -1;
		}
		log_info("no authorized keys given: the \"public\" key is the one client key "
		    "allowed in");
	}
	return 0;
}

static int proxy_parse_address(const char *s, char **host, int *port)
{
	const char *colon = strrchr(s, ':');
	long p;

	if (!colon || colon == s || flags_parse_long(colon + 1, &p) < 0 || p < 1 || p > 65535)
		return -1;
	if (s[0] == '[' && colon[-1] == ']')
		*host = strndup(s + 1, (size_t)(colon - s - 2));
	else
		*host = strndup(s, (size_t)(colon - s));
	*port = (int)p;
	return *host ? 0 : -1;
}

/* want: the descriptors the session budgets need (PROXY_SESSION_FDS_*);
 * the soft limit goes up to that and some for the rest of the process,
 * within the hard limit. */
static void proxy_raise_nofile(long want)
{
	struct rlimit rl;

	want += 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    (long)rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || (long)rl.rlim_max >= want ?
	    (rlim_t)want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_warn("setrlimit(RLIMIT_NOFILE, %ld)", (long)rl.rlim_cur);
	if ((long)rl.rlim_cur < want)
		log_warnx("open files limit %ld is below the %ld the session budgets need",
		    (long)rl.rlim_cur, want);
}

static int proxy_setup(struct proxy_app *a)
{
	struct proxy_server_options so;
	struct proxy_key_texts texts;
	char *err = NULL;
	bool need_kube = a->f.ssh_key_secret || !a->f.builder_address;

	if (a->f.port < 0 || a->f.port > 65535 || a->f.remote_port < 1 ||
	    a->f.remote_port > 65535 || a->f.max_sessions < 1 || a->f.health_port > 65535 ||
	    a->f.max_startups_per_source < 1 || a->f.max_sessions_per_key < 0 ||
	    a->f.buffer_budget_mib < 0) {
		log_error("a port, --max-sessions, --max-startups-per-source, "
		    "--max-sessions-per-key or --buffer-budget-mib is out of range");
		return -1;
	}
	if (a->f.keepalive_count < 1 || a->f.keepalive_count > 1000) {
		log_error("--keepalive-count must be 1 to 1000");
		return -1;
	}
	memset(&so, 0, sizeof(so));
	if (proxy_server_parse_startups(a->f.max_startups, &so) < 0) {
		log_error("--max-startups \"%s\": want START:RATE:FULL (e.g. 64:30:256) or FULL",
		    a->f.max_startups);
		return -1;
	}
	/* Limited sessions count among the startups (proxy_server.c); 256 for
	 * health-port and Kubernetes connections. */
	proxy_raise_nofile(a->f.max_sessions * PROXY_SESSION_FDS_BRIDGED +
	    so.startups_full * PROXY_SESSION_FDS_CLIENT + 256);
	if (need_kube) {
		a->kube_cfg = kube_config_load(a->f.kubeconfig, NULL, &err);
		if (!a->kube_cfg)
			goto fail;
		a->kube = kube_client_create(&a->loop, a->kube_cfg);
		if (!a->kube) {
			err = str_printf("cannot create the Kubernetes client");
			goto fail;
		}
		if (!a->f.namespace) {
			const char *ns = getenv("POD_NAMESPACE");
			a->f.namespace = strdup(ns && *ns ? ns : kube_config_namespace(a->kube_cfg));
		}
	}
	if (proxy_load_key_texts(a, &texts, &err) < 0)
		goto fail;
	a->keys = proxy_keys_create(&texts, &err);
	proxy_key_texts_finish(&texts);
	if (!a->keys)
		goto fail;
	if (a->f.builder_host_key) {
		char *text = NULL;
		int rc = proxy_keys_read_file(a->f.builder_host_key, PROXY_KEYS_MAX_FILE, &text, &err);
		if (rc == 0)
			rc = proxy_keys_set_builder_host_key(a->keys, text, &err);
		free(text);
		if (rc < 0)
			goto fail;
	}
	a->policy = proxy_command_policy_create(a->f.allow_command, a->f.allow_any_command, &err);
	if (!a->policy)
		goto fail;
	if (a->f.allow_any_command)
		log_warnx("!!! --allow-any-command: clients may run ANY command on builders, "
		    "shells included. For tests and benchmarks only. !!!");
	a->metrics = metrics_create();
	if (a->f.health_port >= 0) {
		a->health = health_server_create(&a->loop,
		    a->f.health_address ? a->f.health_address : a->f.listen_address,
		    (int)a->f.health_port,
		    a->metrics, &err);
		if (!a->health)
			goto fail;
		health_server_set_ready(a->health, proxy_ready, a);
	}
	so.listen_address = a->f.listen_address;
	so.startups_per_source = a->f.max_startups_per_source;
	so.max_sessions_per_key = a->f.max_sessions_per_key;
	so.buffer_budget = (size_t)a->f.buffer_budget_mib * 1024 * 1024;
	so.client_user = a->f.client_user;
	so.port = (int)a->f.port;
	so.max_sessions = a->f.max_sessions;
	so.login_grace_ms = a->f.login_grace_ms;
	so.builder_timeout_ms = a->f.builder_timeout_ms;
	so.idle_timeout_ms = a->f.idle_timeout_ms;
	so.builder_lost_wait_ms = a->f.builder_lost_wait_ms;
	so.keepalive_interval_ms = a->f.keepalive_interval_ms;
	so.keepalive_count = (int)a->f.keepalive_count;
	so.max_auth_tries = (int)a->f.max_auth_tries;
	so.builder_spares = a->f.builder_spares > 0 ? (size_t)a->f.builder_spares : 0;
	so.remote_user = a->f.remote_user;
	a->server = proxy_server_create(&a->loop, &so, a->keys, a->policy, a->metrics, &err);
	if (!a->server)
		goto fail;
	if (a->f.builder_address) {
		char *host = NULL;
		int port;

		if (proxy_parse_address(a->f.builder_address, &host, &port) < 0) {
			err = str_printf("--builder-address \"%s\" is not HOST:PORT",
			    a->f.builder_address);
			goto fail;
		}
		a->builder = proxy_builder_static_create(&a->loop, host, port,
		    proxy_server_builder_events(), a->server);
		free(host);
	} else {
		struct proxy_builder_kube_options ko;
		const char *pod = getenv("POD_NAME");
		char hostname[256] = "nrbc-proxy";

		gethostname(hostname, sizeof(hostname) - 1);
		memset(&ko, 0, sizeof(ko));
		ko.namespace = a->f.namespace;
		ko.proxy_id = pod && *pod ? pod : hostname;
		ko.owner_pod = pod && *pod ? pod : NULL;
		ko.owner_uid = getenv("POD_UID");
		ko.image = a->f.builder_image;
		ko.remote_port = (int)a->f.remote_port;
		ko.sweep_interval_ms = a->f.sweep_interval_ms;
		ko.metrics = a->metrics;
		a->builder = proxy_builder_kube_create(&a->loop, a->kube, &ko,
		    proxy_server_builder_events(), a->server);
	}
	if (!a->builder) {
		err = str_printf("cannot create the builder backend");
		goto fail;
	}
	proxy_server_set_builder(a->server, a->builder);
	a->signals = signals_create(&a->loop, proxy_on_signal, a);
	if (!a->signals) {
		err = str_printf("cannot install signal handlers");
		goto fail;
	}
	return 0;
fail:
	log_error("%s", err ? err : "start-up failed");
	free(err);
	return -1;
}

int proxy_main(int argc, char **argv)
{
	struct proxy_app *a = calloc(1, sizeof(*a));
	const struct flag flags[] = {
		{ "port", "NRBC_PROXY_PORT", FLAG_INT, &a->f.port, "2222",
		  "SSH listen port (0: any free port)", false },
		{ "listen-address", "NRBC_PROXY_LISTEN_ADDRESS", FLAG_STRING, &a->f.listen_address,
		  "0.0.0.0", "address for the SSH and health listeners", false },
		{ "health-port", "NRBC_PROXY_HEALTH_PORT", FLAG_INT, &a->f.health_port, "8080",
		  "health/metrics port (0: any free port, -1: off)", false },
		{ "health-address", "NRBC_PROXY_HEALTH_ADDRESS", FLAG_STRING, &a->f.health_address,
		  NULL, "address for the health listener (default: --listen-address)", false },
		{ "namespace", "NRBC_PROXY_NAMESPACE", FLAG_STRING, &a->f.namespace, NULL,
		  "namespace for NixBuildRequests (default: $POD_NAMESPACE, the kubeconfig's)", false },
		{ "remote-user", "NRBC_PROXY_REMOTE_USER", FLAG_STRING, &a->f.remote_user, "nixbld",
		  "SSH user on builders", false },
		{ "remote-port", "NRBC_PROXY_REMOTE_PORT", FLAG_INT, &a->f.remote_port, "22",
		  "SSH port on builder pods", false },
		{ "ssh-key-secret", "NRBC_PROXY_SSH_KEY_SECRET", FLAG_STRING, &a->f.ssh_key_secret,
		  NULL, "Secret with host-key, authorized-keys, private, public", false },
		{ "host-key", "NRBC_PROXY_HOST_KEY", FLAG_STRING, &a->f.host_key, NULL,
		  "host key file (overrides the Secret's host-key)", false },
		{ "authorized-keys", "NRBC_PROXY_AUTHORIZED_KEYS", FLAG_STRING,
		  &a->f.authorized_keys, NULL, "client public keys allowed in (authorized_keys file)", false },
		{ "private-key", "NRBC_PROXY_PRIVATE_KEY", FLAG_STRING, &a->f.private_key, NULL,
		  "private key for builders (FILE.pub is checked against it if present)", false },
		{ "builder-host-key", "NRBC_PROXY_BUILDER_HOST_KEY", FLAG_STRING,
		  &a->f.builder_host_key, NULL,
		  "public host key of builders without one of their own (default: the host key's "
		  "public half)", false },
		{ "builder-address", "NRBC_PROXY_BUILDER_ADDRESS", FLAG_STRING,
		  &a->f.builder_address, NULL,
		  "connect every session to this HOST:PORT instead of creating builder pods "
		  "(tests, one static builder)", false },
		{ "builder-image", "NRBC_PROXY_BUILDER_IMAGE", FLAG_STRING, &a->f.builder_image, NULL,
		  "spec.image of NixBuildRequests (default: the controller's)", false },
		{ "kubeconfig", "KUBECONFIG", FLAG_STRING, &a->f.kubeconfig, NULL,
		  "kubeconfig file (default: in-cluster)", false },
		{ "max-sessions", "NRBC_PROXY_MAX_SESSIONS", FLAG_INT, &a->f.max_sessions, "1000",
		  "authenticated client sessions at once; more are refused", false },
		{ "max-startups", "NRBC_PROXY_MAX_STARTUPS", FLAG_STRING, &a->f.max_startups,
		  "64:30:256", "unauthenticated connections START:RATE:FULL: from START, "
		  "RATE% chance (100% at FULL) that the oldest one is dropped for a newcomer", false },
		{ "max-startups-per-source", "NRBC_PROXY_MAX_STARTUPS_PER_SOURCE", FLAG_INT,
		  &a->f.max_startups_per_source, "32",
		  "unauthenticated connections from one address; more are refused", false },
		{ "max-sessions-per-key", "NRBC_PROXY_MAX_SESSIONS_PER_KEY", FLAG_INT,
		  &a->f.max_sessions_per_key, "16", "authenticated sessions of one client key at "
		  "once (0: no limit; authorized_keys option nrbc-max-sessions=N overrides)", false },
		{ "buffer-budget-mib", "NRBC_PROXY_BUFFER_BUDGET_MIB", FLAG_INT,
		  &a->f.buffer_budget_mib, "64", "MiB all bridged channels may buffer together; "
		  "over it the proxy stops reading from clients and builders (0: no limit)", false },
		{ "client-user", "NRBC_PROXY_CLIENT_USER", FLAG_STRING, &a->f.client_user, "nixbld",
		  "the user name of the default builder class (ssh-ng://nixbld@proxy); another DNS "
		  "label names a NixBuilderClass (ssh-ng://big@proxy); others are refused", false },
		{ "builder-timeout", "NRBC_PROXY_BUILDER_TIMEOUT", FLAG_DURATION,
		  &a->f.builder_timeout_ms, "5m", "give up waiting for a builder after this", false },
		{ "idle-timeout", "NRBC_PROXY_IDLE_TIMEOUT", FLAG_DURATION, &a->f.idle_timeout_ms,
		  "30m", "close a session with no data either way for this long (0: never)", false },
		{ "builder-lost-wait", "NRBC_PROXY_BUILDER_LOST_WAIT", FLAG_DURATION,
		  &a->f.builder_lost_wait_ms, "5s", "when the connection to a builder breaks under "
		  "a running command, how long to wait for the cluster to say why before the "
		  "session ends with what the proxy knows", false },
		{ "keepalive-interval", "NRBC_PROXY_KEEPALIVE_INTERVAL", FLAG_DURATION,
		  &a->f.keepalive_interval_ms, "30s", "probe a client or builder silent this long "
		  "(SSH and TCP keepalive; 0: never)", false },
		{ "keepalive-count", "NRBC_PROXY_KEEPALIVE_COUNT", FLAG_INT, &a->f.keepalive_count,
		  "3", "a peer silent for keepalive-interval x this is gone: its session ends and "
		  "the other side is told why", false },
		{ "login-grace-time", "NRBC_PROXY_LOGIN_GRACE_TIME", FLAG_DURATION,
		  &a->f.login_grace_ms, "20s", "time a client has to authenticate", false },
		{ "builder-spares", "NRBC_PROXY_BUILDER_SPARES", FLAG_INT, &a->f.builder_spares, "32",
		  "authenticated builder connections kept ready, at most one per builder that "
		  "sessions reach in a burst (two within 5 s), for the next session (0: none)",
		  false },
		{ "max-auth-tries", "NRBC_PROXY_MAX_AUTH_TRIES", FLAG_INT, &a->f.max_auth_tries, "6",
		  "failed authentication attempts (any method) before the connection is dropped",
		  false },
		{ "shutdown-timeout", "NRBC_PROXY_SHUTDOWN_TIMEOUT", FLAG_DURATION,
		  &a->f.shutdown_timeout_ms, "30s", "time live sessions get after SIGTERM; the "
		  "ends of their NixBuildRequests (status, delete) are written within it too", false },
		{ "sweep-interval", "NRBC_PROXY_SWEEP_INTERVAL", FLAG_DURATION,
		  &a->f.sweep_interval_ms, "60s", "how often to delete this proxy's "
		  "NixBuildRequests that no live session holds (unheld in two passes in a row; "
		  "0: only at start-up)", false },
		{ "allow-command", "NRBC_PROXY_ALLOW_COMMAND", FLAG_STRING, &a->f.allow_command, NULL,
		  "comma-separated extra command lines to allow exactly", false },
		{ "allow-any-command", "NRBC_PROXY_ALLOW_ANY_COMMAND", FLAG_BOOL,
		  &a->f.allow_any_command, "false",
		  "UNSAFE: run any command, shells included (tests and benchmarks only)", false },
		{ "log-format", "NRBC_LOG_FORMAT", FLAG_STRING, &a->f.log_format, "text",
		  "text or json", false },
		{ "log-level", "NRBC_LOG_LEVEL", FLAG_STRING, &a->f.log_level, "info",
		  "error, warn, info or debug", false },
	};
	const size_t n = sizeof(flags) / sizeof(flags[0]);
	enum log_level level;
	enum log_format format;
	enum flags_result fr;
	int rc = 1;

	if (!a) {
		fprintf(stderr, "nrbc proxy: out of memory\n");
		return 1;
	}
	fr = flags_parse(flags, n, argc, argv, "proxy", proxy_summary);
	if (fr != FLAGS_OK) {
		flags_free(flags, n);
		free(a);
		return fr == FLAGS_HELP ? 0 : 2;
	}
	if (log_level_parse(a->f.log_level, &level) < 0 ||
	    log_format_parse(a->f.log_format, &format) < 0) {
		fprintf(stderr, "nrbc proxy: bad --log-level or --log-format\n");
		flags_free(flags, n);
		free(a);
		return 2;
	}
	log_init("proxy", level, format);
	ssh_init();
	libssh2_init(0);
	rc = uv_loop_init(&a->loop);
	if (rc < 0) {
		log_error("cannot make the event loop: %s", uv_strerror(rc));
		rc = 1;
	} else {
		rc = 1;
		if (proxy_setup(a) == 0) {
			uv_run(&a->loop, UV_RUN_DEFAULT);
			rc = a->exit_code;
		}
		proxy_stop(a);
		/* Let every close callback run, then the loop is empty. */
		uv_run(&a->loop, UV_RUN_DEFAULT);
		if (uv_loop_close(&a->loop) != 0)
			log_debug("loop still had handles at exit");
	}
	proxy_command_policy_destroy(a->policy);
	proxy_keys_destroy(a->keys);
	metrics_destroy(a->metrics);
	kube_config_destroy(a->kube_cfg);
	flags_free(flags, n);
	free(a);
	libssh2_exit();
	ssh_finalize();
	log_info("stopped");
	return rc;
}
