/* --nixos: the module's text, its Nix string quoting, and (run with
 * --parse, as the client_nixos_parse test does) nix-instantiate parsing
 * it, skipped with 77 when nix-instantiate is not installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "base64.h"
#include "client/client_nixos.h"
#include "client_test_fixtures.h"

#define CLASSES "{\"items\":[{\"metadata\":{\"name\":\"big\"},\"spec\":{\"systems\":" \
	"[\"x86_64-linux\",\"aarch64-linux\"],\"supportedFeatures\":[\"kvm\"]," \
	"\"mandatoryFeatures\":[\"big-parallel\"],\"speedFactor\":2,\"slots\":2," \
	"\"maxBuildersPerIdentity\":3}}]}"

/* An identity path with everything Nix strings must escape. */
#define ODD_IDENTITY "/home/u \"q\" \\ ${HOME} $x\n"

static char *quoted(const char *s)
{
	struct buf b;

	buf_init(&b, 1024);
	assert_int_equal(client_nixos_quote(&b, s), 0);
	return buf_steal(&b);
}

static void test_quote(void **state)
{
	char *q = quoted(ODD_IDENTITY);

	assert_string_equal(q, "\"/home/u \\\"q\\\" \\\\ \\${HOME} \\$x\\n\"");
	free(q);
	q = quoted("");
	assert_string_equal(q, "\"\"");
	free(q);
}

static void test_module_port_22(void **state)
{
	struct client_facts f = facts(22);
	struct client_class_list l = with_classes(&f, CLASSES);
	char *m = client_nixos_render(&f, &l, "/root/.ssh/id"), *b64 = base64_encode(KEY,
	    strlen(KEY)), want[1024];

	assert_non_null(m);
	assert_true(strncmp(m, "{\n  nix.distributedBuilds = true;\n"
	    "  nix.settings.builders-use-substitutes = true;\n  nix.buildMachines = [\n", 100) ==
	    0);
	snprintf(want, sizeof(want), "    {\n      hostName = \"203.0.113.7\";\n"
	    "      sshUser = \"big\";\n      protocol = \"ssh-ng\";\n"
	    "      systems = [ \"x86_64-linux\" \"aarch64-linux\" ];\n      maxJobs = 6;\n"
	    "      speedFactor = 2;\n      supportedFeatures = [ \"kvm\" \"big-parallel\" ];\n"
	    "      mandatoryFeatures = [ \"big-parallel\" ];\n      sshKey = \"/root/.ssh/id\";\n"
	    "      publicHostKey = \"%s\";\n    }\n", b64);
	assert_non_null(strstr(m, want));
	assert_non_null(strstr(m, "      sshUser = \"nixbld\";\n"));
	assert_non_null(strstr(m, "      supportedFeatures = [ ];\n      mandatoryFeatures = [ ];\n"));
	assert_non_null(strstr(m, "  programs.ssh.knownHosts.nrbc = {\n"
	    "    hostNames = [ \"203.0.113.7\" ];\n    publicKey = \"" KEY "\";\n  };\n}\n"));
	assert_null(strstr(m, "extraConfig"));
	free(m);
	free(b64);
	client_class_list_finish(&l);
}

static void test_module_other_port(void **state)
{
	struct client_facts f = facts(2222);
	struct client_class_list l = default_only(&f);
	char *m = client_nixos_render(&f, &l, ODD_IDENTITY);

	assert_non_null(m);
	assert_null(strstr(m, "publicHostKey"));
	assert_non_null(strstr(m, "    hostNames = [ \"[203.0.113.7]:2222\" ];\n"));
	assert_non_null(strstr(m, "  programs.ssh.extraConfig = \"Host 203.0.113.7\\n"
	    "  HostName 203.0.113.7\\n  Port 2222\\n"));
	assert_non_null(strstr(m, "UserKnownHostsFile /etc/ssh/ssh_known_hosts\\n"));
	assert_non_null(strstr(m, "sshKey = \"/home/u \\\"q\\\" \\\\ \\${HOME} \\$x\\n\";"));
	free(m);
	f.host_key = "ssh-ed25519";
	assert_null(client_nixos_render(&f, &l, "/k"));
	client_class_list_finish(&l);
}

static char *find_on_path(const char *name)
{
	const char *path = getenv("PATH");

	while (path && *path) {
		size_t n = strcspn(path, ":");
		char full[4096];

		snprintf(full, sizeof(full), "%.*s/%s", (int)n, path, name);
		if (n && access(full, X_OK) == 0)
			return strdup(full);
		path += n + (path[n] == ':');
	}
	return NULL;
}

/* `nix-instantiate --parse` of `{ ... }: MODULE`; 0 when it parses. */
static int nix_parses(const char *nix, const char *module)
{
	char file[] = "/tmp/nrbc-nixos-XXXXXX";
	int fd = mkstemp(file), status = -1;
	FILE *out;
	pid_t pid;

	if (fd < 0 || !(out = fdopen(fd, "w"))) {
		perror("nrbc-nixos temporary file");
		return -1;
	}
	fprintf(out, "{ ... }: %s", module);
	fclose(out);
	fflush(stdout); /* else the child's freopen writes our buffer again */
	pid = fork();
	if (pid == 0) {
		if (!freopen("/dev/null", "w", stdout))
			_exit(126);
		execl(nix, nix, "--parse", file, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, &status, 0);
	unlink(file);
	return pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int parse_check(void)
{
	char *nix = find_on_path("nix-instantiate");
	long ports[] = { 22, 2222 };
	int rc = 0;

	if (!nix) {
		printf("skip: nix-instantiate is not on PATH, so the module is not parsed\n");
		return 77;
	}
	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		struct client_facts f = facts(ports[i]);
		struct client_class_list l = with_classes(&f, CLASSES);
		char *m = client_nixos_render(&f, &l, ODD_IDENTITY);

		if (!m || nix_parses(nix, m) < 0) {
			printf("FAIL: the module for port %ld does not parse:\n%s", ports[i],
			    m ? m : "(not rendered)\n");
			rc = 1;
		} else {
			printf("ok: the module for port %ld parses\n", ports[i]);
		}
		free(m);
		client_class_list_finish(&l);
	}
	free(nix);
	return rc;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_module_port_22),
		cmocka_unit_test(test_module_other_port),
	};

	if (argc > 1 && strcmp(argv[1], "--parse") == 0)
		return parse_check();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
