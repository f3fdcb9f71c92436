/* nrbc: elastic Nix remote builders on Kubernetes. One binary, two roles. */
#include <stdio.h>
#include <string.h>

#include "client/client.h"
#include "client/client_usage.h"
#include "controller/controller.h"
#include "nrbc_version.h"
#include "proxy/proxy.h"

static int version_main(int argc, char **argv);
static int help_main(int argc, char **argv);

static const struct command {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *summary;
} command_table[] = {
	{ "proxy", proxy_main, "SSH front door: one builder pod per Nix connection" },
	{ "controller", controller_main, "turn NixBuildRequests into builder pods" },
	{ "client-config", client_config_main, "set up this machine's Nix to build through the proxy" },
	{ "usage", client_usage_main, "what each client identity used (sessions, builder time, bytes)" },
	{ "version", version_main, "print the version" },
	{ "help", help_main, "show this help" },
};

static int version_main(int argc, char **argv)
{
	printf("nrbc %s\n", NRBC_VERSION);
	return 0;
}

static int help_main(int argc, char **argv)
{
	printf("nrbc %s: elastic Nix remote builders on Kubernetes\n\n"
	       "Usage: nrbc <command> [flags]\n\nCommands:\n", NRBC_VERSION);
	for (size_t i = 0; i < sizeof(command_table) / sizeof(command_table[0]); i++)
		printf("  %-14s %s\n", command_table[i].name, command_table[i].summary);
	printf("\nRun \"nrbc <command> --help\" for the flags of a command.\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		help_main(0, NULL);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return help_main(0, NULL);
	if (strcmp(argv[1], "--version") == 0)
		return version_main(0, NULL);
	for (size_t i = 0; i < sizeof(command_table) / sizeof(command_table[0]); i++) {
		if (strcmp(argv[1], command_table[i].name) == 0)
			return command_table[i].main(argc - 2, argv + 2);
	}
	fprintf(stderr, "nrbc: unknown command \"%s\" (try \"nrbc help\")\n", argv[1]);
	return 2;
}
