/* Which Nix the client runs, as far as its store URIs go: Nix 2.31 and
 * Lix 2.93 take a port in ssh:// and ssh-ng:// store URIs
 * (ssh-ng://nixbld@HOST:PORT); older ones take none, and reach a proxy on
 * another port than 22 only through the ssh_config block client-config
 * writes. */
#ifndef NRBC_CLIENT_NIX_VERSION_H
#define NRBC_CLIENT_NIX_VERSION_H

#include <stdbool.h>

struct client_nix_version {
	bool lix;
	long major, minor, patch;
};

/* `nix --version`'s line: "nix (Nix) 2.31.1", "nix (Lix, like Nix)
 * 2.93.0"; a suffix after the numbers (pre-releases) is ignored. 0, or -1
 * when text is not such a line. */
int client_nix_version_parse(const char *text, struct client_nix_version *v);
/* The version takes a port in a store URI. */
bool client_nix_version_takes_port(const struct client_nix_version *v);
/* Runs `nix --version` (from PATH). 0, or -1 when there is no nix or its
 * answer does not parse. */
int client_nix_version_local(struct client_nix_version *v);

#endif
