/* What the controller's unit tests share: the builder pod options of a
 * typical install and a JSON loader that fails the test on bad input.
 * Include after <cmocka.h>. */
#ifndef NRBC_CONTROLLER_TEST_FIXTURES_H
#define NRBC_CONTROLLER_TEST_FIXTURES_H

#include <jansson.h>

#include "controller/controller_pod.h"

static const struct controller_pod_options test_pod_options = {
	.builder_image = "registry.example/nrbc-builder:1",
	.remote_port = 22,
	.nix_config = "nix-config",
	.ssh_key_secret = "nix-builder-ssh-keys",
	.default_cpu_request = "500m",
	.default_memory_request = "1Gi",
	.default_cpu_limit = "",
	.default_memory_limit = "4Gi",
	.termination_grace_seconds = 5,
};

static inline json_t *test_load_json(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, 0, &e);

	if (!v)
		fail_msg("bad test JSON: %s: %s", e.text, text);
	return v;
}

#endif
