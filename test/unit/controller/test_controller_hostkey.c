/* A builder's own host key: a fresh pair each time, a PEM sshd loads, a
 * public line whose key is the private key's, a Secret owned by the
 * builder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "base64.h"
#include "controller/controller_hostkey.h"
#include "json_field.h"

/* The last 65 bytes of the public blob are the point; they must be the
 * private key's public point. */
static void assert_pair_matches(const struct controller_hostkey *k)
{
	const char *b64 = k->public_line + strlen("ecdsa-sha2-nistp256 ");
	size_t blob_len = 0, point_len = 0;
	unsigned char *blob = (unsigned char *)base64_decode(b64, strlen(b64), &blob_len);
	BIO *bio = BIO_new_mem_buf(k->private_pem, -1);
	EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	unsigned char point[65];

	assert_non_null(blob);
	assert_non_null(pkey);
	assert_int_equal(blob_len, 4 + 19 + 4 + 8 + 4 + 65);
	assert_memory_equal(blob + 4, "ecdsa-sha2-nistp256", 19);
	assert_memory_equal(blob + 4 + 19 + 4, "nistp256", 8);
	assert_true(EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, point,
	    sizeof(point), &point_len));
	assert_int_equal(point_len, 65);
	assert_memory_equal(blob + blob_len - 65, point, 65);
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	free(blob);
}

static void test_generate(void **state)
{
	struct controller_hostkey a, b;

	(void)state;
	assert_int_equal(controller_hostkey_generate(&a), 0);
	assert_int_equal(controller_hostkey_generate(&b), 0);
	assert_non_null(strstr(a.private_pem, "-----BEGIN EC PRIVATE KEY-----"));
	assert_int_equal(strncmp(a.public_line, "ecdsa-sha2-nistp256 AAAA", 24), 0);
	assert_string_not_equal(a.public_line, b.public_line);
	assert_string_not_equal(a.private_pem, b.private_pem);
	assert_pair_matches(&a);
	assert_pair_matches(&b);
	controller_hostkey_finish(&a);
	controller_hostkey_finish(&b);
	assert_null(a.private_pem);
	controller_hostkey_finish(&a); /* twice is fine */
}

static void test_secret(void **state)
{
	struct controller_hostkey k;
	json_t *owner = json_pack("{s:{s:s,s:s}}", "metadata", "name", "nb-1", "uid", "u-9");
	json_t *nameless = json_pack("{s:{s:s}}", "metadata", "name", "nb-1");
	json_t *s;
	const json_t *ref;
	size_t n = 0;
	char *pem;
	char *name = controller_hostkey_secret_name("nix-builder-nb-1");

	(void)state;
	assert_string_equal(name, "nix-builder-nb-1-host-key");
	assert_int_equal(controller_hostkey_generate(&k), 0);
	s = controller_hostkey_secret("ns", name, owner, "NixBuilder", &k);
	assert_non_null(s);
	assert_string_equal(json_field_str(json_object_get(s, "metadata"), "name"), name);
	assert_string_equal(json_field_str(json_object_get(s, "metadata"), "namespace"), "ns");
	ref = json_array_get(json_object_get(json_object_get(s, "metadata"), "ownerReferences"),
	    0);
	assert_string_equal(json_field_str(ref, "kind"), "NixBuilder");
	assert_string_equal(json_field_str(ref, "uid"), "u-9");
	assert_true(json_is_true(json_object_get(ref, "controller")));
	/* Only the private key: the public half is published, not kept here. */
	assert_int_equal(json_object_size(json_object_get(s, "data")), 1);
	pem = base64_decode(json_field_str(json_object_get(s, "data"), "host-key"),
	    strlen(json_field_str(json_object_get(s, "data"), "host-key")), &n);
	assert_non_null(pem);
	assert_int_equal(n, strlen(k.private_pem));
	assert_memory_equal(pem, k.private_pem, n);
	assert_null(controller_hostkey_secret("ns", name, nameless, "NixBuilder", &k));
	free(pem);
	json_decref(s);
	json_decref(owner);
	json_decref(nameless);
	free(name);
	controller_hostkey_finish(&k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_generate),
		cmocka_unit_test(test_secret),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
