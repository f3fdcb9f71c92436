#include "key_identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"

int key_identity_of(ssh_key pubkey, char out[KEY_IDENTITY_LEN + 1])
{
	unsigned char *hash = NULL;
	size_t hlen = 0;

	if (ssh_get_publickey_hash(pubkey, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) < 0 ||
	    hlen * 2 < KEY_IDENTITY_LEN) {
		ssh_clean_pubkey_hash(&hash);
		return -1;
	}
	for (int i = 0; i < KEY_IDENTITY_LEN / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", hash[i]);
	out[KEY_IDENTITY_LEN] = '\0';
	ssh_clean_pubkey_hash(&hash);
	return 0;
}

int key_identity_of_file(const char *path, char out[KEY_IDENTITY_LEN + 1], char **err)
{
	ssh_key key = NULL;
	char *pub = NULL;
	int rc = -1;

	if (ssh_pki_import_pubkey_file(path, &key) != SSH_OK) {
		/* A private key: its public half beside it. */
		pub = str_printf("%s.pub", path);
		if (!pub || access(pub, R_OK) != 0 ||
		    ssh_pki_import_pubkey_file(pub, &key) != SSH_OK) {
			*err = str_printf("%s: not a readable public key (\"type base64 comment\"), "
			    "nor a private key with a readable %s.pub", path, path);
			goto out;
		}
	}
	if (key_identity_of(key, out) < 0) {
		*err = str_printf("%s: cannot hash the key", path);
		goto out;
	}
	rc = 0;
out:
	ssh_key_free(key);
	free(pub);
	return rc;
}
