#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/proxy_command.h"

static enum proxy_command_verdict check(const struct proxy_command_policy *p, const char *cmd)
{
	return proxy_command_check(p, cmd, strlen(cmd));
}

static void test_default_policy(void **state)
{
	char *err = NULL;
	struct proxy_command_policy *p = proxy_command_policy_create(NULL, false, &err);

	assert_non_null(p);
	assert_int_equal(check(p, "nix-store --serve"), PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "nix-store --serve --write"), PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "  nix-store\t--serve   --write "), PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "nix-daemon --stdio"), PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "nix-daemon --stdio --store /tmp"), PROXY_COMMAND_DENIED_STORE);
	assert_int_equal(check(p, "nix-store --write --serve"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "/tmp/x/nix-store --serve"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "nix-store --serve; sh"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "nix-store --serve --write && rm -rf /"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "sh"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "nix-store"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, ""), PROXY_COMMAND_MALFORMED);
	assert_int_equal(check(p, "   "), PROXY_COMMAND_MALFORMED);
	assert_int_equal(check(p, "nix-store --serve\n"), PROXY_COMMAND_MALFORMED);
	assert_int_equal(proxy_command_check(p, "nix-store --serve\0x", 19), PROXY_COMMAND_MALFORMED);
	/* C1 controls (raw or UTF-8 encoded) and bytes that are not UTF-8. */
	assert_int_equal(check(p, "nix-store \xc2\x9b" "31m--serve"), PROXY_COMMAND_MALFORMED);
	assert_int_equal(check(p, "nix-store \x9b" "31m--serve"), PROXY_COMMAND_MALFORMED);
	assert_int_equal(check(p, "nix-store --serve \xff"), PROXY_COMMAND_MALFORMED);
	assert_int_equal(check(p, "nix-store --serve \xc0\xaf"), PROXY_COMMAND_MALFORMED);
	assert_int_equal(check(p, "nix-store --serve \xe2\x80"), PROXY_COMMAND_MALFORMED);
	/* UTF-8 text is well-formed (and then not on the list). */
	assert_int_equal(check(p, "nix-store --serve caf\xc3\xa9 \xe2\x80\xa6 \xf0\x9f\x98\x80"),
	    PROXY_COMMAND_DENIED);
	assert_non_null(strstr(proxy_command_refusal(PROXY_COMMAND_DENIED), "nix-daemon --stdio"));
	proxy_command_policy_destroy(p);
}

/* What current clients send: remote-program as an absolute path, and
 * remote-store (Nix 2.18+ on ssh-ng, shell-quoted by older clients). */
static void test_remote_program_and_store(void **state)
{
	char *err = NULL;
	struct proxy_command_policy *p = proxy_command_policy_create(NULL, false, &err);

	assert_non_null(p);
	assert_int_equal(check(p, "/nix/var/nix/profiles/default/bin/nix-daemon --stdio"),
	    PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "/nix/var/nix/profiles/default/bin/nix-store --serve --write"),
	    PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "/usr/bin/nix-store --serve"), PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "/usr/bin/nix-daemon --stdio"), PROXY_COMMAND_ALLOWED);
	/* Other directories, look-alikes and relative paths. */
	assert_int_equal(check(p, "/run/current-system/sw/bin/nix-daemon --stdio"),
	    PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "/usr/bin/../../tmp/nix-daemon --stdio"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "/usr/bin//nix-daemon --stdio"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "/usr/bin/nix-daemonx --stdio"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "/usr/bin/ --stdio"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "bin/nix-daemon --stdio"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "/usr/bin/sh --stdio"), PROXY_COMMAND_DENIED);
	/* A program with the other's arguments. */
	assert_int_equal(check(p, "nix-daemon --serve --write"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "nix-store --stdio"), PROXY_COMMAND_DENIED);

	/* The builder's own store, however the client spells it. */
	assert_int_equal(check(p, "nix-daemon --stdio --store daemon"), PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "nix-daemon --stdio --store 'daemon'"), PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "nix-daemon --stdio --store auto"), PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "nix-store --serve --write --store 'auto'"),
	    PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "/nix/var/nix/profiles/default/bin/nix-daemon --stdio --store "
	    "daemon"), PROXY_COMMAND_ALLOWED);
	/* Any other store: refused, saying why. */
	assert_int_equal(check(p, "nix-daemon --stdio --store /home/nixbld/store"),
	    PROXY_COMMAND_DENIED_STORE);
	assert_int_equal(check(p, "nix-daemon --stdio --store 'local?root=/tmp/s'"),
	    PROXY_COMMAND_DENIED_STORE);
	assert_int_equal(check(p, "nix-store --serve --store ssh://elsewhere"),
	    PROXY_COMMAND_DENIED_STORE);
	assert_int_equal(check(p, "nix-daemon --stdio --store daemon' ; sh '"),
	    PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "nix-daemon --stdio --store"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "nix-daemon --stdio --store daemon --store auto"),
	    PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "nix-daemon --store daemon --stdio"), PROXY_COMMAND_DENIED);
	assert_int_equal(check(p, "nix-daemon --stdio --store daemon --force-trusted"),
	    PROXY_COMMAND_DENIED);
	assert_non_null(strstr(proxy_command_refusal(PROXY_COMMAND_DENIED_STORE), "remote-store"));
	proxy_command_policy_destroy(p);

	/* An operator's --allow-command wins over the store refusal (found by
	 * the fuzzer). */
	p = proxy_command_policy_create("nix-daemon --stdio --store /srv/store", false, &err);
	assert_non_null(p);
	assert_int_equal(check(p, "nix-daemon --stdio --store /srv/store"), PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "nix-daemon --stdio --store /srv/other"),
	    PROXY_COMMAND_DENIED_STORE);
	assert_non_null(strstr(proxy_command_refusal(PROXY_COMMAND_DENIED),
	    "/nix/var/nix/profiles/default/bin/"));
	proxy_command_policy_destroy(p);
}

static void test_extra_and_any(void **state)
{
	char *err = NULL;
	struct proxy_command_policy *p = proxy_command_policy_create("nix-store --version, echo hi",
	    false, &err);
	char *long_cmd = malloc(PROXY_COMMAND_MAX_LEN + 2);

	assert_non_null(p);
	assert_int_equal(check(p, "nix-store --version"), PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "echo  hi"), PROXY_COMMAND_ALLOWED);
	assert_int_equal(check(p, "echo hi there"), PROXY_COMMAND_DENIED);
	proxy_command_policy_destroy(p);

	p = proxy_command_policy_create(NULL, true, &err);
	assert_non_null(p);
	assert_int_equal(check(p, "sh -c 'exit 137'"), PROXY_COMMAND_ALLOWED);
	/* Control characters stay refused even then. */
	assert_int_equal(check(p, "echo\r"), PROXY_COMMAND_MALFORMED);
	assert_non_null(long_cmd);
	memset(long_cmd, 'a', PROXY_COMMAND_MAX_LEN + 1);
	long_cmd[PROXY_COMMAND_MAX_LEN + 1] = '\0';
	assert_int_equal(check(p, long_cmd), PROXY_COMMAND_MALFORMED);
	free(long_cmd);
	proxy_command_policy_destroy(p);

	assert_null(proxy_command_policy_create("ok,,x", false, &err));
	assert_non_null(err);
	free(err);
	/* Found by the fuzzer: an allowed command that could never match. */
	assert_null(proxy_command_policy_create("a b c d e f g h i j k l m n o p q r s t u v w x y "
	    "z a b c d e f g", false, &err));
	assert_non_null(strstr(err, "more than"));
	free(err);
}

static void test_split(void **state)
{
	char out[32];
	const char *w[4];

	assert_int_equal(proxy_command_split(" a  bc\td ", 9, out, sizeof(out), w, 4), 3);
	assert_string_equal(w[0], "a");
	assert_string_equal(w[1], "bc");
	assert_string_equal(w[2], "d");
	assert_int_equal(proxy_command_split("a b c d e", 9, out, sizeof(out), w, 4), -1);
	assert_int_equal(proxy_command_split("abcdef", 6, out, 6, w, 4), -1);
	assert_int_equal(proxy_command_split("abcdef", 6, out, 7, w, 4), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_policy),
		cmocka_unit_test(test_remote_program_and_store),
		cmocka_unit_test(test_extra_and_any),
		cmocka_unit_test(test_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
