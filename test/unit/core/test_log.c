#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

static void test_escape_keeps_printable(void **state)
{
	char out[LOG_ESCAPE_MAX];

	assert_string_equal(log_escape(out, sizeof(out), "nix-store --serve", (size_t)-1),
	    "nix-store --serve");
	assert_string_equal(log_escape(out, sizeof(out), "a\"b\\c", (size_t)-1), "a\\\"b\\\\c");
	assert_string_equal(log_escape(out, sizeof(out), NULL, 0), "");
}

static void test_escape_control_and_8bit(void **state)
{
	char out[LOG_ESCAPE_MAX];

	assert_string_equal(log_escape(out, sizeof(out), "x\ny\x1b[31m\x7f\xc3\xa9", (size_t)-1),
	    "x\\x0ay\\x1b[31m\\x7f\\xc3\\xa9");
	/* Explicit length: a NUL is escaped too. */
	assert_string_equal(log_escape(out, sizeof(out), "a\0b", 3), "a\\x00b");
}

static void test_escape_truncates_with_dots(void **state)
{
	char out[12];

	assert_string_equal(log_escape(out, sizeof(out), "0123456789abcdef", (size_t)-1),
	    "01234567...");
	assert_int_equal(strlen(out), 11);
	/* An escape is never cut in half. */
	assert_string_equal(log_escape(out, sizeof(out), "0123456\n89abcdef", (size_t)-1),
	    "0123456...");
	/* Exactly fits: no dots. */
	assert_string_equal(log_escape(out, sizeof(out), "0123456789a", (size_t)-1),
	    "0123456789a");
	assert_string_equal(log_escape(out, 3, "abcdef", (size_t)-1), "ab");
}

/* What log_info writes for msg, with stderr sent to a file. */
static char *logged(const char *msg)
{
	char path[] = "/tmp/nrbc-test-log-XXXXXX";
	int fd = mkstemp(path), saved = dup(2);
	static char out[4096];
	ssize_t n;

	assert_true(fd >= 0 && saved >= 0);
	fflush(stderr);
	dup2(fd, 2);
	log_init("test", LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	log_info("msg: %s", msg);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	n = pread(fd, out, sizeof(out) - 1, 0);
	close(fd);
	unlink(path);
	assert_true(n > 0);
	out[n] = '\0';
	return out;
}

static void test_lines_are_scrubbed(void **state)
{
	char *line = logged("a\nforged\x1b[31m \xc2\x9b \x9b caf\xc3\xa9 \xe2\x80\xa6 \xff\r");

	assert_non_null(strstr(line, "msg: a\\x0aforged\\x1b[31m \\xc2\\x9b \\x9b "
	    "caf\xc3\xa9 \xe2\x80\xa6 \\xff\\x0d\n"));
	/* One line: the only newline is the last byte. */
	assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
	line = logged("plain");
	assert_non_null(strstr(line, "msg: plain\n"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_keeps_printable),
		cmocka_unit_test(test_escape_control_and_8bit),
		cmocka_unit_test(test_escape_truncates_with_dots),
		cmocka_unit_test(test_lines_are_scrubbed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
