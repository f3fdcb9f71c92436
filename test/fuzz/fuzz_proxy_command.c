/*
 * libFuzzer target for the exec command policy. Checks, beyond memory
 * safety, that the default policy only ever allows a command whose words are
 * exactly those of one of the three Nix commands (the program bare or in one
 * of two directories, optionally --store naming the builder's own), and that control bytes
 * (newlines included) are never allowed, whatever the policy.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy_command.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The oracle, written apart from the policy: PROGRAM ARGS [--store STORE]. */
static const char *const programs[] = { "", "/nix/var/nix/profiles/default/bin/", "/usr/bin/" };
static const char *const nix_commands[][3] = {
	{ "nix-store", "--serve", NULL },
	{ "nix-store", "--serve", "--write" },
	{ "nix-daemon", "--stdio", NULL },
};
static const char *const stores[] = { "daemon", "auto", "'daemon'", "'auto'" };

static int is_nix_command(const char *cmd, size_t len)
{
	char out[PROXY_COMMAND_MAX_LEN + 1];
	const char *w[PROXY_COMMAND_MAX_WORDS];
	int n = proxy_command_split(cmd, len, out, sizeof(out), w, PROXY_COMMAND_MAX_WORDS);

	for (size_t i = 0; n > 0 && i < sizeof(nix_commands) / sizeof(nix_commands[0]); i++) {
		int m = nix_commands[i][2] ? 3 : 2;
		int ok = n == m || (n == m + 2 && strcmp(w[m], "--store") == 0);
		int prog = 0;

		for (size_t d = 0; ok && !prog && d < sizeof(programs) / sizeof(programs[0]); d++) {
			size_t dl = strlen(programs[d]);
			prog = strncmp(w[0], programs[d], dl) == 0 &&
			    strcmp(w[0] + dl, nix_commands[i][0]) == 0;
		}
		ok = ok && prog;
		for (int j = 1; ok && j < m; j++)
			ok = strcmp(w[j], nix_commands[i][j]) == 0;
		if (ok && n == m + 2) {
			int known = 0;
			for (size_t k = 0; k < sizeof(stores) / sizeof(stores[0]); k++)
				known = known || strcmp(w[m + 1], stores[k]) == 0;
			ok = known;
		}
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
	if (va != PROXY_COMMAND_ALLOWED && va != PROXY_COMMAND_MALFORMED)
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
