/* A client's identity: the first 128 bits of the SHA-256 of its public key
 * (the key blob, as OpenSSH's SHA256 fingerprint hashes it), in hex. The
 * proxy writes it into every request; `nrbc usage --key` maps a key file to
 * it. Stable for a key, says nothing about it, short enough for a label. */
#ifndef NRBC_KEY_IDENTITY_H
#define NRBC_KEY_IDENTITY_H

#include <libssh/libssh.h>

#define KEY_IDENTITY_LEN 32

/* 0, or -1 when the key cannot be hashed. */
int key_identity_of(ssh_key pubkey, char out[KEY_IDENTITY_LEN + 1]);
/* path: a public key file ("type base64 comment"), or a private key with
 * its PATH.pub beside it. 0, or -1 with *err (heap). */
int key_identity_of_file(const char *path, char out[KEY_IDENTITY_LEN + 1], char **err);

#endif
