/* nrbc client-config: read the facts and the classes (client_cluster,
 * client_class), render the lines (client_render, or client_nixos for a
 * NixOS module), print them or edit the files (client_edit), and with
 * --check connect through the proxy once per class (client_check). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "client.h"
#include "client_check.h"
#include "client_cluster.h"
#include "client_edit.h"
#include "client_nix_version.h"
#include "client_nixos.h"
#include "client_render.h"
#include "flags.h"
#include "kube/kube_config.h"
#include "log.h"

struct client_flags {
	char *kubeconfig;
	char *context;
	char *namespace;
	char *service;
	char *config_map;
	char *host_key_config_map;
	char *identity;
	char *address;
	char *etc_dir;
	bool write;
	bool system;
	bool force;
	bool check;
	bool nixos;
	char *classes;
	char *store_port;
	char *log_level;
};

/* Where the three pieces go: the user's files or the system's. */
struct client_paths {
	char *nix_conf;
	char *known_hosts;
	char *ssh_config;
};

/* The rendered pieces. */
struct client_output {
	char *builders;         /* the builders value, or with --nixos the module */
	char *known_hosts_line;
	char *ssh_block;
};

static const char client_summary[] =
    "Configure this machine's Nix to build on the cluster through the nrbc proxy.\n"
    "Reads (with `get` and `list` only) the proxy Service, the nrbc-client ConfigMap,\n"
    "the published host key and the NixBuilderClasses, then prints the nix.conf\n"
    "settings, the known_hosts entry and an ssh_config block; --write puts them into\n"
    "your files (--system: /etc), never replacing a different entry without --force;\n"
    "--nixos prints a NixOS / nix-darwin module instead; --check connects once per\n"
    "class.\n"
    "\n"
    "`builders` gets one machine per class, reached by the class's name as the SSH\n"
    "user: first the default class (the ConfigMap's user, nixbld), then each\n"
    "NixBuilderClass with its systems, features and speedFactor. maxJobs is slots x\n"
    "builders per key (the ConfigMap's builder-slots x builders-per-key for the\n"
    "default class, a class's slots x maxBuildersPerIdentity), so Nix spreads a wide\n"
    "build over that many builders. The proxy's --max-sessions-per-key (default 16)\n"
    "bounds one key's sessions over all classes: keep the sum of maxJobs within it\n"
    "(a warning says when it exceeds the ConfigMap's sessions-per-key), or Nix's\n"
    "extra sessions are refused. A key the proxy allows only some classes\n"
    "(authorized_keys nrbc-classes=\"big,arm\") needs --classes: `--classes nixbld,big`\n"
    "writes the default class and big, `--classes big` only big.";

static void paths_finish(struct client_paths *p)
{
	free(p->nix_conf);
	free(p->known_hosts);
	free(p->ssh_config);
}

static void output_finish(struct client_output *o)
{
	free(o->builders);
	free(o->known_hosts_line);
	free(o->ssh_block);
}

static int paths_init(struct client_paths *p, const struct client_flags *f)
{
	const char *home = getenv("HOME"), *xdg = getenv("XDG_CONFIG_HOME");

	memset(p, 0, sizeof(*p));
	if (f->system) {
		p->nix_conf = str_printf("%s/nix/nix.conf", f->etc_dir);
		p->known_hosts = str_printf("%s/ssh/ssh_known_hosts", f->etc_dir);
		p->ssh_config = str_printf("%s/ssh/ssh_config.d/nrbc.conf", f->etc_dir);
	} else {
		if (!home || !home[0]) {
			fprintf(stderr, "nrbc client-config: HOME is not set (or use --system)\n");
			return -1;
		}
		p->nix_conf = xdg && xdg[0] ? str_printf("%s/nix/nix.conf", xdg) :
		    str_printf("%s/.config/nix/nix.conf", home);
		p->known_hosts = str_printf("%s/.ssh/known_hosts", home);
		p->ssh_config = str_printf("%s/.ssh/config", home);
	}
	if (!p->nix_conf || !p->known_hosts || !p->ssh_config) {
		paths_finish(p);
		fprintf(stderr, "nrbc client-config: out of memory\n");
		return -1;
	}
	return 0;
}

/* --address HOST or HOST:PORT: where this machine reaches the proxy, when
 * the Service has no external address it can use. Splits in place. */
static int parse_address(char *address, long *port)
{
	char *colon = strrchr(address, ':');

	*port = 0;
	if (colon && strchr(address, ':') != colon)
		colon = NULL; /* a bare IPv6 address */
	if (colon) {
		if (flags_parse_long(colon + 1, port) < 0 || *port < 1 || *port > 65535) {
			fprintf(stderr, "nrbc client-config: --address %s: bad port\n", address);
			return -1;
		}
		*colon = '\0';
	}
	if (!address[0] || strpbrk(address, " \t\n@/[]")) {
		fprintf(stderr, "nrbc client-config: --address: not a host\n");
		return -1;
	}
	return 0;
}

static int render(const struct client_facts *facts, const struct client_class_list *classes,
    bool nixos, const char *identity, const char *known_hosts_path, struct client_output *o)
{
	memset(o, 0, sizeof(*o));
	o->builders = nixos ? client_nixos_render(facts, classes, identity) :
	    client_render_builders(facts, classes, identity);
	o->known_hosts_line = client_render_known_hosts_line(facts);
	o->ssh_block = client_render_ssh_config(facts, identity, known_hosts_path);
	if (!o->builders || !o->known_hosts_line || !o->ssh_block) {
		fprintf(stderr, "nrbc client-config: the published host key \"%.80s\" is not one "
		    "OpenSSH public key line\n", facts->host_key);
		output_finish(o);
		return -1;
	}
	return 0;
}

static void print_nixos(const struct client_output *o)
{
	printf("# A NixOS / nix-darwin module: import it (prefix `{ ... }:` in a file of its "
	    "own)\n# or merge its attributes into your configuration.\n%s", o->builders);
}

static void print_all(const struct client_paths *p, const struct client_output *o)
{
	printf("# ---- %s\nbuilders = %s\nbuilders-use-substitutes = true\n", p->nix_conf,
	    o->builders);
	printf("# ---- %s\n%s\n", p->known_hosts, o->known_hosts_line);
	printf("# ---- %s\n%s", p->ssh_config, o->ssh_block);
}

/* One edit of one file: read, edit, write when changed, report. Returns
 * 0, or 1 when something was not done. */
typedef enum client_edit_result (*edit_fn)(const char *old, const void *arg, bool force,
    char **out, char **existing);

struct nix_conf_arg {
	const char *key;
	const char *value;
};

static enum client_edit_result edit_nix_conf(const char *old, const void *arg, bool force,
    char **out, char **existing)
{
	const struct nix_conf_arg *a = arg;

	return client_edit_nix_conf(old, a->key, a->value, force, out, existing);
}

static enum client_edit_result edit_known_hosts(const char *old, const void *arg, bool force,
    char **out, char **existing)
{
	return client_edit_known_hosts(old, arg, force, out, existing);
}

static enum client_edit_result edit_ssh_block(const char *old, const void *arg, bool force,
    char **out, char **existing)
{
	return client_edit_ssh_block(old, arg, force, out, existing);
}

static int edit_file(const char *path, const char *what, edit_fn fn, const void *arg,
    bool force, mode_t mode)
{
	char *old = NULL, *out = NULL, *existing = NULL, *err = NULL;
	enum client_edit_result r;
	int rc = 0;

	if (client_file_read(path, &old, &err) < 0) {
		printf("%s: %s: NOT CHANGED: %s\n", path, what, err);
		free(err);
		return 1;
	}
	r = fn(old, arg, force, &out, &existing);
	switch (r) {
	case CLIENT_EDIT_UNCHANGED:
		printf("%s: %s: already there, unchanged\n", path, what);
		break;
	case CLIENT_EDIT_ADDED:
	case CLIENT_EDIT_REPLACED:
		if (client_file_write(path, out, mode, &err) < 0) {
			printf("%s: %s: NOT CHANGED: %s\n", path, what, err);
			rc = 1;
			break;
		}
		printf("%s: %s: %s\n", path, what, client_edit_result_name(r));
		break;
	case CLIENT_EDIT_CONFLICT:
		printf("%s: %s: NOT CHANGED, a different entry is there (--force replaces it):\n"
		    "    %s\n", path, what, existing);
		rc = 1;
		break;
	case CLIENT_EDIT_ERROR:
		printf("%s: %s: NOT CHANGED: out of memory\n", path, what);
		rc = 1;
		break;
	}
	free(old);
	free(out);
	free(existing);
	free(err);
	return rc;
}

static int write_all(const struct client_paths *p, const struct client_output *o, bool force)
{
	struct nix_conf_arg builders = { "builders", o->builders };
	struct nix_conf_arg subst = { "builders-use-substitutes", "true" };
	int failed = 0;

	failed |= edit_file(p->nix_conf, "builders", edit_nix_conf, &builders, force, 0644);
	failed |= edit_file(p->nix_conf, "builders-use-substitutes", edit_nix_conf, &subst, force,
	    0644);
	failed |= edit_file(p->known_hosts, "known_hosts entry", edit_known_hosts,
	    o->known_hosts_line, force, 0644);
	failed |= edit_file(p->ssh_config, "ssh_config block", edit_ssh_block, o->ssh_block, force,
	    0644);
	return failed;
}

static const char *check_advice(enum client_check_verdict v)
{
	switch (v) {
	case CLIENT_CHECK_OK:
		return "a builder answered: Nix can build through the proxy";
	case CLIENT_CHECK_UNREACHABLE:
		return "cannot reach the proxy: check the address, the Service and firewalls";
	case CLIENT_CHECK_HOST_KEY:
		return "the proxy's host key is not the published one: an old known_hosts entry "
		       "(rerun with --write --force), or the host-key ConfigMap does not match "
		       "the Secret's host-key";
	case CLIENT_CHECK_KEY_REFUSED:
		return "the proxy refused your key: the operator must add the public half of "
		       "--identity to the Secret's authorized-keys";
	case CLIENT_CHECK_NO_BUILDER:
		return "logged in, but no builder served the session: see the proxy's message "
		       "above and `kubectl -n nrbc get nbr,nbd,pods`";
	case CLIENT_CHECK_NO_NIX:
		return "the nix command is not installed here";
	case CLIENT_CHECK_CLASS_REFUSED:
		return "your key may not use this class (its nrbc-classes= option): leave it out "
		       "with --classes, or ask the operator to allow it";
	}
	return "";
}

/* One ping as the class's user; one line saying how it went. */
static int check_class(const struct client_facts *facts, const char *name,
    const char *ssh_config)
{
	char *uri = str_printf("ssh-ng://%s@%s", name, facts->address), *output = NULL;
	enum client_check_verdict v;

	if (!uri) {
		printf("FAILED %s: out of memory\n", name);
		return 1;
	}
	fflush(stdout);
	v = client_check_run(uri, ssh_config, &output);
	if (v != CLIENT_CHECK_OK && output && output[0])
		printf("%s%s", output, output[strlen(output) - 1] == '\n' ? "" : "\n");
	if (v == CLIENT_CHECK_OK)
		printf("ok %s\n", name);
	else
		printf("FAILED %s: %s: %s\n", name, client_check_verdict_name(v), check_advice(v));
	free(output);
	free(uri);
	return v == CLIENT_CHECK_OK ? 0 : 1;
}

static int check(const struct client_facts *facts, const struct client_class_list *classes,
    const struct client_paths *p, const struct client_flags *f, const char *identity)
{
	char dir[] = "/tmp/nrbc-client-check-XXXXXX", *kh = NULL, *cfg = NULL;
	char *err = NULL, *line = NULL;
	const char *ssh_config = p->ssh_config;
	struct client_output tmp = { 0 };
	bool made = false;
	int rc = 1;

	/* Nothing written (or a NixOS module to be): check what would be, from
	 * a scratch directory. */
	if (!f->write) {
		if (!mkdtemp(dir)) {
			printf("check: cannot create a temporary directory\n");
			return 1;
		}
		made = true;
		kh = str_printf("%s/known_hosts", dir);
		cfg = str_printf("%s/ssh_config", dir);
		if (!kh || !cfg || render(facts, classes, false, identity, kh, &tmp) < 0)
			goto out;
		line = str_printf("%s\n", tmp.known_hosts_line);
		if (!line || client_file_write(kh, line, 0600, &err) < 0 ||
		    client_file_write(cfg, tmp.ssh_block, 0600, &err) < 0)
			goto out;
		ssh_config = cfg;
	}
	printf("check: nix store ping --store ssh-ng://CLASS@%s for each class (ssh -F %s)\n",
	    facts->address, ssh_config);
	rc = 0;
	for (size_t i = 0; i < classes->n; i++)
		rc |= check_class(facts, classes->items[i].name, ssh_config);
out:
	if (err) {
		printf("check: %s\n", err);
		free(err);
	}
	if (made) {
		if (kh)
			unlink(kh);
		if (cfg)
			unlink(cfg);
		rmdir(dir);
	}
	output_finish(&tmp);
	free(line);
	free(kh);
	free(cfg);
	return rc;
}

/* The classes to write: the default first, then the cluster's, cut to
 * --classes; warnings on stderr. 0, 1 (out of memory) or 2 (a bad
 * --classes). */
static int pick_classes(struct client_cluster *cc, const struct client_flags *f)
{
	const struct client_facts *facts = client_cluster_facts(cc);
	struct client_class_list *classes = client_cluster_classes(cc);
	struct client_class_defaults d = { facts->user, facts->slots, facts->per_key };
	const char *w = client_cluster_warnings(cc);
	char *err = NULL;
	long jobs;

	while (w && *w) {
		size_t n = strcspn(w, "\n");

		fprintf(stderr, "nrbc client-config: warning: %.*s\n", (int)n, w);
		w += n + (w[n] == '\n');
	}
	if (client_class_list_add_default(classes, &d, facts->systems, facts->features) < 0) {
		fprintf(stderr, "nrbc client-config: out of memory\n");
		return 1;
	}
	if (client_class_list_select(classes, f->classes, &err) < 0) {
		fprintf(stderr, "nrbc client-config: %s\n", err);
		free(err);
		return 2;
	}
	jobs = client_class_list_max_jobs(classes);
	if (jobs > facts->sessions_per_key)
		fprintf(stderr, "nrbc client-config: warning: maxJobs over the %zu builders lines "
		    "sum to %ld, more than the %ld sessions the proxy allows one key "
		    "(sessions-per-key, its --max-sessions-per-key): Nix's extra sessions will be "
		    "refused; lower slots or builders per key, or write fewer classes with "
		    "--classes\n", classes->n, jobs, facts->sessions_per_key);
	return 0;
}

/* Whether the store URIs carry the port: --store-port yes or no, or auto,
 * from the local `nix --version`. -1 on a bad flag. */
static int store_port(const struct client_flags *f, bool *uri_port)
{
	struct client_nix_version v;

	*uri_port = false;
	if (strcmp(f->store_port, "yes") == 0) {
		*uri_port = true;
	} else if (strcmp(f->store_port, "auto") == 0) {
		if (client_nix_version_local(&v) == 0) {
			*uri_port = client_nix_version_takes_port(&v);
			log_info("local nix: %s %ld.%ld.%ld: store URIs %s a port", v.lix ? "Lix" :
			    "Nix", v.major, v.minor, v.patch, *uri_port ? "take" : "take no");
		} else {
			log_info("no local nix --version: store URIs without a port");
		}
	} else if (strcmp(f->store_port, "no") != 0) {
		fprintf(stderr, "nrbc client-config: --store-port must be auto, yes or no\n");
		return -1;
	}
	return 0;
}

static int run(struct client_flags *f)
{
	struct client_cluster_names names = { f->namespace, f->service, f->config_map,
		f->host_key_config_map, NULL, 0 };
	struct kube_config *cfg;
	struct client_cluster *cc = NULL;
	struct client_class_list *classes;
	struct client_facts facts;
	struct client_paths paths;
	struct client_output out;
	char *err = NULL, *identity = NULL;
	bool uri_port;
	int rc = 1;

	if (f->address && parse_address(f->address, &names.port) < 0)
		return 2;
	if (store_port(f, &uri_port) < 0)
		return 2;
	if (f->nixos && f->write) {
		fprintf(stderr, "nrbc client-config: --nixos prints a module for your "
		    "configuration; it does not combine with --write\n");
		return 2;
	}
	names.address = f->address;
	if (paths_init(&paths, f) < 0)
		return 1;
	identity = f->identity ? strdup(f->identity) :
	    str_printf("%s/.ssh/id_ed25519", getenv("HOME") ? getenv("HOME") : "");
	if (!identity)
		goto out_paths;
	cfg = kube_config_load(f->kubeconfig, f->context, &err);
	if (!cfg) {
		fprintf(stderr, "nrbc client-config: %s\n", err);
		goto out_paths;
	}
	cc = client_cluster_fetch(cfg, &names, &err);
	if (!cc) {
		fprintf(stderr, "nrbc client-config: %s\n", err);
		goto out_cfg;
	}
	facts = *client_cluster_facts(cc);
	facts.uri_port = uri_port;
	rc = pick_classes(cc, f);
	if (rc != 0)
		goto out_cc;
	rc = 1;
	classes = client_cluster_classes(cc);
	if (access(identity, R_OK) != 0)
		fprintf(stderr, "nrbc client-config: warning: the identity %s is not readable "
		    "here; give the private key Nix should use with --identity\n", identity);
	if (render(&facts, classes, f->nixos, identity, paths.known_hosts, &out) < 0)
		goto out_cc;
	printf("# nrbc client-config: proxy %s port %ld (Service %s/%s), builder classes: %zu, "
	    "maxJobs %ld in all%s\n", facts.address, facts.port, f->namespace, f->service,
	    classes->n, client_class_list_max_jobs(classes), facts.uri_port && facts.port != 22 ?
	    "; the port in the store URIs (--store-port)" : "");
	if (f->write)
		rc = write_all(&paths, &out, f->force);
	else {
		if (f->nixos)
			print_nixos(&out);
		else
			print_all(&paths, &out);
		rc = 0;
	}
	if (f->check) {
		fflush(stdout);
		rc |= check(&facts, classes, &paths, f, identity);
	}
	output_finish(&out);
out_cc:
	client_cluster_destroy(cc);
out_cfg:
	kube_config_destroy(cfg);
out_paths:
	free(err);
	free(identity);
	paths_finish(&paths);
	return rc;
}

int client_config_main(int argc, char **argv)
{
	struct client_flags f = { 0 };
	const struct flag flags[] = {
		{ "kubeconfig", NULL, FLAG_STRING, &f.kubeconfig, NULL,
		  "kubeconfig file (default: $KUBECONFIG, merged as kubectl does, else "
		  "~/.kube/config)", false },
		{ "context", NULL, FLAG_STRING, &f.context, NULL,
		  "kubeconfig context (default: its current-context)", false },
		{ "namespace", "NRBC_NAMESPACE", FLAG_STRING, &f.namespace, "nrbc",
		  "namespace nrbc is installed in", false },
		{ "service", NULL, FLAG_STRING, &f.service, "nrbc-proxy",
		  "the proxy's Service", false },
		{ "config-map", NULL, FLAG_STRING, &f.config_map, "nrbc-client",
		  "ConfigMap with user, systems, builder-slots, supported-features, "
		  "builders-per-key, sessions-per-key", false },
		{ "host-key-config-map", NULL, FLAG_STRING, &f.host_key_config_map, "nrbc-host-key",
		  "ConfigMap whose host-key.pub is the proxy's public host key", false },
		{ "identity", NULL, FLAG_STRING, &f.identity, NULL,
		  "private key Nix logs in with (default: ~/.ssh/id_ed25519)", false },
		{ "address", NULL, FLAG_STRING, &f.address, NULL,
		  "HOST[:PORT] to reach the proxy at instead of the Service's external address",
		  false },
		{ "write", NULL, FLAG_BOOL, &f.write, "false",
		  "write the files instead of printing what they need", false },
		{ "system", NULL, FLAG_BOOL, &f.system, "false",
		  "the system's files (nix.conf, ssh_known_hosts, ssh_config.d/nrbc.conf under "
		  "--etc-dir), for the nix-daemon of a multi-user install", false },
		{ "etc-dir", NULL, FLAG_STRING, &f.etc_dir, "/etc",
		  "where --system writes (tests, chroots)", false },
		{ "force", NULL, FLAG_BOOL, &f.force, "false",
		  "replace entries that differ from what the cluster says", false },
		{ "classes", "NRBC_CLIENT_CLASSES", FLAG_STRING, &f.classes, NULL,
		  "comma-separated classes to write (default: all); the default class's user "
		  "among them keeps its line: `nixbld,big` = default + big, `big` = big only",
		  false },
		{ "nixos", NULL, FLAG_BOOL, &f.nixos, "false",
		  "print a NixOS / nix-darwin module (nix.buildMachines, programs.ssh) instead "
		  "of nix.conf lines", false },
		{ "check", NULL, FLAG_BOOL, &f.check, "false",
		  "connect through the proxy once per class written (nix store ping) and say "
		  "what works", false },
		{ "store-port", NULL, FLAG_STRING, &f.store_port, "auto",
		  "put a port other than 22 in the store URIs (ssh-ng://CLASS@HOST:PORT): yes, "
		  "no, or auto (when the local nix is Nix 2.31 / Lix 2.93 or later); the "
		  "ssh_config block is written either way", false },
		{ "log-level", NULL, FLAG_STRING, &f.log_level, "warn", "error, warn, info, debug",
		  false },
	};
	size_t n = sizeof(flags) / sizeof(flags[0]);
	enum flags_result fr;
	enum log_level level;
	int rc;

	fr = flags_parse(flags, n, argc, argv, "client-config", client_summary);
	if (fr != FLAGS_OK) {
		flags_free(flags, n);
		return fr == FLAGS_HELP ? 0 : 2;
	}
	if (log_level_parse(f.log_level, &level) < 0) {
		fprintf(stderr, "nrbc client-config: bad --log-level\n");
		flags_free(flags, n);
		return 2;
	}
	log_init("client-config", level, LOG_FORMAT_TEXT);
	rc = run(&f);
	flags_free(flags, n);
	return rc;
}
