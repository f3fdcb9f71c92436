#include "kube_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "rfc3339.h"

#define KUBE_EXEC_MAX_STDOUT (1u << 20)
#define KUBE_EXEC_MAX_STDERR (16u << 10)
#define KUBE_EXEC_TIMEOUT_MS 60000
#define KUBE_EXEC_V1 "client.authentication.k8s.io/v1"
#define KUBE_EXEC_V1BETA1 "client.authentication.k8s.io/v1beta1"

extern char **environ;

struct kube_exec {
	char *origin;
	char *api_version;
	char *command; /* resolved against base_dir when relative with a '/' */
	char **argv;   /* command, args..., NULL */
	char **env;    /* ours, then the spec's, then KUBERNETES_EXEC_INFO; NULL-terminated */
	char *install_hint;
	/* the cached credential */
	char *token;
	char *cert;
	char *key;
	time_t expiry; /* 0: until refused */
	bool valid;
	unsigned runs;
};

static void free_secret(char *s)
{
	if (s) {
		memset(s, 0, strlen(s));
		free(s);
	}
}

static void free_vec(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static void drop_credential(struct kube_exec *x)
{
	free_secret(x->token);
	free_secret(x->cert);
	free_secret(x->key);
	x->token = x->cert = x->key = NULL;
	x->expiry = 0;
	x->valid = false;
}

/* ---------- parsing the plugin's answer ---------- */

static void set_err(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(char **err, const char *fmt, ...)
{
	struct buf b;
	va_list ap;

	if (!err)
		return;
	free(*err);
	buf_init(&b, 32768);
	va_start(ap, fmt);
	*err = buf_vprintf(&b, fmt, ap) < 0 ? NULL : buf_steal(&b);
	va_end(ap);
	if (!*err) {
		buf_finish(&b);
		*err = strdup("exec plugin: out of memory");
	}
}

/* A string member: absent or null → NULL and 0; anything else → -1. */
static int opt_string(json_t *obj, const char *key, const char **out)
{
	json_t *v = json_object_get(obj, key);

	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return -1;
	*out = json_string_value(v);
	return 0;
}

/* A token goes into an HTTP header: control characters would inject headers. */
static bool header_safe(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return s[0] != '\0';
}

int kube_exec_parse(const char *text, size_t len, const char *expected_version,
    char **token, char **cert, char **key, time_t *expiry, char **err)
{
	const char *kind, *version, *tok, *crt, *k, *exp;
	json_error_t jerr;
	int64_t ms = 0;
	json_t *root, *status;

	*token = *cert = *key = NULL;
	*expiry = 0;
	root = json_loadb(text, len, 0, &jerr);
	if (!root) {
		set_err(err, "output is not JSON (line %d: %s)", jerr.line, jerr.text);
		return -1;
	}
	if (!json_is_object(root) || opt_string(root, "kind", &kind) < 0 ||
	    opt_string(root, "apiVersion", &version) < 0) {
		set_err(err, "output is not an ExecCredential object");
		goto fail;
	}
	if (!kind || strcmp(kind, "ExecCredential") != 0) {
		set_err(err, "output has kind \"%s\", expected ExecCredential", kind ? kind : "");
		goto fail;
	}
	if (!version || strcmp(version, expected_version) != 0) {
		set_err(err, "output has apiVersion \"%s\", the kubeconfig asks for \"%s\"",
		    version ? version : "", expected_version);
		goto fail;
	}
	status = json_object_get(root, "status");
	if (!json_is_object(status)) {
		set_err(err, "output has no status");
		goto fail;
	}
	if (opt_string(status, "token", &tok) < 0 ||
	    opt_string(status, "clientCertificateData", &crt) < 0 ||
	    opt_string(status, "clientKeyData", &k) < 0 ||
	    opt_string(status, "expirationTimestamp", &exp) < 0) {
		set_err(err, "status: token, clientCertificateData, clientKeyData and "
		    "expirationTimestamp must be strings");
		goto fail;
	}
	if (tok && !tok[0])
		tok = NULL;
	if (!crt != !k) {
		set_err(err, "status: clientCertificateData and clientKeyData must come together");
		goto fail;
	}
	if (!tok && !crt) {
		set_err(err, "status has neither a token nor clientCertificateData/clientKeyData");
		goto fail;
	}
	if (tok && !header_safe(tok)) {
		set_err(err, "status.token contains control characters");
		goto fail;
	}
	if (exp && (ms = rfc3339_parse_ms(exp)) < 0) {
		set_err(err, "status.expirationTimestamp \"%.64s\" is not an RFC 3339 time", exp);
		goto fail;
	}
	if (exp)
		*expiry = (time_t)(ms / 1000);
	if ((tok && !(*token = strdup(tok))) || (crt && !(*cert = strdup(crt))) ||
	    (k && !(*key = strdup(k)))) {
		set_err(err, "out of memory");
		free_secret(*token);
		free_secret(*cert);
		free_secret(*key);
		*token = *cert = *key = NULL;
		goto fail;
	}
	json_decref(root);
	return 0;
fail:
	json_decref(root);
	return -1;
}

/* ---------- creating ---------- */

static char *exec_info(const char *api_version, const char *cluster_json)
{
	json_t *info, *spec, *cluster = NULL;
	json_error_t jerr;
	char *text;

	if (cluster_json) {
		cluster = json_loads(cluster_json, 0, &jerr);
		if (!cluster)
			return NULL;
	}
	/* v1 requires spec.interactive; we never give the plugin a terminal. */
	spec = json_pack("{s:b}", "interactive", 0);
	if (spec && cluster)
		json_object_set_new(spec, "cluster", cluster);
	else
		json_decref(cluster);
	info = json_pack("{s:s,s:s,s:o}", "apiVersion", api_version, "kind", "ExecCredential",
	    "spec", spec);
	if (!info)
		return NULL;
	text = json_dumps(info, JSON_COMPACT);
	json_decref(info);
	if (!text)
		return NULL;
	return text;
}

static char **build_env(const struct kube_exec_spec *spec)
{
	size_t n = 0, i = 0;
	char **env, *info, *info_var;

	while (environ && environ[n])
		n++;
	env = calloc(n + spec->nenv + 2, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t j = 0; j < n; j++) {
		if (strncmp(environ[j], "KUBERNETES_EXEC_INFO=", 21) == 0)
			continue;
		if (!(env[i++] = strdup(environ[j])))
			goto fail;
	}
	for (size_t j = 0; j < spec->nenv; j++)
		if (!(env[i++] = strdup(spec->env[j])))
			goto fail;
	info = exec_info(spec->api_version, spec->cluster_json);
	if (!info)
		goto fail;
	info_var = str_printf("KUBERNETES_EXEC_INFO=%s", info);
	free(info);
	if (!info_var)
		goto fail;
	env[i++] = info_var;
	return env;
fail:
	free_vec(env);
	return NULL;
}

struct kube_exec *kube_exec_create(const struct kube_exec_spec *spec, const char *origin,
    char **err)
{
	struct kube_exec *x;

	if (!spec->api_version || (strcmp(spec->api_version, KUBE_EXEC_V1) != 0 &&
	    strcmp(spec->api_version, KUBE_EXEC_V1BETA1) != 0)) {
		set_err(err, "%s: exec.apiVersion \"%s\" is not supported (use %s or %s)", origin,
		    spec->api_version ? spec->api_version : "", KUBE_EXEC_V1, KUBE_EXEC_V1BETA1);
		return NULL;
	}
	if (!spec->command || !spec->command[0]) {
		set_err(err, "%s: exec.command: missing", origin);
		return NULL;
	}
	x = calloc(1, sizeof(*x));
	if (!x)
		goto nomem;
	x->origin = strdup(origin);
	x->api_version = strdup(spec->api_version);
	/* client-go: a relative path with a separator is relative to the kubeconfig. */
	if (spec->command[0] != '/' && strchr(spec->command, '/') && spec->base_dir &&
	    spec->base_dir[0])
		x->command = str_printf("%s/%s", spec->base_dir, spec->command);
	else
		x->command = strdup(spec->command);
	x->install_hint = spec->install_hint ? strdup(spec->install_hint) : NULL;
	x->argv = calloc(spec->nargs + 2, sizeof(*x->argv));
	if (!x->origin || !x->api_version || !x->command || !x->argv ||
	    (spec->install_hint && !x->install_hint))
		goto nomem;
	if (!(x->argv[0] = strdup(x->command)))
		goto nomem;
	for (size_t i = 0; i < spec->nargs; i++)
		if (!(x->argv[i + 1] = strdup(spec->args[i])))
			goto nomem;
	x->env = build_env(spec);
	if (!x->env)
		goto nomem;
	return x;
nomem:
	kube_exec_destroy(x);
	set_err(err, "%s: exec: out of memory (or bad provideClusterInfo)", origin);
	return NULL;
}

void kube_exec_destroy(struct kube_exec *x)
{
	if (!x)
		return;
	drop_credential(x);
	free(x->origin);
	free(x->api_version);
	free(x->command);
	free_vec(x->argv);
	free_vec(x->env);
	free(x->install_hint);
	free(x);
}

/* ---------- running ---------- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Reads both pipes until EOF or the deadline; keeps at most each cap and
 * notes when a cap was hit. Returns 0, or -1 on timeout. */
static int drain(int out_fd, int err_fd, struct buf *out, struct buf *errb, bool *too_big)
{
	uint64_t deadline = now_ms() + KUBE_EXEC_TIMEOUT_MS;
	int fds[2] = { out_fd, err_fd };
	struct buf *bufs[2] = { out, errb };
	char chunk[4096];

	while (fds[0] >= 0 || fds[1] >= 0) {
		struct pollfd p[2];
		uint64_t now = now_ms();
		int rc;

		if (now >= deadline)
			return -1;
		for (int i = 0; i < 2; i++) {
			p[i].fd = fds[i];
			p[i].events = POLLIN;
			p[i].revents = 0;
		}
		rc = poll(p, 2, (int)(deadline - now));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return -1;
		for (int i = 0; i < 2; i++) {
			ssize_t got;

			if (fds[i] < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			got = read(fds[i], chunk, sizeof(chunk));
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				fds[i] = -1;
				continue;
			}
			if (buf_append(bufs[i], chunk, (size_t)got) < 0 && i == 0)
				*too_big = true;
		}
	}
	return 0;
}

/* stderr for a message: printable, one line per line, without the last newline. */
static const char *stderr_text(struct buf *b)
{
	if (buf_append(b, "", 1) < 0 || !b->data)
		return "";
	for (size_t i = 0; i + 1 < b->len; i++)
		if ((unsigned char)b->data[i] < 0x20 && b->data[i] != '\n')
			b->data[i] = ' ';
	while (b->len > 1 && b->data[b->len - 2] == '\n')
		b->data[--b->len - 1] = '\0';
	return b->data;
}

static int run_plugin(struct kube_exec *x, char **err)
{
	posix_spawn_file_actions_t fa;
	int out[2] = { -1, -1 }, errp[2] = { -1, -1 }, status = 0, rc;
	struct buf ob, eb;
	bool too_big = false, timed_out;
	char *perr = NULL;
	pid_t pid;

	buf_init(&ob, KUBE_EXEC_MAX_STDOUT);
	buf_init(&eb, KUBE_EXEC_MAX_STDERR);
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		set_err(err, "%s: exec plugin %s: pipe: %s", x->origin, x->command,
		    strerror(errno));
		goto fail_pipes;
	}
	if (posix_spawn_file_actions_init(&fa) != 0) {
		set_err(err, "%s: exec plugin %s: out of memory", x->origin, x->command);
		goto fail_pipes;
	}
	/* Never a terminal: stdin is /dev/null (interactive is false). */
	rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (rc == 0)
		rc = posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	if (rc == 0)
		rc = posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
	x->runs++;
	if (rc == 0)
		rc = posix_spawnp(&pid, x->command, &fa, NULL, x->argv, x->env);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0) {
		set_err(err, "%s: exec plugin \"%s\" %s%s%s", x->origin, x->command,
		    rc == ENOENT ? "not found" : strerror(rc),
		    x->install_hint ? ": " : "", x->install_hint ? x->install_hint : "");
		goto fail_pipes;
	}
	close(out[1]);
	close(errp[1]);
	out[1] = errp[1] = -1;
	timed_out = drain(out[0], errp[0], &ob, &eb, &too_big) < 0;
	if (timed_out)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	close(out[0]);
	close(errp[0]);
	out[0] = errp[0] = -1;
	if (timed_out) {
		set_err(err, "%s: exec plugin %s did not finish within %d s", x->origin,
		    x->command, KUBE_EXEC_TIMEOUT_MS / 1000);
		goto fail;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		/* 127 is the shell's "command not found" for wrapper scripts. */
		set_err(err, "%s: exec plugin %s %s %d: %s%s%s", x->origin, x->command,
		    WIFEXITED(status) ? "exited with status" : "was killed by signal",
		    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), stderr_text(&eb),
		    x->install_hint && WIFEXITED(status) && WEXITSTATUS(status) == 127 ? "; " : "",
		    x->install_hint && WIFEXITED(status) && WEXITSTATUS(status) == 127 ?
		    x->install_hint : "");
		goto fail;
	}
	if (too_big) {
		set_err(err, "%s: exec plugin %s printed more than %u bytes", x->origin,
		    x->command, KUBE_EXEC_MAX_STDOUT);
		goto fail;
	}
	drop_credential(x);
	if (kube_exec_parse(ob.data ? ob.data : "", ob.len, x->api_version, &x->token,
	    &x->cert, &x->key, &x->expiry, &perr) < 0) {
		set_err(err, "%s: exec plugin %s: %s%s%s", x->origin, x->command, perr,
		    eb.len ? "; its stderr: " : "", stderr_text(&eb));
		free(perr);
		goto fail;
	}
	x->valid = true;
	if (ob.data)
		memset(ob.data, 0, ob.len);
	buf_finish(&ob);
	buf_finish(&eb);
	return 0;
fail_pipes:
	for (int i = 0; i < 2; i++) {
		if (out[i] >= 0)
			close(out[i]);
		if (errp[i] >= 0)
			close(errp[i]);
	}
fail:
	if (ob.data)
		memset(ob.data, 0, ob.len);
	buf_finish(&ob);
	buf_finish(&eb);
	return -1;
}

int kube_exec_credential(struct kube_exec *x, time_t now, const char **token,
    const char **cert, const char **key, char **err)
{
	if (x->valid && x->expiry != 0 && now >= x->expiry) {
		log_info("%s: exec credential expired, running %s again", x->origin, x->command);
		drop_credential(x);
	}
	if (!x->valid && run_plugin(x, err) < 0)
		return -1;
	*token = x->token;
	*cert = x->cert;
	*key = x->key;
	return 0;
}

void kube_exec_invalidate(struct kube_exec *x)
{
	if (x && x->valid) {
		log_info("%s: the API refused the exec credential; %s runs again for the next "
		    "request", x->origin, x->command);
		drop_credential(x);
	}
}

unsigned kube_exec_runs(const struct kube_exec *x)
{
	return x->runs;
}
