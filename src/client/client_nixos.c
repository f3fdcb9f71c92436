#include "client_nixos.h"

#include <stdlib.h>
#include <string.h>

/* Where programs.ssh.knownHosts puts the key, for the ssh_config block. */
#define NIXOS_KNOWN_HOSTS "/etc/ssh/ssh_known_hosts"

int client_nixos_quote(struct buf *b, const char *s)
{
	if (buf_append(b, "\"", 1) < 0)
		return -1;
	for (; *s; s++) {
		const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '$' ? "\\$" :
		    *s == '\n' ? "\\n" : *s == '\r' ? "\\r" : *s == '\t' ? "\\t" : NULL;

		if (esc ? buf_append_str(b, esc) < 0 : buf_append(b, s, 1) < 0)
			return -1;
	}
	return buf_append(b, "\"", 1);
}

/* `key = "value";` on a line of its own, indented by indent spaces. */
static int quoted_attr(struct buf *b, int indent, const char *key, const char *value)
{
	if (buf_printf(b, "%*s%s = ", indent, "", key) < 0 || client_nixos_quote(b, value) < 0)
		return -1;
	return buf_append_str(b, ";\n");
}

/* `key = [ "a" "b" ];` from the comma-separated csv. */
static int list_attr(struct buf *b, int indent, const char *key, const char *csv)
{
	if (buf_printf(b, "%*s%s = [", indent, "", key) < 0)
		return -1;
	while (*csv) {
		size_t n = strcspn(csv, ",");
		char *item = strndup(csv, n);
		int rc;

		if (!item)
			return -1;
		rc = n ? buf_append(b, " ", 1) < 0 || client_nixos_quote(b, item) < 0 : 0;
		free(item);
		if (rc)
			return -1;
		csv += n;
		if (*csv == ',')
			csv++;
	}
	return buf_append_str(b, " ];\n");
}

static int machine(struct buf *b, const struct client_facts *f, const struct client_class *c,
    const char *features, const char *identity, const char *b64)
{
	if (buf_append_str(b, "    {\n") < 0 || quoted_attr(b, 6, "hostName", f->address) < 0 ||
	    quoted_attr(b, 6, "sshUser", c->name) < 0 ||
	    quoted_attr(b, 6, "protocol", "ssh-ng") < 0 ||
	    list_attr(b, 6, "systems", c->systems) < 0 ||
	    buf_printf(b, "      maxJobs = %ld;\n      speedFactor = %ld;\n",
	    client_class_max_jobs(c), c->speed_factor) < 0 ||
	    list_attr(b, 6, "supportedFeatures", features) < 0 ||
	    list_attr(b, 6, "mandatoryFeatures", c->mandatory) < 0 ||
	    quoted_attr(b, 6, "sshKey", identity) < 0 ||
	    (b64[0] && quoted_attr(b, 6, "publicHostKey", b64) < 0))
		return -1;
	return buf_append_str(b, "    }\n");
}

/* The proxy's host key for ssh, and on another port than 22 the block
 * that gives ssh the port (Nix's store URIs take none). */
static int ssh_settings(struct buf *b, const struct client_facts *f, const char *identity)
{
	char *host = client_render_known_hosts_host(f), *key = client_render_host_key(f->host_key);
	char *block = NULL;
	int rc = -1;

	if (!host || !key)
		goto out;
	if (buf_append_str(b, "  programs.ssh.knownHosts.nrbc = {\n    hostNames = [ ") < 0 ||
	    client_nixos_quote(b, host) < 0 || buf_append_str(b, " ];\n") < 0 ||
	    quoted_attr(b, 4, "publicKey", key) < 0 || buf_append_str(b, "  };\n") < 0)
		goto out;
	if (f->port != 22) {
		block = client_render_ssh_config(f, identity, NIXOS_KNOWN_HOSTS);
		if (!block || quoted_attr(b, 2, "programs.ssh.extraConfig", block) < 0)
			goto out;
	}
	rc = 0;
out:
	free(host);
	free(key);
	free(block);
	return rc;
}

char *client_nixos_render(const struct client_facts *f, const struct client_class_list *l,
    const char *identity)
{
	struct buf b;

	buf_init(&b, 1 << 20);
	if (buf_append_str(&b, "{\n  nix.distributedBuilds = true;\n"
	    "  nix.settings.builders-use-substitutes = true;\n  nix.buildMachines = [\n") < 0 ||
	    client_render_machines(&b, f, l, identity, machine) < 0 ||
	    buf_append_str(&b, "  ];\n") < 0 || ssh_settings(&b, f, identity) < 0 ||
	    buf_append_str(&b, "}\n") < 0) {
		buf_finish(&b);
		return NULL;
	}
	return buf_steal(&b);
}
