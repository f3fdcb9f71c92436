/* Table-driven command-line flags with environment-variable fallback.
 * Precedence: command line, then environment, then the default. */
#ifndef NRBC_FLAGS_H
#define NRBC_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum flag_type {
	FLAG_STRING,   /* dest: char ** (heap, freed by flags_free) */
	FLAG_INT,      /* dest: long * */
	FLAG_DURATION, /* dest: uint64_t * milliseconds; "30s", "5m", "250ms", "1h"; bare = seconds */
	FLAG_BOOL,     /* dest: bool *; "--x", "--x=true|false" */
};

struct flag {
	const char *name; /* "port" is given as --port VALUE or --port=VALUE */
	const char *env;  /* NULL: no environment fallback */
	enum flag_type type;
	void *dest;
	const char *def;  /* default as text; NULL: unset (strings stay NULL) */
	const char *help;
	bool required;
};

enum flags_result {
	FLAGS_OK = 0,
	FLAGS_HELP = 1,   /* usage was printed to stdout; exit 0 */
	FLAGS_ERROR = -1, /* a message was printed to stderr; exit 2 */
};

enum flags_result flags_parse(const struct flag *flags, size_t n, int argc, char **argv,
    const char *command, const char *summary);
void flags_usage(FILE *out, const struct flag *flags, size_t n, const char *command,
    const char *summary);
void flags_free(const struct flag *flags, size_t n);

/* Exposed for tests and for values read from elsewhere. */
int flags_parse_duration(const char *s, uint64_t *ms);
int flags_parse_long(const char *s, long *out);

#endif
