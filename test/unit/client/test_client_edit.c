/* client-config's file edits: add what is missing, leave what is equal,
 * never replace a different entry unless forced; and the file writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/client_edit.h"

static void test_nix_conf(void **state)
{
	char *out, *existing;

	assert_int_equal(client_edit_nix_conf(NULL, "builders", "ssh-ng://a", false, &out,
	    &existing), CLIENT_EDIT_ADDED);
	assert_string_equal(out, "builders = ssh-ng://a\n");
	free(out);
	assert_int_equal(client_edit_nix_conf("sandbox = true", "builders", "x", false, &out,
	    &existing), CLIENT_EDIT_ADDED);
	assert_string_equal(out, "sandbox = true\nbuilders = x\n");
	free(out);
	/* builders-use-substitutes is another key, not a builders line. */
	assert_int_equal(client_edit_nix_conf("builders-use-substitutes = true\n  builders =  x  \n",
	    "builders", "x", false, &out, &existing), CLIENT_EDIT_UNCHANGED);
	assert_null(out);
	assert_int_equal(client_edit_nix_conf("a = 1\nbuilders = @/etc/nix/machines\nb = 2\n",
	    "builders", "x", false, &out, &existing), CLIENT_EDIT_CONFLICT);
	assert_null(out);
	assert_string_equal(existing, "builders = @/etc/nix/machines");
	free(existing);
	assert_int_equal(client_edit_nix_conf("a = 1\nbuilders = @/etc/nix/machines\nb = 2\n",
	    "builders", "x", true, &out, &existing), CLIENT_EDIT_REPLACED);
	assert_string_equal(out, "a = 1\nbuilders = x\nb = 2\n");
	free(out);
	/* The last definition is the one Nix uses. */
	assert_int_equal(client_edit_nix_conf("builders = y\nbuilders = x\n", "builders", "x",
	    false, &out, &existing), CLIENT_EDIT_UNCHANGED);
	assert_int_equal(client_edit_nix_conf("# builders = y\n", "builders", "x", false, &out,
	    &existing), CLIENT_EDIT_ADDED);
	free(out);
}

#define LINE "[127.0.0.9]:2222 ssh-ed25519 AAAAnew"

static void test_known_hosts(void **state)
{
	char *out, *existing;

	assert_int_equal(client_edit_known_hosts(NULL, LINE, false, &out, &existing),
	    CLIENT_EDIT_ADDED);
	assert_string_equal(out, LINE "\n");
	free(out);
	assert_int_equal(client_edit_known_hosts("other ssh-rsa AAAA\n" LINE " comment\n", LINE,
	    false, &out, &existing), CLIENT_EDIT_UNCHANGED);
	/* Another key type for the host is not a conflict. */
	assert_int_equal(client_edit_known_hosts("[127.0.0.9]:2222 ssh-rsa AAAArsa\n", LINE,
	    false, &out, &existing), CLIENT_EDIT_ADDED);
	free(out);
	/* The same address on port 22 is another host. */
	assert_int_equal(client_edit_known_hosts("127.0.0.9 ssh-ed25519 AAAAold\n", LINE, false,
	    &out, &existing), CLIENT_EDIT_ADDED);
	free(out);
	assert_int_equal(client_edit_known_hosts("a ssh-rsa X\nfoo,[127.0.0.9]:2222 ssh-ed25519 "
	    "AAAAold\nb ssh-rsa Y", LINE, false, &out, &existing), CLIENT_EDIT_CONFLICT);
	assert_string_equal(existing, "foo,[127.0.0.9]:2222 ssh-ed25519 AAAAold");
	free(existing);
	assert_int_equal(client_edit_known_hosts("a ssh-rsa X\nfoo,[127.0.0.9]:2222 ssh-ed25519 "
	    "AAAAold\nb ssh-rsa Y", LINE, true, &out, &existing), CLIENT_EDIT_REPLACED);
	assert_string_equal(out, "a ssh-rsa X\nb ssh-rsa Y\n" LINE "\n");
	free(out);
}

static void test_ssh_block(void **state)
{
	const char *block = "Host h\n  Port 2\n";
	char *out, *out2, *existing;

	assert_int_equal(client_edit_ssh_block("Host *\n  User me\n", block, false, &out,
	    &existing), CLIENT_EDIT_ADDED);
	assert_string_equal(out, "# BEGIN nrbc client-config\nHost h\n  Port 2\n"
	    "# END nrbc client-config\n\nHost *\n  User me\n");
	assert_int_equal(client_edit_ssh_block(out, block, false, &out2, &existing),
	    CLIENT_EDIT_UNCHANGED);
	assert_int_equal(client_edit_ssh_block(out, "Host h\n  Port 3\n", false, &out2,
	    &existing), CLIENT_EDIT_CONFLICT);
	assert_non_null(strstr(existing, "Port 2"));
	free(existing);
	assert_int_equal(client_edit_ssh_block(out, "Host h\n  Port 3\n", true, &out2,
	    &existing), CLIENT_EDIT_REPLACED);
	assert_string_equal(out2, "# BEGIN nrbc client-config\nHost h\n  Port 3\n"
	    "# END nrbc client-config\n\nHost *\n  User me\n");
	free(out);
	free(out2);
}

static void test_files(void **state)
{
	char dir[] = "/tmp/nrbc-client-edit-XXXXXX", path[256], *text = NULL, *err = NULL;
	struct stat st;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/home/.ssh/config", dir);
	assert_int_equal(client_file_read(path, &text, &err), 0);
	assert_null(text);
	assert_int_equal(client_file_write(path, "Host x\n", 0600, &err), 0);
	assert_int_equal(client_file_read(path, &text, &err), 0);
	assert_string_equal(text, "Host x\n");
	free(text);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/home/.ssh", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	/* An existing file keeps its mode. */
	snprintf(path, sizeof(path), "%s/home/.ssh/config", dir);
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(client_file_write(path, "Host y\n", 0600, &err), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	unlink(path);
	snprintf(path, sizeof(path), "%s/home/.ssh", dir);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/home", dir);
	rmdir(path);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nix_conf),
		cmocka_unit_test(test_known_hosts),
		cmocka_unit_test(test_ssh_block),
		cmocka_unit_test(test_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
