#include "client_nix_version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_number(const char **p, long *out)
{
	char *end;

	if (**p < '0' || **p > '9')
		return -1;
	*out = strtol(*p, &end, 10);
	*p = end;
	return 0;
}

int client_nix_version_parse(const char *text, struct client_nix_version *v)
{
	static const char nix[] = "nix (Nix) ", lix[] = "nix (Lix, like Nix) ";
	const char *p;

	memset(v, 0, sizeof(*v));
	if (strncmp(text, nix, sizeof(nix) - 1) == 0) {
		p = text + sizeof(nix) - 1;
	} else if (strncmp(text, lix, sizeof(lix) - 1) == 0) {
		p = text + sizeof(lix) - 1;
		v->lix = true;
	} else {
		return -1;
	}
	if (parse_number(&p, &v->major) < 0 || *p++ != '.' || parse_number(&p, &v->minor) < 0)
		return -1;
	if (*p == '.' && (p++, parse_number(&p, &v->patch) < 0))
		return -1;
	return 0;
}

bool client_nix_version_takes_port(const struct client_nix_version *v)
{
	long need = v->lix ? 93 : 31;

	return v->major > 2 || (v->major == 2 && v->minor >= need);
}

int client_nix_version_local(struct client_nix_version *v)
{
	char line[256] = "";
	FILE *p = popen("nix --version 2>/dev/null", "r");
	int rc;

	if (!p)
		return -1;
	if (!fgets(line, sizeof(line), p))
		line[0] = '\0';
	rc = pclose(p);
	if (rc != 0)
		return -1;
	line[strcspn(line, "\r\n")] = '\0';
	return client_nix_version_parse(line, v);
}
