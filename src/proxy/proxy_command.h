/* Which exec command lines the proxy passes on to a builder. By default only
 * what Nix sends: "nix-store --serve", "nix-store --serve --write" (ssh://)
 * and "nix-daemon --stdio" (ssh-ng://); the program may also be named by an
 * absolute path in /nix/var/nix/profiles/default/bin/ or /usr/bin/ (a
 * client's remote-program), and "--store daemon" or "--store auto" may
 * follow (a client's remote-store: the builder's own daemon; any other store
 * is refused). A command is compared word by word after splitting on blanks,
 * so spacing does not matter but nothing else may differ: no other paths, no
 * extra arguments, no shell syntax. Pure. */
#ifndef NRBC_PROXY_COMMAND_H
#define NRBC_PROXY_COMMAND_H

#include <stdbool.h>
#include <stddef.h>

#define PROXY_COMMAND_MAX_LEN 4096
#define PROXY_COMMAND_MAX_WORDS 32
#define PROXY_COMMAND_MAX_EXTRA 32

struct proxy_command_policy;

/*
 * extra: NULL, or a comma-separated list of further command lines to allow
 * exactly (e.g. "nix-store --version,nix --version"). allow_any lets every
 * command through: for tests and benchmarks only. NULL with *err (heap) when
 * extra is malformed.
 */
struct proxy_command_policy *proxy_command_policy_create(const char *extra, bool allow_any,
    char **err);
void proxy_command_policy_destroy(struct proxy_command_policy *p);

enum proxy_command_verdict {
	PROXY_COMMAND_ALLOWED,
	PROXY_COMMAND_DENIED,    /* well-formed, not on the list */
	PROXY_COMMAND_DENIED_STORE, /* Nix's command, with a --store not the builder's own */
	PROXY_COMMAND_MALFORMED, /* empty, too long, NUL or control bytes */
};

/* cmd is len bytes (SSH strings may hold NULs). */
enum proxy_command_verdict proxy_command_check(const struct proxy_command_policy *p,
    const char *cmd, size_t len);

/* Splits on blanks into at most max words, each NUL-terminated inside out
 * (out_size bytes). Returns the word count, or -1 when it does not fit. */
int proxy_command_split(const char *cmd, size_t len, char *out, size_t out_size,
    const char **words, int max);

/* One line for the Nix user: why their command was refused. Static text. */
const char *proxy_command_refusal(enum proxy_command_verdict v);

#endif
