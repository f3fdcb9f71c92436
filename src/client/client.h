/* nrbc client-config: configures a Nix client for the proxy, from what the
 * cluster publishes. */
#ifndef NRBC_CLIENT_H
#define NRBC_CLIENT_H

int client_config_main(int argc, char **argv);

#endif
