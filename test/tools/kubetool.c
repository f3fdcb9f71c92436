/* kubetool: a small CLI over src/kube/ for the integration tests.
 *
 *   kubetool [--kubeconfig K] [--context C] [--in-cluster] [-v] COMMAND ...
 *     get RES NS NAME
 *     list RES NS [--selector S] [--limit N]
 *     create RES NS FILE|-
 *     update RES NS NAME FILE|-
 *     update-status RES NS NAME FILE|-
 *     patch RES NS NAME JSON [--status]
 *     delete RES NS NAME [--uid UID] [--propagation P]
 *     create-many RES NS FILE COUNT      names become NAME-0 .. NAME-(COUNT-1)
 *     delete-many RES NS PREFIX COUNT
 *     watch RES NS [--rv RV] [--selector S]
 *     informer RES NS [--selector S] [--objects] [--get-on-event] [--timestamps]
 *     bench-get RES NS NAME COUNT [--concurrency C]
 *     shell                              JSON arrays of the above on stdin
 *
 * NS "-" means all namespaces. Single requests print the response body as
 * one JSON line; the exit code is 0 for 2xx, 1 for a transport error, 2 for
 * usage, 3 for a config error, status-300 for 4xx (404 -> 104, 409 -> 109)
 * and 200+(status-500) for 5xx. The informer prints one JSON line per
 * handler call and {"event":"cache",...} on SIGUSR1 and when it ends
 * (SIGTERM/SIGINT); --timestamps adds "mono", the CLOCK_MONOTONIC seconds at
 * the handler call (the clock of Python's time.monotonic()). bench-get
 * does COUNT GETs of one object, C in flight (default 1), after one
 * untimed GET that sets up the connection, and prints
 * {"done","failed","ms","rps"}. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "buf.h"
#include "kube/kube_client.h"
#include "kube/kube_config.h"
#include "kube/kube_informer.h"
#include "kube/kube_watch.h"
#include "log.h"

#define EXIT_TRANSPORT 1
#define EXIT_USAGE 2
#define EXIT_CONFIG 3

struct tool {
	uv_loop_t *loop;
	struct kube_config *cfg;
	struct kube_client *client;
	struct kube_informer *informer;
	struct kube_watch *watch;
	uv_signal_t sig_term, sig_int, sig_usr1;
	uv_pipe_t stdin_pipe;
	struct buf stdin_buf;
	bool stdin_open;
	bool shell_busy;
	bool objects;
	bool get_on_event; /* informer: GET each added object from its handler */
	bool timestamps;   /* informer: stamp each line with CLOCK_MONOTONIC */
	const struct kube_resource *resource;
	int exit_code;
	/* many */
	size_t many_total, many_done, many_failed;
	uint64_t many_start;
	long last_status;
	/* bench-get */
	const char *bench_ns, *bench_name;
	size_t bench_started, bench_concurrency;
};

static struct tool T;

static const struct {
	const char *name;
	const struct kube_resource *r;
} resources[] = {
	{ "pods", &kube_resource_pods },
	{ "secrets", &kube_resource_secrets },
	{ "configmaps", &kube_resource_configmaps },
	{ "events", &kube_resource_events },
	{ "leases", &kube_resource_leases },
	{ "nixbuildrequests", &kube_resource_nixbuildrequests },
	{ "nbr", &kube_resource_nixbuildrequests },
};

static const struct kube_resource *resource_find(const char *name)
{
	for (size_t i = 0; i < sizeof(resources) / sizeof(resources[0]); i++)
		if (strcmp(resources[i].name, name) == 0)
			return resources[i].r;
	return NULL;
}

static const char *ns_arg(const char *ns)
{
	return strcmp(ns, "-") == 0 ? NULL : ns;
}

static void print_json_line(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);

	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
		fflush(stdout);
		free(s);
	}
}

static int exit_code_for(long status)
{
	if (status >= 200 && status < 300)
		return 0;
	if (status == 0)
		return EXIT_TRANSPORT;
	if (status >= 400 && status < 500)
		return (int)(status - 300);
	if (status >= 500 && status < 550)
		return (int)(200 + status - 500);
	return 250;
}

static void tool_stop(void);

/* ---------- single requests ---------- */

static void on_single(const struct kube_response *resp, void *data)
{
	T.last_status = resp->status;
	if (resp->body)
		print_json_line(resp->body);
	if (resp->status < 200 || resp->status >= 300)
		fprintf(stderr, "kubetool: HTTP %ld %s: %s\n", resp->status, resp->reason,
		    resp->message);
	T.exit_code = exit_code_for(resp->status);
	tool_stop();
}

static json_t *load_json_arg(const char *arg)
{
	json_error_t jerr;
	json_t *j;

	if (strcmp(arg, "-") == 0)
		j = json_loadf(stdin, 0, &jerr);
	else
		j = json_load_file(arg, 0, &jerr);
	if (!j)
		fprintf(stderr, "kubetool: %s: %s (line %d)\n", arg, jerr.text, jerr.line);
	return j;
}

/* ---------- many ---------- */

static void on_many(const struct kube_response *resp, void *data)
{
	json_t *out;

	T.many_done++;
	if (resp->status < 200 || resp->status >= 300) {
		T.many_failed++;
		if (T.many_failed <= 5)
			fprintf(stderr, "kubetool: HTTP %ld %s: %s\n", resp->status, resp->reason,
			    resp->message);
	}
	if (T.many_done < T.many_total)
		return;
	out = json_pack("{s:I, s:I, s:f}", "done", (json_int_t)T.many_done, "failed",
	    (json_int_t)T.many_failed, "ms", (double)(uv_hrtime() - T.many_start) / 1e6);
	print_json_line(out);
	json_decref(out);
	T.exit_code = T.many_failed ? 1 : 0;
	tool_stop();
}

static int cmd_create_many(const struct kube_resource *r, const char *ns, const char *file,
    const char *count_s)
{
	char *end;
	unsigned long count = strtoul(count_s, &end, 10);
	json_t *tmpl, *obj;
	const char *base;
	char *name;

	if (*end || count == 0)
		return EXIT_USAGE;
	tmpl = load_json_arg(file);
	if (!tmpl)
		return EXIT_USAGE;
	base = kube_object_name(tmpl);
	T.many_total = count;
	T.many_start = uv_hrtime();
	for (unsigned long i = 0; i < count; i++) {
		obj = json_deep_copy(tmpl);
		name = str_printf("%s-%lu", base, i);
		if (!obj || !name ||
		    json_object_set_new(json_object_get(obj, "metadata"), "name",
			json_string(name)) < 0 ||
		    !kube_create(T.client, r, ns, obj, on_many, NULL)) {
			fprintf(stderr, "kubetool: cannot start create %lu\n", i);
			T.many_done++;
			T.many_failed++;
		}
		free(name);
		json_decref(obj);
	}
	json_decref(tmpl);
	return -1;
}

static int cmd_delete_many(const struct kube_resource *r, const char *ns, const char *prefix,
    const char *count_s)
{
	char *end;
	unsigned long count = strtoul(count_s, &end, 10);
	char *name;

	if (*end || count == 0)
		return EXIT_USAGE;
	T.many_total = count;
	T.many_start = uv_hrtime();
	for (unsigned long i = 0; i < count; i++) {
		name = str_printf("%s-%lu", prefix, i);
		if (!name || !kube_delete(T.client, r, ns, name, NULL, NULL, on_many, NULL)) {
			T.many_done++;
			T.many_failed++;
		}
		free(name);
	}
	return -1;
}

/* ---------- bench-get ---------- */

static void on_bench_get(const struct kube_response *resp, void *data);

static bool bench_start_one(void)
{
	T.bench_started++;
	if (kube_get(T.client, T.resource, T.bench_ns, T.bench_name, on_bench_get, NULL))
		return true;
	fprintf(stderr, "kubetool: cannot start GET %zu\n", T.bench_started);
	return false;
}

static void bench_finish(void)
{
	double ms = (double)(uv_hrtime() - T.many_start) / 1e6;
	json_t *out = json_pack("{s:I, s:I, s:I, s:f, s:f}", "done", (json_int_t)T.many_done,
	    "failed", (json_int_t)T.many_failed, "concurrency",
	    (json_int_t)T.bench_concurrency, "ms", ms, "rps",
	    ms > 0 ? (double)T.many_done * 1e3 / ms : 0.0);

	print_json_line(out);
	json_decref(out);
	T.exit_code = T.many_failed ? 1 : 0;
	tool_stop();
}

static void on_bench_get(const struct kube_response *resp, void *data)
{
	T.many_done++;
	if (resp->status != 200) {
		T.many_failed++;
		if (T.many_failed <= 5)
			fprintf(stderr, "kubetool: HTTP %ld %s: %s\n", resp->status, resp->reason,
			    resp->message);
	}
	/* A GET that cannot start counts as done and failed, so the
	 * count still reaches the total. */
	while (T.bench_started < T.many_total && !bench_start_one()) {
		T.many_done++;
		T.many_failed++;
	}
	if (T.many_done == T.many_total)
		bench_finish();
}

static void on_bench_warmup(const struct kube_response *resp, void *data)
{
	size_t n;

	if (resp->status != 200) {
		fprintf(stderr, "kubetool: warm-up GET: HTTP %ld %s: %s\n", resp->status,
		    resp->reason, resp->message);
		T.exit_code = exit_code_for(resp->status);
		tool_stop();
		return;
	}
	T.many_start = uv_hrtime();
	n = T.bench_concurrency < T.many_total ? T.bench_concurrency : T.many_total;
	for (size_t i = 0; i < n; i++) {
		if (!bench_start_one()) {
			T.many_done++;
			T.many_failed++;
		}
	}
	if (T.many_done == T.many_total)
		bench_finish();
}

static int cmd_bench_get(const char *ns, const char *name, const char *count_s,
    const char *concurrency_s)
{
	char *end;
	unsigned long count = strtoul(count_s, &end, 10), conc = 1;

	if (*end || count == 0)
		return EXIT_USAGE;
	if (concurrency_s) {
		conc = strtoul(concurrency_s, &end, 10);
		if (*end || conc == 0 || conc > 1000)
			return EXIT_USAGE;
	}
	T.bench_ns = ns;
	T.bench_name = name;
	T.many_total = count;
	T.bench_concurrency = conc;
	return kube_get(T.client, T.resource, ns, name, on_bench_warmup, NULL) ? -1 :
	    EXIT_TRANSPORT;
}

/* ---------- watch ---------- */

static void on_watch_event(enum kube_watch_event_type type, json_t *obj, void *data)
{
	json_t *line = json_pack("{s:s, s:O}", "type", kube_watch_event_type_name(type),
	    "object", obj);

	print_json_line(line);
	json_decref(line);
}

static void on_watch_end(const char *err, long status, void *data)
{
	json_t *line = json_pack("{s:s, s:s?, s:I}", "end", err ? "error" : "clean", "error",
	    err, "status", (json_int_t)status);

	print_json_line(line);
	json_decref(line);
	kube_watch_destroy(T.watch);
	T.watch = NULL;
	T.exit_code = err ? 1 : 0;
	tool_stop();
}

/* ---------- informer ---------- */

static void emit(const char *event, json_t *obj, json_t *old)
{
	json_t *line = json_object();
	char *key = kube_object_key(obj);
	struct timespec now;

	/* First, so the stamp is the handler call, not the JSON work. */
	if (T.timestamps && clock_gettime(CLOCK_MONOTONIC, &now) == 0)
		json_object_set_new(line, "mono",
		    json_real((double)now.tv_sec + (double)now.tv_nsec / 1e9));
	json_object_set_new(line, "event", json_string(event));
	json_object_set_new(line, "key", json_string(key ? key : ""));
	json_object_set_new(line, "rv", json_string(kube_object_resource_version(obj)));
	json_object_set_new(line, "uid", json_string(kube_object_uid(obj)));
	if (old)
		json_object_set_new(line, "old_rv",
		    json_string(kube_object_resource_version(old)));
	if (T.objects)
		json_object_set(line, "object", obj);
	print_json_line(line);
	json_decref(line);
	free(key);
}

static void on_event_get(const struct kube_response *resp, void *data)
{
	json_t *line = json_pack("{s:s, s:s, s:I}", "event", "get", "key", (char *)data,
	    "status", (json_int_t)resp->status);

	print_json_line(line);
	json_decref(line);
	free(data);
}

static void inf_add(json_t *obj, void *data)
{
	char *key;

	emit("add", obj, NULL);
	/* Handlers run inside libcurl's write callback: starting a request
	 * here is what controllers do, and must work. */
	if (T.get_on_event && (key = kube_object_key(obj))) {
		if (!kube_get(T.client, T.resource, kube_object_namespace(obj),
		    kube_object_name(obj), on_event_get, key))
			free(key);
	}
}

static void inf_update(json_t *old, json_t *obj, void *data)
{
	emit("update", obj, old);
}

static void inf_delete(json_t *obj, void *data)
{
	emit("delete", obj, NULL);
}

static void inf_synced(void *data)
{
	json_t *line = json_pack("{s:s, s:I}", "event", "synced", "size",
	    (json_int_t)kube_informer_size(T.informer));

	print_json_line(line);
	json_decref(line);
}

static void dump_one(json_t *obj, void *data)
{
	char *key = kube_object_key(obj);

	if (key)
		json_object_set_new(data, key, json_string(kube_object_resource_version(obj)));
	free(key);
}

static void dump_cache(void)
{
	json_t *items, *line;

	if (!T.informer)
		return;
	items = json_object();
	kube_informer_foreach(T.informer, dump_one, items);
	line = json_pack("{s:s, s:o, s:b}", "event", "cache", "items", items, "synced",
	    kube_informer_synced(T.informer));
	print_json_line(line);
	json_decref(line);
}

/* ---------- shell ---------- */

static int run_command(int argc, char **argv);

static void shell_next(void);

static void on_shell_response(const struct kube_response *resp, void *data)
{
	json_t *line = json_pack("{s:I, s:s, s:s, s:O?}", "status", (json_int_t)resp->status,
	    "reason", resp->reason, "message", resp->message, "body", resp->body);

	print_json_line(line);
	json_decref(line);
	T.shell_busy = false;
	shell_next();
}

static void shell_error(const char *msg)
{
	json_t *line = json_pack("{s:I, s:s, s:s}", "status", (json_int_t)-1, "reason",
	    "BadCommand", "message", msg);

	print_json_line(line);
	json_decref(line);
}

static uint64_t shell_start(json_t *cmd)
{
	const char *op, *res, *ns, *name;
	const struct kube_resource *r;
	json_t *arg;

	if (json_unpack(cmd, "[s,s,s!]", &op, &res, &ns) == 0)
		name = NULL;
	else if (json_unpack(cmd, "[s,s,s,s!]", &op, &res, &ns, &name) == 0 ||
	    json_unpack(cmd, "[s,s,s,s,o!]", &op, &res, &ns, &name, &arg) == 0)
		;
	else if (json_unpack(cmd, "[s,s,s,o!]", &op, &res, &ns, &arg) == 0)
		name = NULL;
	else
		return 0;
	r = resource_find(res);
	if (!r)
		return 0;
	if (strcmp(op, "get") == 0 && name)
		return kube_get(T.client, r, ns_arg(ns), name, on_shell_response, NULL);
	if (strcmp(op, "list") == 0)
		return kube_list(T.client, r, ns_arg(ns), name, NULL, 0, on_shell_response, NULL);
	if (strcmp(op, "create") == 0 && json_array_size(cmd) == 4)
		return kube_create(T.client, r, ns, json_array_get(cmd, 3), on_shell_response,
		    NULL);
	if (strcmp(op, "update") == 0 && json_array_size(cmd) == 5)
		return kube_update(T.client, r, ns, name, arg, on_shell_response, NULL);
	if (strcmp(op, "update-status") == 0 && json_array_size(cmd) == 5)
		return kube_update_status(T.client, r, ns, name, arg, on_shell_response, NULL);
	if (strcmp(op, "patch") == 0 && json_array_size(cmd) == 5)
		return kube_patch_merge(T.client, r, ns, name, arg, false, on_shell_response,
		    NULL);
	if (strcmp(op, "patch-status") == 0 && json_array_size(cmd) == 5)
		return kube_patch_merge(T.client, r, ns, name, arg, true, on_shell_response,
		    NULL);
	if (strcmp(op, "delete") == 0 && name)
		return kube_delete(T.client, r, ns, name, NULL, NULL, on_shell_response, NULL);
	return 0;
}

static void shell_next(void)
{
	char *nl;
	json_error_t jerr;
	json_t *cmd;

	while (!T.shell_busy && T.stdin_buf.data && (nl = memchr(T.stdin_buf.data, '\n',
	    T.stdin_buf.len))) {
		size_t n = (size_t)(nl - T.stdin_buf.data);

		cmd = json_loadb(T.stdin_buf.data, n, 0, &jerr);
		buf_consume(&T.stdin_buf, n + 1);
		if (!cmd) {
			shell_error(jerr.text);
			continue;
		}
		if (shell_start(cmd))
			T.shell_busy = true;
		else
			shell_error("unknown or malformed command");
		json_decref(cmd);
	}
	if (!T.shell_busy && !T.stdin_open)
		tool_stop();
}

static void on_stdin_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	static char chunk[65536];

	b->base = chunk;
	b->len = sizeof(chunk);
}

static void on_stdin_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	if (n < 0) {
		T.stdin_open = false;
		uv_read_stop(s);
		shell_next();
		return;
	}
	if (buf_append(&T.stdin_buf, b->base, (size_t)n) < 0) {
		shell_error("input line too long");
		buf_reset(&T.stdin_buf);
	}
	shell_next();
}

/* ---------- lifecycle ---------- */

static void close_if_open(uv_handle_t *h)
{
	if (h->type != UV_UNKNOWN_HANDLE && !uv_is_closing(h))
		uv_close(h, NULL);
}

static bool stopping;

static void tool_stop(void)
{
	if (stopping)
		return;
	stopping = true;
	dump_cache();
	kube_informer_destroy(T.informer);
	kube_watch_destroy(T.watch);
	T.watch = NULL;
	kube_client_destroy(T.client);
	close_if_open((uv_handle_t *)&T.sig_term);
	close_if_open((uv_handle_t *)&T.sig_int);
	close_if_open((uv_handle_t *)&T.sig_usr1);
	close_if_open((uv_handle_t *)&T.stdin_pipe);
}

static void on_signal(uv_signal_t *h, int signum)
{
	if (signum == SIGUSR1) {
		dump_cache();
		return;
	}
	if (!T.informer && !T.watch)
		T.exit_code = 128 + signum;
	tool_stop();
}

static void usage(void)
{
	fprintf(stderr, "usage: kubetool [--kubeconfig K] [--context C] [--in-cluster] [-v] "
	    "get|list|create|update|update-status|patch|delete|create-many|delete-many|"
	    "watch|informer|bench-get|shell ...\n");
}

/* Returns an exit code, or -1 when the loop has work to run. */
static int run_command(int argc, char **argv)
{
	const struct kube_resource *r;
	const char *selector = NULL, *uid = NULL, *propagation = NULL, *rv = NULL;
	const char *concurrency = NULL;
	bool status = false;
	long limit = 0;
	json_t *obj;
	uint64_t id;
	int rc;
	const char *cmd;
	char *pos[6];
	int npos = 0;

	if (argc < 1)
		return EXIT_USAGE;
	cmd = argv[0];
	if (strcmp(cmd, "shell") == 0) {
		rc = uv_pipe_init(T.loop, &T.stdin_pipe, 0);
		if (rc == 0)
			rc = uv_pipe_open(&T.stdin_pipe, 0);
		if (rc == 0)
			rc = uv_read_start((uv_stream_t *)&T.stdin_pipe, on_stdin_alloc,
			    on_stdin_read);
		if (rc < 0) {
			fprintf(stderr, "kubetool: stdin: %s\n", uv_strerror(rc));
			return EXIT_USAGE;
		}
		T.stdin_open = true;
		return -1;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--selector") == 0 && i + 1 < argc)
			selector = argv[++i];
		else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc)
			limit = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--uid") == 0 && i + 1 < argc)
			uid = argv[++i];
		else if (strcmp(argv[i], "--propagation") == 0 && i + 1 < argc)
			propagation = argv[++i];
		else if (strcmp(argv[i], "--rv") == 0 && i + 1 < argc)
			rv = argv[++i];
		else if (strcmp(argv[i], "--status") == 0)
			status = true;
		else if (strcmp(argv[i], "--objects") == 0)
			T.objects = true;
		else if (strcmp(argv[i], "--get-on-event") == 0)
			T.get_on_event = true;
		else if (strcmp(argv[i], "--timestamps") == 0)
			T.timestamps = true;
		else if (strcmp(argv[i], "--concurrency") == 0 && i + 1 < argc)
			concurrency = argv[++i];
		else if (npos < 6)
			pos[npos++] = argv[i];
		else
			return EXIT_USAGE;
	}
	if (npos < 2)
		return EXIT_USAGE;
	r = resource_find(pos[0]);
	if (!r) {
		fprintf(stderr, "kubetool: unknown resource %s\n", pos[0]);
		return EXIT_USAGE;
	}
	const char *ns = ns_arg(pos[1]);

	T.resource = r;

	if (strcmp(cmd, "get") == 0 && npos == 3) {
		id = kube_get(T.client, r, ns, pos[2], on_single, NULL);
	} else if (strcmp(cmd, "list") == 0 && npos == 2) {
		id = kube_list(T.client, r, ns, selector, NULL, limit, on_single, NULL);
	} else if (strcmp(cmd, "create") == 0 && npos == 3) {
		if (!(obj = load_json_arg(pos[2])))
			return EXIT_USAGE;
		id = kube_create(T.client, r, ns, obj, on_single, NULL);
		json_decref(obj);
	} else if ((strcmp(cmd, "update") == 0 || strcmp(cmd, "update-status") == 0) &&
	    npos == 4) {
		if (!(obj = load_json_arg(pos[3])))
			return EXIT_USAGE;
		id = cmd[6] ? kube_update_status(T.client, r, ns, pos[2], obj, on_single, NULL) :
		    kube_update(T.client, r, ns, pos[2], obj, on_single, NULL);
		json_decref(obj);
	} else if (strcmp(cmd, "patch") == 0 && npos == 4) {
		json_error_t jerr;

		if (!(obj = json_loads(pos[3], 0, &jerr))) {
			fprintf(stderr, "kubetool: patch: %s\n", jerr.text);
			return EXIT_USAGE;
		}
		id = kube_patch_merge(T.client, r, ns, pos[2], obj, status, on_single, NULL);
		json_decref(obj);
	} else if (strcmp(cmd, "delete") == 0 && npos == 3) {
		id = kube_delete(T.client, r, ns, pos[2], uid, propagation, on_single, NULL);
	} else if (strcmp(cmd, "create-many") == 0 && npos == 4) {
		return cmd_create_many(r, ns, pos[2], pos[3]);
	} else if (strcmp(cmd, "delete-many") == 0 && npos == 4) {
		return cmd_delete_many(r, ns, pos[2], pos[3]);
	} else if (strcmp(cmd, "bench-get") == 0 && npos == 4) {
		return cmd_bench_get(ns, pos[2], pos[3], concurrency);
	} else if (strcmp(cmd, "watch") == 0 && npos == 2) {
		T.watch = kube_watch_start(T.client, r, ns, selector, NULL, rv, on_watch_event,
		    on_watch_end, NULL);
		return T.watch ? -1 : EXIT_TRANSPORT;
	} else if (strcmp(cmd, "informer") == 0 && npos == 2) {
		static const struct kube_informer_handlers h = {
			.on_add = inf_add,
			.on_update = inf_update,
			.on_delete = inf_delete,
			.on_synced = inf_synced,
		};

		T.informer = kube_informer_create(T.client, r, ns, selector, &h, NULL);
		if (!T.informer || kube_informer_start(T.informer) < 0)
			return EXIT_TRANSPORT;
		return -1;
	} else {
		return EXIT_USAGE;
	}
	return id ? -1 : EXIT_TRANSPORT;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kubeconfig", required_argument, NULL, 'k' },
		{ "context", required_argument, NULL, 'c' },
		{ "in-cluster", no_argument, NULL, 'i' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	const char *kubeconfig = NULL, *context = NULL;
	bool in_cluster = false, verbose = false;
	char *err = NULL;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "+v", opts, NULL)) != -1) {
		switch (opt) {
		case 'k':
			kubeconfig = optarg;
			break;
		case 'c':
			context = optarg;
			break;
		case 'i':
			in_cluster = true;
			break;
		case 'v':
			verbose = true;
			break;
		default:
			usage();
			return EXIT_USAGE;
		}
	}
	log_init("kubetool", verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	if (optind >= argc) {
		usage();
		return EXIT_USAGE;
	}
	T.cfg = in_cluster ? kube_config_in_cluster(NULL, &err) :
	    kube_config_load(kubeconfig, context, &err);
	if (!T.cfg) {
		fprintf(stderr, "kubetool: %s\n", err ? err : "cannot load the config");
		free(err);
		return EXIT_CONFIG;
	}
	T.loop = uv_default_loop();
	buf_init(&T.stdin_buf, 64u << 20);
	T.client = kube_client_create(T.loop, T.cfg);
	if (!T.client)
		return EXIT_TRANSPORT;
	if (uv_signal_init(T.loop, &T.sig_term) < 0 || uv_signal_init(T.loop, &T.sig_int) < 0 ||
	    uv_signal_init(T.loop, &T.sig_usr1) < 0 ||
	    uv_signal_start(&T.sig_term, on_signal, SIGTERM) < 0 ||
	    uv_signal_start(&T.sig_int, on_signal, SIGINT) < 0 ||
	    uv_signal_start(&T.sig_usr1, on_signal, SIGUSR1) < 0)
		return EXIT_TRANSPORT;
	signal(SIGPIPE, SIG_IGN);
	rc = run_command(argc - optind, argv + optind);
	if (rc >= 0) {
		if (rc == EXIT_USAGE)
			usage();
		T.exit_code = rc;
		tool_stop();
	}
	uv_run(T.loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(T.loop);
	if (rc < 0)
		fprintf(stderr, "kubetool: loop not empty at exit: %s\n", uv_strerror(rc));
	kube_config_destroy(T.cfg);
	buf_finish(&T.stdin_buf);
	curl_global_cleanup();
	return T.exit_code;
}
