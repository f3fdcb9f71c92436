/* --nixos: what client-config says as a NixOS / nix-darwin module instead
 * of nix.conf lines: nix.buildMachines with one machine per class, the
 * proxy's host key in programs.ssh.knownHosts, and on a port other than 22
 * the ssh_config block in programs.ssh.extraConfig. Pure, unit-tested; a
 * test also has nix-instantiate parse it when that is installed. */
#ifndef NRBC_CLIENT_NIXOS_H
#define NRBC_CLIENT_NIXOS_H

#include "buf.h"
#include "client_render.h"

/* The module's attribute set, "{\n  nix.distributedBuilds = true;\n ...}\n"
 * (a module as it is, or after `{ ... }:`). Heap string; NULL when the
 * host key is not one key line, or out of memory. */
char *client_nixos_render(const struct client_facts *f, const struct client_class_list *l,
    const char *identity);

/* Appends s as a Nix string literal: in quotes, with `\`, `"` and `$` (so
 * no `${` starts an interpolation) escaped, and control characters as
 * \n, \r, \t. 0, or -1 when the buffer is full. */
int client_nixos_quote(struct buf *b, const char *s);

#endif
