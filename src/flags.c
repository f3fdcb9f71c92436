#include "flags.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

int flags_parse_long(const char *s, long *out)
{
	char *end;
	long v;

	if (!s || !*s)
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

int flags_parse_duration(const char *s, uint64_t *ms)
{
	char *end;
	double v;
	double mult;

	if (!s || !*s)
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -1;
	if (*end == '\0' || strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "m") == 0)
		mult = 60000;
	else if (strcmp(end, "h") == 0)
		mult = 3600000;
	else
		return -1;
	if (v * mult > (double)UINT64_MAX / 2)
		return -1;
	*ms = (uint64_t)(v * mult);
	return 0;
}

static int flag_set(const struct flag *f, const char *value, const char *origin)
{
	switch (f->type) {
	case FLAG_STRING: {
		char **dest = f->dest;
		char *copy = strdup(value);
		if (!copy)
			return -1;
		free(*dest);
		*dest = copy;
		return 0;
	}
	case FLAG_INT:
		if (flags_parse_long(value, f->dest) == 0)
			return 0;
		fprintf(stderr, "nrbc: %s --%s: \"%s\" is not a whole number\n", origin, f->name, value);
		return -1;
	case FLAG_DURATION:
		if (flags_parse_duration(value, f->dest) == 0)
			return 0;
		fprintf(stderr, "nrbc: %s --%s: \"%s\" is not a duration (e.g. 30s, 500ms, 5m)\n",
		    origin, f->name, value);
		return -1;
	case FLAG_BOOL:
		if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0) {
			*(bool *)f->dest = true;
			return 0;
		}
		if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0) {
			*(bool *)f->dest = false;
			return 0;
		}
		fprintf(stderr, "nrbc: %s --%s: \"%s\" is not true or false\n", origin, f->name, value);
		return -1;
	}
	return -1;
}

static const struct flag *flag_find(const struct flag *flags, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n; i++) {
		if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0)
			return &flags[i];
	}
	return NULL;
}

static int flags_apply_defaults(const struct flag *flags, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct flag *f = &flags[i];
		const char *env = f->env ? getenv(f->env) : NULL;

		if (f->type == FLAG_STRING)
			*(char **)f->dest = NULL;
		if (env && *env) {
			if (flag_set(f, env, f->env) < 0)
				return -1;
		} else if (f->def) {
			if (flag_set(f, f->def, "default") < 0)
				return -1;
		}
	}
	return 0;
}

enum flags_result flags_parse(const struct flag *flags, size_t n, int argc, char **argv,
    const char *command, const char *summary)
{
	bool seen[64] = { false };

	if (n > sizeof(seen) / sizeof(seen[0]) || flags_apply_defaults(flags, n) < 0)
		return FLAGS_ERROR;
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		const char *name, *eq, *value;
		const struct flag *f;
		size_t len;

		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0 || strcmp(arg, "help") == 0) {
			flags_usage(stdout, flags, n, command, summary);
			return FLAGS_HELP;
		}
		if (strncmp(arg, "--", 2) != 0) {
			fprintf(stderr, "nrbc %s: unexpected argument \"%s\" (see --help)\n", command, arg);
			return FLAGS_ERROR;
		}
		name = arg + 2;
		eq = strchr(name, '=');
		len = eq ? (size_t)(eq - name) : strlen(name);
		f = flag_find(flags, n, name, len);
		if (!f) {
			fprintf(stderr, "nrbc %s: unknown flag \"--%.*s\" (see --help)\n", command,
			    (int)len, name);
			return FLAGS_ERROR;
		}
		if (eq)
			value = eq + 1;
		else if (f->type == FLAG_BOOL)
			value = "true";
		else if (i + 1 < argc)
			value = argv[++i];
		else {
			fprintf(stderr, "nrbc %s: flag --%s needs a value\n", command, f->name);
			return FLAGS_ERROR;
		}
		if (flag_set(f, value, "flag") < 0)
			return FLAGS_ERROR;
		seen[f - flags] = true;
	}
	for (size_t i = 0; i < n; i++) {
		const struct flag *f = &flags[i];
		if (f->required && f->type == FLAG_STRING && !*(char **)f->dest && !seen[i]) {
			fprintf(stderr, "nrbc %s: --%s is required%s%s%s\n", command, f->name,
			    f->env ? " (or set " : "", f->env ? f->env : "", f->env ? ")" : "");
			return FLAGS_ERROR;
		}
	}
	return FLAGS_OK;
}

void flags_usage(FILE *out, const struct flag *flags, size_t n, const char *command,
    const char *summary)
{
	fprintf(out, "Usage: nrbc %s [flags]\n\n%s\n\nFlags:\n", command, summary);
	for (size_t i = 0; i < n; i++) {
		const struct flag *f = &flags[i];
		fprintf(out, "  --%-22s %s", f->name, f->help);
		if (f->required)
			fputs(" (required)", out);
		else if (f->def && *f->def)
			fprintf(out, " (default %s)", f->def);
		if (f->env)
			fprintf(out, " [$%s]", f->env);
		fputc('\n', out);
	}
}

void flags_free(const struct flag *flags, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (flags[i].type == FLAG_STRING) {
			free(*(char **)flags[i].dest);
			*(char **)flags[i].dest = NULL;
		}
	}
}
