#include "proxy_command.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"

/*
 * What Nix clients send (Nix 2.3 to 2.32, Lix 2.93): REMOTE-PROGRAM then its
 * arguments, then "--store STORE" when the client sets remote-store (Nix
 * shell-quotes it: 'daemon'). REMOTE-PROGRAM is nix-store (ssh://) or
 * nix-daemon (ssh-ng://) unless the client sets remote-program, which users
 * of installer-made Nix set to where their own machines keep it, since a
 * non-interactive shell's PATH there lacks it.
 */
struct nix_program {
	const char *name;
	const char *const args[3]; /* one allowed argument list each */
};

static const struct nix_program nix_programs[] = {
	{ "nix-store", { "--serve", "--serve --write", NULL } },
	{ "nix-daemon", { "--stdio", NULL, NULL } },
};

/* Absolute remote-program directories accepted: the builder image has the
 * programs in both (builder/Containerfile links the first). Any other path
 * names a program the builder does not have. */
static const char *const program_dirs[] = {
	"/nix/var/nix/profiles/default/bin/",
	"/usr/bin/",
};

/* --store values that mean the builder's own nix-daemon, the only store of a
 * builder: another (a local store in a directory, say) would have the SSH
 * user build as itself, outside the daemon's build users and sandbox. */
static const char *const own_stores[] = {
	"daemon",
	"auto",
	"'daemon'",
	"'auto'",
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

struct proxy_command_policy {
	bool allow_any;
	size_t n_extra;
	char *extra[PROXY_COMMAND_MAX_EXTRA];
};

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

int proxy_command_split(const char *cmd, size_t len, char *out, size_t out_size,
    const char **words, int max)
{
	size_t i = 0, o = 0;
	int n = 0;

	while (i < len) {
		while (i < len && is_blank(cmd[i]))
			i++;
		if (i == len)
			break;
		if (n == max)
			return -1;
		words[n++] = out + o;
		while (i < len && !is_blank(cmd[i])) {
			if (o + 1 >= out_size)
				return -1;
			out[o++] = cmd[i++];
		}
		if (o >= out_size)
			return -1;
		out[o++] = '\0';
	}
	return n;
}

/* Same words in the same order. */
static bool words_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	char abuf[PROXY_COMMAND_MAX_LEN + 1], bbuf[PROXY_COMMAND_MAX_LEN + 1];
	const char *aw[PROXY_COMMAND_MAX_WORDS], *bw[PROXY_COMMAND_MAX_WORDS];
	int an, bn;

	an = proxy_command_split(a, alen, abuf, sizeof(abuf), aw, PROXY_COMMAND_MAX_WORDS);
	bn = proxy_command_split(b, blen, bbuf, sizeof(bbuf), bw, PROXY_COMMAND_MAX_WORDS);
	if (an <= 0 || an != bn)
		return false;
	for (int i = 0; i < an; i++) {
		if (strcmp(aw[i], bw[i]) != 0)
			return false;
	}
	return true;
}

/* Empty, too long, a control byte (C0, DEL, C1) or bytes that are not UTF-8:
 * such a command is never run, logged or echoed. */
static bool is_malformed(const char *cmd, size_t len)
{
	const unsigned char *p = (const unsigned char *)cmd;
	bool any = false;

	if (len == 0 || len > PROXY_COMMAND_MAX_LEN)
		return true;
	for (size_t i = 0; i < len;) {
		unsigned char c = p[i];
		size_t n = 1;

		if (c >= 0x80) {
			n = log_utf8_char_len(p + i, len - i);
			if (!n)
				return true;
		} else if ((c < 0x20 && c != '\t') || c == 0x7f) {
			return true;
		}
		if (!is_blank((char)c))
			any = true;
		i += n;
	}
	return !any;
}

struct proxy_command_policy *proxy_command_policy_create(const char *extra, bool allow_any,
    char **err)
{
	struct proxy_command_policy *p = calloc(1, sizeof(*p));
	const char *s = extra;

	*err = NULL;
	if (!p) {
		*err = str_printf("out of memory");
		return NULL;
	}
	p->allow_any = allow_any;
	while (s && *s) {
		const char *comma = strchr(s, ',');
		size_t len = comma ? (size_t)(comma - s) : strlen(s);

		char words_buf[PROXY_COMMAND_MAX_LEN + 1];
		const char *words[PROXY_COMMAND_MAX_WORDS];

		if (is_malformed(s, len)) {
			*err = str_printf("allowed command #%zu is empty, too long or has control "
			    "characters", p->n_extra + 1);
			goto bad;
		}
		/* What could never match is a configuration error, not a no-op. */
		if (proxy_command_split(s, len, words_buf, sizeof(words_buf), words,
		    PROXY_COMMAND_MAX_WORDS) < 0) {
			*err = str_printf("allowed command #%zu has more than %d words",
			    p->n_extra + 1, PROXY_COMMAND_MAX_WORDS);
			goto bad;
		}
		if (p->n_extra == PROXY_COMMAND_MAX_EXTRA) {
			*err = str_printf("more than %d allowed commands", PROXY_COMMAND_MAX_EXTRA);
			goto bad;
		}
		p->extra[p->n_extra] = strndup(s, len);
		if (!p->extra[p->n_extra]) {
			*err = str_printf("out of memory");
			goto bad;
		}
		p->n_extra++;
		s = comma ? comma + 1 : s + len;
	}
	return p;
bad:
	proxy_command_policy_destroy(p);
	return NULL;
}

void proxy_command_policy_destroy(struct proxy_command_policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_extra; i++)
		free(p->extra[i]);
	free(p);
}

/* The program of words[0], bare or in one of program_dirs; NULL if neither. */
static const struct nix_program *nix_program_of(const char *word)
{
	const char *name = word;

	if (word[0] == '/') {
		name = NULL;
		for (size_t i = 0; i < N_OF(program_dirs); i++) {
			size_t n = strlen(program_dirs[i]);

			if (strncmp(word, program_dirs[i], n) == 0) {
				name = word + n;
				break;
			}
		}
		if (!name)
			return NULL;
	}
	for (size_t i = 0; i < N_OF(nix_programs); i++) {
		if (strcmp(name, nix_programs[i].name) == 0)
			return &nix_programs[i];
	}
	return NULL;
}

/* Whether words[from..n) are exactly the words of args. */
static bool words_are(const char *const *words, int from, int n, const char *args)
{
	char buf[PROXY_COMMAND_MAX_LEN + 1];
	const char *aw[PROXY_COMMAND_MAX_WORDS];
	int an = proxy_command_split(args, strlen(args), buf, sizeof(buf), aw,
	    PROXY_COMMAND_MAX_WORDS);

	if (an < 0 || an != n - from)
		return false;
	for (int i = 0; i < an; i++) {
		if (strcmp(words[from + i], aw[i]) != 0)
			return false;
	}
	return true;
}

/* A Nix client's command line (see nix_programs): ALLOWED, DENIED_STORE
 * (right program and arguments, another store), or DENIED. */
static enum proxy_command_verdict nix_command_check(const char *cmd, size_t len)
{
	char buf[PROXY_COMMAND_MAX_LEN + 1];
	const char *words[PROXY_COMMAND_MAX_WORDS];
	const struct nix_program *prog;
	int n = proxy_command_split(cmd, len, buf, sizeof(buf), words, PROXY_COMMAND_MAX_WORDS);

	if (n < 1 || !(prog = nix_program_of(words[0])))
		return PROXY_COMMAND_DENIED;
	for (size_t a = 0; a < N_OF(prog->args) && prog->args[a]; a++) {
		if (words_are(words, 1, n, prog->args[a]))
			return PROXY_COMMAND_ALLOWED;
		if (n < 3 || strcmp(words[n - 2], "--store") != 0 ||
		    !words_are(words, 1, n - 2, prog->args[a]))
			continue;
		for (size_t i = 0; i < N_OF(own_stores); i++) {
			if (strcmp(words[n - 1], own_stores[i]) == 0)
				return PROXY_COMMAND_ALLOWED;
		}
		return PROXY_COMMAND_DENIED_STORE;
	}
	return PROXY_COMMAND_DENIED;
}

enum proxy_command_verdict proxy_command_check(const struct proxy_command_policy *p,
    const char *cmd, size_t len)
{
	enum proxy_command_verdict v;

	if (is_malformed(cmd, len))
		return PROXY_COMMAND_MALFORMED;
	if (p->allow_any)
		return PROXY_COMMAND_ALLOWED;
	v = nix_command_check(cmd, len);
	if (v == PROXY_COMMAND_ALLOWED)
		return v;
	/* An --allow-command line wins over the store refusal too. */
	for (size_t i = 0; i < p->n_extra; i++) {
		if (words_equal(cmd, len, p->extra[i], strlen(p->extra[i])))
			return PROXY_COMMAND_ALLOWED;
	}
	return v;
}

const char *proxy_command_refusal(enum proxy_command_verdict v)
{
	switch (v) {
	case PROXY_COMMAND_ALLOWED:
		return "allowed";
	case PROXY_COMMAND_DENIED:
		return "this proxy only runs the commands Nix uses for remote builds "
		       "(nix-store --serve [--write], nix-daemon --stdio; remote-program may "
		       "name them only bare or under /nix/var/nix/profiles/default/bin/ or "
		       "/usr/bin/)";
	case PROXY_COMMAND_DENIED_STORE:
		return "a builder's only store is its own nix-daemon: remote-store may be "
		       "daemon or auto, or unset";
	case PROXY_COMMAND_MALFORMED:
		return "the command is empty, too long or contains control characters";
	}
	return "refused";
}
