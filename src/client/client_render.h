/* What a Nix client needs, rendered as text: the nix.conf settings, the
 * known_hosts line and the ssh_config block for the proxy. Pure functions
 * over the facts read from the cluster, so they are unit-tested. */
#ifndef NRBC_CLIENT_RENDER_H
#define NRBC_CLIENT_RENDER_H

#include <stdbool.h>

#include "client_class.h"

/* What the cluster publishes (see client_cluster.h); all strings borrowed. */
struct client_facts {
	const char *address;   /* the proxy Service's external IP or host name */
	long port;             /* its SSH port */
	const char *host_key;  /* "ssh-ed25519 AAAA... comment" */
	const char *user;      /* the user clients log in as (nixbld) */
	const char *systems;   /* "x86_64-linux" */
	const char *features;  /* supported features, "" or NULL for none */
	long slots;            /* the controller's --builder-slots */
	long per_key;          /* its --max-builders-per-identity (builders-per-key; 1) */
	long sessions_per_key; /* the proxy's --max-sessions-per-key (sessions-per-key; 16) */
	bool uri_port;         /* the client's Nix takes a port in a store URI */
};

/* The value of nix.conf's `builders`: one entry per class, joined by
 * " ; " (Nix takes ';' or a newline between machines), each
 * "ssh-ng://CLASS@ADDRESS SYSTEMS IDENTITY MAXJOBS SPEED SUPPORTED
 * MANDATORY HOSTKEY" with MAXJOBS slots times builders per key, SUPPORTED
 * including the mandatory features and "-" for an empty field. Store URIs
 * before Nix 2.31 (Lix 2.93) take no port, so the port comes from the
 * ssh_config block; with uri_port a port other than 22 is in the URI too
 * (ADDRESS:PORT, [ADDRESS]:PORT for IPv6); the base64 host key is pinned
 * only on port 22,
 * because Nix writes it to a known_hosts file under the bare address,
 * which ssh does not consult for any other port. Heap string; NULL when
 * the host key is not one key line, or out of memory. */
char *client_render_builders(const struct client_facts *f, const struct client_class_list *l,
    const char *identity);

#include "buf.h"

/* What one machine is written as, appended to b: the class, its features
 * (client_class_features), and the pinned host key ("" when none). */
typedef int (*client_render_machine_fn)(struct buf *b, const struct client_facts *f,
    const struct client_class *c, const char *features, const char *identity,
    const char *host_key_b64);

/* Runs machine for each class of l, in order, on b: the one loop of the
 * builders value and the NixOS module. The host key Nix pins is the base64
 * of the host key's "TYPE BASE64" on port 22, "" on any other port. 0, or
 * -1 when the host key is not one key line, out of memory or machine
 * failed. */
int client_render_machines(struct buf *b, const struct client_facts *f,
    const struct client_class_list *l, const char *identity, client_render_machine_fn machine);

/* The known_hosts host field: "ADDRESS" on port 22, else "[ADDRESS]:PORT". */
char *client_render_known_hosts_host(const struct client_facts *f);
/* "HOST KEYTYPE KEY" (the key's comment dropped), no newline. */
char *client_render_known_hosts_line(const struct client_facts *f);

/* An ssh_config block, "Host ADDRESS" with HostName, Port, User,
 * IdentityFile, IdentitiesOnly, UserKnownHostsFile and keepalives,
 * newline-terminated. */
char *client_render_ssh_config(const struct client_facts *f, const char *identity,
    const char *known_hosts_file);

/* A host key's "TYPE BASE64" without comment, or NULL when it is not one
 * line of that shape. Heap string. */
char *client_render_host_key(const char *key);

#endif
