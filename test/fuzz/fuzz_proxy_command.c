/*
 * libFuzzer target for the exec command policy. Checks, beyond memory
 * safety, that the default policy only ever allows a command whose words are
 * exactly those of one of the three Nix commands, and that control bytes
 * (newlines included) are never allowed, whatever the policy.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy_command.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const nix_commands[][3] = {
	{ "nix-store", "--serve", NULL },
	{ "nix-store", "--serve", "--write" },
	{ "nix-daemon", "--stdio", NULL },
};

static int is_nix_command(const char *cmd, size_t len)
{
	char out[PROXY_COMMAND_MAX_LEN + 1];
	const char *w[PROXY_COMMAND_MAX_WORDS];
	int n = proxy_command_split(cmd, len, out, sizeof(out), w, PROXY_COMMAND_MAX_WORDS);

	for (size_t i = 0; i < sizeof(nix_commands) / sizeof(nix_commands[0]); i++) {
		int m = nix_commands[i][2] ? 3 : 2;
		int ok = n == m;
		for (int j = 0; ok && j < m; j++)
			ok = strcmp(w[j], nix_commands[i][j]) == 0;
		if (ok)
			return 1;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct proxy_command_policy *strict, *any;
	const char *cmd = (const char *)data;
	int has_control = 0;
	char *err = NULL;

	if (!strict) {
		strict = proxy_command_policy_create(NULL, false, &err);
		any = proxy_command_policy_create(NULL, true, &err);
		if (!strict || !any)
			abort();
	}
	for (size_t i = 0; i < size; i++) {
		if ((data[i] < 0x20 && data[i] != '\t') || data[i] == 0x7f)
			has_control = 1;
	}
	enum proxy_command_verdict v = proxy_command_check(strict, cmd, size);
	enum proxy_command_verdict va = proxy_command_check(any, cmd, size);

	if (v == PROXY_COMMAND_ALLOWED && (!is_nix_command(cmd, size) || has_control))
		abort();
	if (v != PROXY_COMMAND_ALLOWED && !has_control && size <= PROXY_COMMAND_MAX_LEN &&
	    is_nix_command(cmd, size))
		abort();
	if (has_control && (v != PROXY_COMMAND_MALFORMED || va != PROXY_COMMAND_MALFORMED))
		abort();
	if (va == PROXY_COMMAND_DENIED)
		abort();
	/* A policy built from the input itself allows exactly that input. */
	if (size < 256 && !has_control && !memchr(data, ',', size) &&
	    v != PROXY_COMMAND_MALFORMED) {
		char text[256];
		struct proxy_command_policy *p;

		memcpy(text, data, size);
		text[size] = '\0';
		if (strlen(text) == size && (p = proxy_command_policy_create(text, false, &err))) {
			if (proxy_command_check(p, cmd, size) != PROXY_COMMAND_ALLOWED)
				abort();
			proxy_command_policy_destroy(p);
		} else {
			free(err);
		}
	}
	return 0;
}
