/* nrbc usage: what each client identity used, from the NixUsage objects the
 * controller keeps (a LIST in the namespace, with your kubeconfig), as a
 * table; --key FILE says which identity a key is and prints its row. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "buf.h"
#include "client_usage.h"
#include "flags.h"
#include "key_identity.h"
#include "kube/kube_client.h"
#include "kube/kube_config.h"
#include "log.h"

struct usage_flags {
	char *kubeconfig;
	char *context;
	char *namespace;
	char *key;
	char *log_level;
};

struct fetch {
	json_t *list;
	char *err;
	bool done;
	const char *ns;
};

static void on_list(const struct kube_response *resp, void *data)
{
	struct fetch *f = data;

	f->done = true;
	if (resp->status == 200 && json_is_object(resp->body)) {
		f->list = json_incref(resp->body);
		return;
	}
	if (resp->status == 404)
		f->err = str_printf("no NixUsages in %s (404: the CRD nixusages.nix.io is not "
		    "installed; kubectl apply -k manifests)", f->ns);
	else if (resp->status == 403)
		f->err = str_printf("not allowed to list NixUsages in %s (403): ask for a "
		    "RoleBinding to the Role nrbc-usage (manifests/usage-role.yaml)", f->ns);
	else
		f->err = str_printf("LIST NixUsages in %s: %s%s", f->ns,
		    resp->status ? "" : "no answer: ", resp->message);
}

/* The NixUsageList, or NULL with *err. */
static json_t *fetch(struct kube_config *cfg, const char *ns, char **err)
{
	struct fetch f = { .ns = ns };
	struct kube_client *kube;
	uv_loop_t loop;

	if (uv_loop_init(&loop) != 0) {
		*err = strdup("cannot start an event loop");
		return NULL;
	}
	kube = kube_client_create(&loop, cfg);
	if (!kube || !kube_list(kube, &kube_resource_nixusages, ns, NULL, NULL, 0, on_list, &f))
		f.err = strdup("cannot start the request (see the log)");
	while (!f.err && !f.done && uv_run(&loop, UV_RUN_ONCE))
		;
	kube_client_destroy(kube);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	if (!f.list && !f.err)
		f.err = strdup("the API request did not finish");
	*err = f.err;
	return f.list;
}

static int run(const struct usage_flags *f)
{
	char identity[KEY_IDENTITY_LEN + 1] = "";
	struct client_usage_row *rows = NULL;
	size_t n = 0, shown = 0;
	char *err = NULL, *warnings = NULL, *table = NULL;
	struct kube_config *cfg;
	json_t *list = NULL;
	int rc = 1;

	if (f->key && key_identity_of_file(f->key, identity, &err) < 0) {
		fprintf(stderr, "nrbc usage: %s\n", err);
		free(err);
		return 2;
	}
	cfg = kube_config_load(f->kubeconfig, f->context, &err);
	if (!cfg) {
		fprintf(stderr, "nrbc usage: %s\n", err);
		free(err);
		return 1;
	}
	list = fetch(cfg, f->namespace, &err);
	if (!list || client_usage_rows(list, &rows, &n, &warnings, &err) < 0) {
		fprintf(stderr, "nrbc usage: %s\n", err ? err : "out of memory");
		goto out;
	}
	if (f->key) {
		/* Only the key's row. */
		for (size_t i = 0; i < n; i++) {
			if (strcmp(rows[i].identity, identity) == 0)
				rows[shown++] = rows[i];
		}
		printf("key %s is identity %s\n", f->key, identity);
		n = shown;
	}
	if (f->key && n == 0) {
		printf("no usage recorded for identity %s in namespace %s yet\n", identity,
		    f->namespace);
		rc = 0;
		goto out;
	}
	table = client_usage_table(rows, n);
	if (!table) {
		fprintf(stderr, "nrbc usage: out of memory\n");
		goto out;
	}
	fputs(table, stdout);
	rc = 0;
out:
	if (warnings) {
		fprintf(stderr, "nrbc usage: %s", warnings);
		rc = rc ? rc : 1;
	}
	free(table);
	free(warnings);
	free(err);
	free(rows);
	json_decref(list);
	kube_config_destroy(cfg);
	return rc;
}

int client_usage_main(int argc, char **argv)
{
	struct usage_flags f = { 0 };
	const struct flag flags[] = {
		{ "kubeconfig", NULL, FLAG_STRING, &f.kubeconfig, NULL,
		  "kubeconfig file (default: $KUBECONFIG, merged as kubectl does, else "
		  "~/.kube/config)", false },
		{ "context", NULL, FLAG_STRING, &f.context, NULL,
		  "kubeconfig context (default: its current-context)", false },
		{ "namespace", "NRBC_NAMESPACE", FLAG_STRING, &f.namespace, "nrbc",
		  "namespace nrbc is installed in", false },
		{ "key", NULL, FLAG_STRING, &f.key, NULL,
		  "a public key file (or a private key with its .pub beside it): print its "
		  "identity and only its row", false },
		{ "log-level", NULL, FLAG_STRING, &f.log_level, "warn", "error, warn, info, debug",
		  false },
	};
	size_t n = sizeof(flags) / sizeof(flags[0]);
	enum flags_result fr;
	enum log_level level;
	int rc;

	fr = flags_parse(flags, n, argc, argv, "usage",
	    "what each client identity used: sessions, builder time, bytes");
	if (fr != FLAGS_OK) {
		flags_free(flags, n);
		return fr == FLAGS_HELP ? 0 : 2;
	}
	if (log_level_parse(f.log_level, &level) < 0) {
		fprintf(stderr, "nrbc usage: bad --log-level\n");
		flags_free(flags, n);
		return 2;
	}
	log_init("usage", level, LOG_FORMAT_TEXT);
	rc = run(&f);
	flags_free(flags, n);
	return rc;
}
