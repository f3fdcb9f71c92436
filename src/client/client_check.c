#include "client_check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"

#define CLIENT_CHECK_MAX_OUTPUT (256u << 10)

static const char *const verdict_names[] = {
	[CLIENT_CHECK_OK] = "ok",
	[CLIENT_CHECK_UNREACHABLE] = "unreachable",
	[CLIENT_CHECK_HOST_KEY] = "host key mismatch",
	[CLIENT_CHECK_KEY_REFUSED] = "key refused",
	[CLIENT_CHECK_NO_BUILDER] = "no builder",
	[CLIENT_CHECK_NO_NIX] = "nix missing",
	[CLIENT_CHECK_CLASS_REFUSED] = "class not allowed",
};

const char *client_check_verdict_name(enum client_check_verdict v)
{
	return v <= CLIENT_CHECK_CLASS_REFUSED ? verdict_names[v] : "?";
}

enum client_check_verdict client_check_classify(int exit_status, const char *err)
{
	static const char *const host_key[] = { "Host key verification failed",
		"REMOTE HOST IDENTIFICATION HAS CHANGED", "host key is known",
		"No matching host key" };
	static const char *const unreachable[] = { "Connection refused", "Connection timed out",
		"No route to host", "Network is unreachable", "Could not resolve hostname",
		"Connection closed by remote host" };

	if (exit_status == 0)
		return CLIENT_CHECK_OK;
	for (size_t i = 0; i < sizeof(host_key) / sizeof(host_key[0]); i++)
		if (strstr(err, host_key[i]))
			return CLIENT_CHECK_HOST_KEY;
	/* The proxy's own words (proxy_session_auth.c) for a key whose
	 * nrbc-classes= leaves the class out. */
	if (strstr(err, "nrbc: this key may not use builder class"))
		return CLIENT_CHECK_CLASS_REFUSED;
	if (strstr(err, "Permission denied"))
		return CLIENT_CHECK_KEY_REFUSED;
	for (size_t i = 0; i < sizeof(unreachable) / sizeof(unreachable[0]); i++)
		if (strstr(err, unreachable[i]))
			return CLIENT_CHECK_UNREACHABLE;
	if (exit_status == 127 && !strstr(err, "nrbc: "))
		return CLIENT_CHECK_NO_NIX;
	return CLIENT_CHECK_NO_BUILDER;
}

enum client_check_verdict client_check_run(const char *store_uri, const char *ssh_config,
    char **output)
{
	char *sshopts = str_printf("-F %s -o BatchMode=yes -o ConnectTimeout=20", ssh_config);
	char *argv[] = { "nix", "--extra-experimental-features", "nix-command", "store", "ping",
		"--store", (char *)store_uri, NULL };
	struct buf out;
	int pipefd[2], status = 0;
	char chunk[4096];
	pid_t pid;

	buf_init(&out, CLIENT_CHECK_MAX_OUTPUT);
	*output = NULL;
	if (!sshopts || pipe(pipefd) < 0) {
		free(sshopts);
		*output = strdup("cannot start nix: out of resources");
		return CLIENT_CHECK_NO_NIX;
	}
	pid = fork();
	if (pid == 0) {
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		close(pipefd[1]);
		setenv("NIX_SSHOPTS", sshopts, 1);
		execvp(argv[0], argv);
		fprintf(stderr, "cannot run nix: %s\n", strerror(errno));
		_exit(127);
	}
	free(sshopts);
	close(pipefd[1]);
	if (pid < 0) {
		close(pipefd[0]);
		*output = strdup("cannot start nix: fork failed");
		return CLIENT_CHECK_NO_NIX;
	}
	for (;;) {
		ssize_t n = read(pipefd[0], chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		(void)buf_append(&out, chunk, (size_t)n); /* past the cap: the head is enough */
	}
	close(pipefd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (buf_append(&out, "", 1) < 0) {
		buf_finish(&out);
		*output = strdup("");
	} else {
		*output = buf_steal(&out);
	}
	return client_check_classify(WIFEXITED(status) ? WEXITSTATUS(status) : 255,
	    *output ? *output : "");
}
