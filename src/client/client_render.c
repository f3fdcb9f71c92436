#include "client_render.h"

#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "buf.h"

char *client_render_host_key(const char *key)
{
	size_t type_len, blob_len;
	const char *blob, *nl;

	while (*key == ' ' || *key == '\t')
		key++;
	type_len = strcspn(key, " \t\r\n");
	if (type_len == 0 || key[type_len] != ' ')
		return NULL;
	blob = key + type_len + 1;
	while (*blob == ' ')
		blob++;
	blob_len = strcspn(blob, " \t\r\n");
	if (blob_len == 0 || strspn(blob, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789+/=") < blob_len)
		return NULL;
	/* One line: anything on a further line would be a second entry. */
	nl = strchr(blob + blob_len, '\n');
	if (nl && nl[strspn(nl, " \t\r\n")] != '\0')
		return NULL;
	for (const char *p = key; p < key + type_len; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		    *p == '@' || *p == '.'))
			return NULL;
	return str_printf("%.*s %.*s", (int)type_len, key, (int)blob_len, blob);
}

/* What Nix pins as a machine's publicHostKey. */
static char *pinned_host_key(const struct client_facts *f)
{
	char *key, *b64;

	if (f->port != 22)
		return strdup("");
	key = client_render_host_key(f->host_key);
	if (!key)
		return NULL;
	/* Nix wants the whole known_hosts key line, base64-encoded. */
	b64 = base64_encode(key, strlen(key));
	free(key);
	return b64;
}

int client_render_machines(struct buf *b, const struct client_facts *f,
    const struct client_class_list *l, const char *identity, client_render_machine_fn machine)
{
	char *b64 = pinned_host_key(f), *features;
	int rc = -1;

	if (!b64)
		return -1;
	for (size_t i = 0; i < l->n; i++) {
		features = client_class_features(&l->items[i]);
		rc = features ? machine(b, f, &l->items[i], features, identity, b64) : -1;
		free(features);
		if (rc < 0)
			break;
	}
	free(b64);
	return l->n ? rc : 0;
}

static const char *or_dash(const char *s)
{
	return s && s[0] ? s : "-";
}

static int builders_entry(struct buf *b, const struct client_facts *f,
    const struct client_class *c, const char *features, const char *identity,
    const char *b64)
{
	bool port = f->uri_port && f->port != 22, v6 = strchr(f->address, ':') != NULL;

	if (buf_printf(b, "%sssh-ng://%s@%s%s%s", b->len ? " ; " : "", c->name,
	    port && v6 ? "[" : "", f->address, port && v6 ? "]" : "") < 0 ||
	    (port && buf_printf(b, ":%ld", f->port) < 0))
		return -1;
	return buf_printf(b, " %s %s %ld %ld %s %s %s", c->systems, identity,
	    client_class_max_jobs(c), c->speed_factor, or_dash(features), or_dash(c->mandatory),
	    or_dash(b64));
}

char *client_render_builders(const struct client_facts *f, const struct client_class_list *l,
    const char *identity)
{
	struct buf b;

	buf_init(&b, 1 << 20);
	if (buf_append(&b, "", 0) < 0 ||
	    client_render_machines(&b, f, l, identity, builders_entry) < 0) {
		buf_finish(&b);
		return NULL;
	}
	return buf_steal(&b);
}

char *client_render_known_hosts_host(const struct client_facts *f)
{
	if (f->port == 22)
		return strdup(f->address);
	return str_printf("[%s]:%ld", f->address, f->port);
}

char *client_render_known_hosts_line(const struct client_facts *f)
{
	char *host = client_render_known_hosts_host(f), *key = client_render_host_key(f->host_key);
	char *out = NULL;

	if (host && key)
		out = str_printf("%s %s", host, key);
	free(host);
	free(key);
	return out;
}

char *client_render_ssh_config(const struct client_facts *f, const char *identity,
    const char *known_hosts_file)
{
	/* No ControlMaster: each SSH connection is one NixBuildRequest and
	 * holds a builder slot while it lives, so a persisted master would
	 * keep a slot busy after Nix is done; Nix's legacy ssh:// store runs
	 * its own master for the length of a build anyway. Keepalives make a
	 * dead proxy visible instead of a hung build. */
	return str_printf(
	    "Host %s\n"
	    "  HostName %s\n"
	    "  Port %ld\n"
	    "  User %s\n"
	    "  IdentityFile %s\n"
	    "  IdentitiesOnly yes\n"
	    "  UserKnownHostsFile %s\n"
	    "  StrictHostKeyChecking yes\n"
	    "  ServerAliveInterval 30\n"
	    "  ServerAliveCountMax 4\n",
	    f->address, f->address, f->port, f->user, identity, known_hosts_file);
}
