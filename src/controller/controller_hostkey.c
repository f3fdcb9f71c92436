#include "controller_hostkey.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "buf.h"
#include "json_field.h"

#define KEY_TYPE "ecdsa-sha2-nistp256"
#define KEY_CURVE "nistp256"
/* An uncompressed P-256 point: 0x04, x, y. */
#define POINT_LEN 65

static size_t put_string(unsigned char *out, const void *s, size_t n)
{
	out[0] = (unsigned char)(n >> 24);
	out[1] = (unsigned char)(n >> 16);
	out[2] = (unsigned char)(n >> 8);
	out[3] = (unsigned char)n;
	memcpy(out + 4, s, n);
	return 4 + n;
}

/* RFC 5656 wire form: string type, string curve, string Q. */
static char *public_line(EVP_PKEY *pkey)
{
	unsigned char point[POINT_LEN];
	unsigned char blob[4 + sizeof(KEY_TYPE) + 4 + sizeof(KEY_CURVE) + 4 + POINT_LEN];
	size_t point_len = 0, n = 0;
	char *b64, *line;

	if (!EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, point,
	    sizeof(point), &point_len) || point_len != POINT_LEN || point[0] != 0x04)
		return NULL;
	n += put_string(blob + n, KEY_TYPE, strlen(KEY_TYPE));
	n += put_string(blob + n, KEY_CURVE, strlen(KEY_CURVE));
	n += put_string(blob + n, point, point_len);
	b64 = base64_encode(blob, n);
	if (!b64)
		return NULL;
	line = str_printf("%s %s", KEY_TYPE, b64);
	free(b64);
	return line;
}

static char *private_pem(EVP_PKEY *pkey)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL, *out = NULL;
	long n;

	if (!bio)
		return NULL;
	/* The traditional SEC1 form: what ssh-keygen -m PEM writes for ECDSA. */
	if (PEM_write_bio_PrivateKey_traditional(bio, pkey, NULL, NULL, 0, NULL, NULL) == 1) {
		n = BIO_get_mem_data(bio, &data);
		if (n > 0 && (out = malloc((size_t)n + 1))) {
			memcpy(out, data, (size_t)n);
			out[n] = '\0';
		}
	}
	BIO_free(bio);
	return out;
}

int controller_hostkey_generate(struct controller_hostkey *k)
{
	EVP_PKEY *pkey = EVP_EC_gen("P-256");

	k->private_pem = NULL;
	k->public_line = NULL;
	if (!pkey)
		return -1;
	k->private_pem = private_pem(pkey);
	k->public_line = public_line(pkey);
	EVP_PKEY_free(pkey);
	if (!k->private_pem || !k->public_line) {
		controller_hostkey_finish(k);
		return -1;
	}
	return 0;
}

void controller_hostkey_finish(struct controller_hostkey *k)
{
	if (!k)
		return;
	if (k->private_pem)
		OPENSSL_cleanse(k->private_pem, strlen(k->private_pem));
	free(k->private_pem);
	free(k->public_line);
	k->private_pem = NULL;
	k->public_line = NULL;
}

json_t *controller_hostkey_secret(const char *ns, const char *name, const json_t *owner,
    const char *owner_kind, const struct controller_hostkey *k)
{
	const json_t *meta = json_object_get(owner, "metadata");
	const char *owner_name = json_field_str(meta, "name");
	const char *owner_uid = json_field_str(meta, "uid");
	char *b64;
	json_t *secret;

	if (!*owner_name || !*owner_uid || !k->private_pem)
		return NULL;
	b64 = base64_encode(k->private_pem, strlen(k->private_pem));
	if (!b64)
		return NULL;
	secret = json_pack("{s:s,s:s,s:{s:s,s:s,s:{s:s},s:[{s:s,s:s,s:s,s:s,s:b,s:b}]},"
	                   "s:s,s:{s:s}}",
	    "apiVersion", "v1", "kind", "Secret",
	    "metadata", "name", name, "namespace", ns,
	    "labels", "app.kubernetes.io/managed-by", "nrbc-controller",
	    "ownerReferences", "apiVersion", "nix.io/v1alpha1", "kind", owner_kind,
	    "name", owner_name, "uid", owner_uid, "controller", 1, "blockOwnerDeletion", 1,
	    "type", "Opaque",
	    "data", "host-key", b64);
	OPENSSL_cleanse(b64, strlen(b64));
	free(b64);
	return secret;
}

char *controller_hostkey_secret_name(const char *pod_name)
{
	return str_printf("%s-host-key", pod_name);
}
