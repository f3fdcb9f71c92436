/*
 * libFuzzer target for the kubeconfig parser (libyaml underneath). A
 * parse either yields a config with a usable server URL and namespace, or
 * fails with a message that names the kubeconfig; never both, never
 * neither.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kube/kube_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* A found "tokenFile: /dev/stdin" must not block the fuzzer. */
	int fd = open("/dev/null", O_RDONLY);

	if (fd >= 0) {
		dup2(fd, 0);
		close(fd);
	}
	return 0;
}

static void check(const char *text, size_t size, const char *context)
{
	char *err = NULL;
	struct kube_config *cfg = kube_config_parse(text, size, "/nonexistent-fuzz", context,
	    &err);

	if (cfg) {
		const char *server = kube_config_server(cfg);

		if (err || strncmp(server, "http", 4) != 0 ||
		    server[strlen(server) - 1] == '/' || !kube_config_namespace(cfg)[0])
			abort();
		kube_config_destroy(cfg);
	} else if (!err || strncmp(err, "kubeconfig: ", 12) != 0) {
		abort();
	}
	free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 64 * 1024)
		return 0;
	check((const char *)data, size, NULL);
	check((const char *)data, size, "c");
	return 0;
}
