/* A builder's own SSH host key, made by the controller. Each NixBuilder
 * gets one, so a client that is root on its builder (it is a trusted Nix
 * user there) reads a key worth nothing beyond that builder: not the
 * proxy's host key, not another builder's. ECDSA P-256 because OpenSSH's
 * sshd loads its PEM form ("EC PRIVATE KEY") as written by OpenSSL, and
 * libssh2 (built on OpenSSL) verifies it; ed25519 would need OpenSSH's own
 * private key format written by hand. */
#ifndef NRBC_CONTROLLER_HOSTKEY_H
#define NRBC_CONTROLLER_HOSTKEY_H

#include <jansson.h>

/* The key pair: private in PEM for sshd, public as one known_hosts-style
 * line ("ecdsa-sha2-nistp256 AAAA...") for the proxy to pin. */
struct controller_hostkey {
	char *private_pem;
	char *public_line;
};

/* Makes a fresh key pair into k. 0, or -1 (k left empty) on failure. */
int controller_hostkey_generate(struct controller_hostkey *k);
void controller_hostkey_finish(struct controller_hostkey *k);

/* The Secret "name" in namespace ns holding the private key under
 * "host-key", controlled by owner, a nix.io object of owner_kind (a
 * NixBuilder, or the NixBuildRequest of a request's own pod), so it goes
 * with it. New reference, NULL when out of memory or when owner lacks name
 * or uid. */
json_t *controller_hostkey_secret(const char *ns, const char *name, const json_t *owner,
    const char *owner_kind, const struct controller_hostkey *k);

/* The Secret name of a builder pod's host key: "<pod name>-host-key"
 * (pod names are at most 63 characters, Secret names may have 253). */
char *controller_hostkey_secret_name(const char *pod_name);

#endif
