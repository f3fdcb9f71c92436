#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base64.h"
#include "log.h"
#include "proxy/proxy_keys.h"

/* Test-only keys, generated with ssh-keygen for these tests. */
static const char key_a_private[] =
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACCwVXhLOZl3/q9tNyd5VfKLb/SqRJ8MnJDVMRYyjosM7wAAAJD1ZmzP9WZs\n"
    "zwAAAAtzc2gtZWQyNTUxOQAAACCwVXhLOZl3/q9tNyd5VfKLb/SqRJ8MnJDVMRYyjosM7w\n"
    "AAAEDbkXCmLWPlM/Lpw/ZP3JO9s3NSl2XVQJx8C+06XeVwsLBVeEs5mXf+r203J3lV8otv\n"
    "9KpEnwyckNUxFjKOiwzvAAAABnRlc3QtYQECAwQFBgc=\n"
    "-----END OPENSSH PRIVATE KEY-----\n";
#define KEY_A "AAAAC3NzaC1lZDI1NTE5AAAAILBVeEs5mXf+r203J3lV8otv9KpEnwyckNUxFjKOiwzv"
#define KEY_B "AAAAC3NzaC1lZDI1NTE5AAAAIIl3Hoa6s99JU++qG/c5AY1ALEyQZEz5AqFeBV5XrqWh"
#define KEY_EC "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNeWbkCEDL1oM1yuyGbk0z3po46XdDqgCxE2ZSvLirBY5Trje53N9KPhdPJEJTgYYrUHkFrBuaSx5oWBMmKEr4c="

static struct proxy_key_texts texts(const char *host, const char *auth, const char *priv,
    const char *pub)
{
	struct proxy_key_texts t = {
		.host_key = (char *)host,
		.authorized_keys = (char *)auth,
		.private_key = (char *)priv,
		.public_key = (char *)pub,
	};
	return t;
}

static ssh_key pubkey(const char *b64, enum ssh_keytypes_e type)
{
	ssh_key k = NULL;

	assert_int_equal(ssh_pki_import_pubkey_base64(b64, type, &k), SSH_OK);
	return k;
}

static void test_full_set(void **state)
{
	struct proxy_key_texts t = texts(key_a_private,
	    "ssh-ed25519 " KEY_B " bob\necdsa-sha2-nistp256 " KEY_EC " eve\n",
	    key_a_private, "ssh-ed25519 " KEY_A " test-a\n");
	char *err = NULL;
	struct proxy_keys *k = proxy_keys_create(&t, &err);
	const unsigned char *blob;
	const char *type, *comment = NULL, *text;
	size_t len, expected_len;
	char *expected = base64_decode(KEY_A, strlen(KEY_A), &expected_len);
	ssh_key b, a, ec;

	assert_null(err);
	assert_non_null(k);
	assert_false(proxy_keys_host_key_is_ephemeral(k));
	assert_non_null(proxy_keys_host_key(k));
	assert_memory_equal(proxy_keys_host_fingerprint(k), "SHA256:", 7);
	blob = proxy_keys_builder_host_key(k, &len, &type);
	assert_non_null(blob);
	assert_string_equal(type, "ssh-ed25519");
	assert_int_equal(len, expected_len);
	assert_memory_equal(blob, expected, len);
	text = proxy_keys_upstream_public(k, &len);
	assert_non_null(strstr(text, "ssh-ed25519 " KEY_A " "));
	text = proxy_keys_upstream_private(k, &len);
	assert_int_equal(len, strlen(key_a_private));
	assert_int_equal(proxy_keys_client_count(k), 2);
	b = pubkey(KEY_B, SSH_KEYTYPE_ED25519);
	a = pubkey(KEY_A, SSH_KEYTYPE_ED25519);
	ec = pubkey(KEY_EC, SSH_KEYTYPE_ECDSA_P256);
	assert_int_equal(proxy_keys_find_client(k, b, &comment), 0);
	assert_string_equal(comment, "bob");
	assert_int_equal(proxy_keys_find_client(k, ec, &comment), 1);
	assert_string_equal(comment, "eve");
	assert_int_equal(proxy_keys_find_client(k, a, NULL), -1);
	ssh_key_free(a);
	ssh_key_free(b);
	ssh_key_free(ec);
	free(expected);
	proxy_keys_destroy(k);
}

static void expect_error(struct proxy_key_texts t, const char *what)
{
	char *err = NULL;
	struct proxy_keys *k = proxy_keys_create(&t, &err);

	assert_null(k);
	assert_non_null(err);
	if (!strstr(err, what))
		fail_msg("error \"%s\" does not mention \"%s\"", err, what);
	free(err);
}

static void test_refusals(void **state)
{
	expect_error(texts(key_a_private, NULL, key_a_private, NULL), "anonymous access");
	expect_error(texts(key_a_private, "# nobody\n", key_a_private, NULL), "no usable key");
	expect_error(texts(key_a_private, "ssh-ed25519 " KEY_B "\n", NULL, NULL), "no private key");
	expect_error(texts(key_a_private, "ssh-ed25519 " KEY_B "\n", key_a_private,
	    "ssh-ed25519 " KEY_B " wrong\n"), "does not belong");
	expect_error(texts("garbage", "ssh-ed25519 " KEY_B "\n", key_a_private, NULL),
	    "host key");
	expect_error(texts(key_a_private, "ssh-ed25519 " KEY_B "\n", "garbage", NULL),
	    "private key");
}

static void test_ephemeral_host_key(void **state)
{
	struct proxy_key_texts t = texts(NULL, "ssh-ed25519 " KEY_B "\n", key_a_private, NULL);
	char *err = NULL;
	struct proxy_keys *k = proxy_keys_create(&t, &err);
	size_t len;
	const char *type;

	assert_non_null(k);
	assert_true(proxy_keys_host_key_is_ephemeral(k));
	assert_null(proxy_keys_builder_host_key(k, &len, &type));
	assert_int_equal(proxy_keys_set_builder_host_key(k, "ssh-ed25519 " KEY_A " b\n", &err), 0);
	assert_non_null(proxy_keys_builder_host_key(k, &len, &type));
	assert_string_equal(type, "ssh-ed25519");
	assert_int_equal(proxy_keys_set_builder_host_key(k, "nonsense\n", &err), -1);
	free(err);
	proxy_keys_destroy(k);
}

/* A builder's own host key, as the request's status carries it. */
static void test_parse_host_public(void **state)
{
	unsigned char *blob = NULL;
	size_t len = 0;
	char *type = NULL, *err = NULL;

	assert_int_equal(proxy_keys_parse_host_public("ssh-ed25519 " KEY_A, &blob, &len, &type,
	    &err), 0);
	assert_string_equal(type, "ssh-ed25519");
	assert_int_equal(len, 51); /* string type (4+11), string key (4+32) */
	assert_memory_equal(blob + 4, "ssh-ed25519", 11);
	free(blob);
	free(type);
	assert_int_equal(proxy_keys_parse_host_public("ssh-ed25519 " KEY_A "\nssh-ed25519 "
	    KEY_B "\n", &blob, &len, &type, &err), -1);
	assert_non_null(strstr(err, "exactly one"));
	free(err);
	assert_int_equal(proxy_keys_parse_host_public("ecdsa-sha2-nistp256", &blob, &len, &type,
	    &err), -1);
	free(err);
	assert_int_equal(proxy_keys_parse_host_public("", &blob, &len, &type, &err), -1);
	free(err);
}

static void test_load_files(void **state)
{
	char dir[] = "/tmp/nrbc-keys-XXXXXX";
	char path[128], pub[128], auth[128];
	struct proxy_key_texts t;
	char *err = NULL;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/id", dir);
	snprintf(pub, sizeof(pub), "%s/id.pub", dir);
	snprintf(auth, sizeof(auth), "%s/auth", dir);
	assert_non_null(f = fopen(path, "w"));
	fputs(key_a_private, f);
	fclose(f);
	assert_non_null(f = fopen(pub, "w"));
	fputs("ssh-ed25519 " KEY_A " test-a\n", f);
	fclose(f);
	assert_non_null(f = fopen(auth, "w"));
	fputs("ssh-ed25519 " KEY_B "\n", f);
	fclose(f);
	assert_int_equal(proxy_keys_load_files(path, auth, path, &t, &err), 0);
	assert_string_equal(t.host_key, key_a_private);
	assert_non_null(t.public_key);
	assert_non_null(t.authorized_keys);
	proxy_key_texts_finish(&t);
	assert_int_equal(proxy_keys_load_files("/nonexistent/x", auth, path, &t, &err), -1);
	assert_non_null(strstr(err, "/nonexistent/x"));
	free(err);
	unlink(path);
	unlink(pub);
	unlink(auth);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_set),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_ephemeral_host_key),
		cmocka_unit_test(test_parse_host_public),
		cmocka_unit_test(test_load_files),
	};
	log_init("test", LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
