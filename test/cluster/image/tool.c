/* The one program in the real node's test image (test/cluster/image.py):
 * no registry is reachable from the tests, so the images are made locally
 * from this static binary.
 *
 *   pause                 the pod sandbox: sleeps until SIGTERM/SIGINT
 *                         (also when called as "pause"), reaps children
 *   serve PORT            TCP server on every pod address: answers each
 *                         connection with "hello from <hostname> <peer>\n"
 *                         and logs one line per connection to stdout
 *   send HOST PORT [TEXT] connects, sends TEXT (C escapes \r \n), prints
 *                         what comes back until EOF (exit 1 on failure)
 *   echo WORDS...         prints WORDS (for kubectl exec)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static void on_chld(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static int do_pause(void) {
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	signal(SIGCHLD, on_chld);
	for (;;)
		pause();
	return 0;
}

static int do_serve(int port) {
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	char host[256] = "?", msg[512];
	signal(SIGTERM, on_term);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	/* INADDR_ANY inside the pod's own network namespace: its only
	 * addresses are lo and the pod IP (a 127/8 address). */
	if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) {
		perror("serve");
		return 1;
	}
	gethostname(host, sizeof host - 1);
	printf("serving on port %d\n", port);
	fflush(stdout);
	for (;;) {
		struct sockaddr_in p;
		socklen_t pl = sizeof p;
		int c = accept(s, (struct sockaddr *)&p, &pl);
		if (c < 0)
			continue;
		int n = snprintf(msg, sizeof msg, "hello from %s %s\n", host, inet_ntoa(p.sin_addr));
		if (write(c, msg, n) < 0) {
		}
		close(c);
		printf("connection from %s\n", inet_ntoa(p.sin_addr));
		fflush(stdout);
	}
	return 0;
}

static int do_send(const char *host, int port, const char *text) {
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	char buf[4096];
	ssize_t n;
	struct timeval tv = {.tv_sec = 10};
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1 || connect(s, (struct sockaddr *)&a, sizeof a)) {
		perror("connect");
		return 1;
	}
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (text) {
		size_t len = 0;
		for (const char *p = text; *p && len < sizeof buf; p++) {
			if (p[0] == '\\' && p[1] == 'r') buf[len++] = '\r', p++;
			else if (p[0] == '\\' && p[1] == 'n') buf[len++] = '\n', p++;
			else buf[len++] = *p;
		}
		if (write(s, buf, len) != (ssize_t)len) {
			perror("write");
			return 1;
		}
	}
	while ((n = read(s, buf, sizeof buf)) > 0)
		fwrite(buf, 1, n, stdout);
	return n < 0 ? 1 : 0;
}

int main(int argc, char **argv) {
	const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	if (!strcmp(self, "pause") || (argc > 1 && !strcmp(argv[1], "pause")))
		return do_pause();
	if (argc == 3 && !strcmp(argv[1], "serve"))
		return do_serve(atoi(argv[2]));
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "send"))
		return do_send(argv[2], atoi(argv[3]), argc == 5 ? argv[4] : NULL);
	if (argc >= 2 && !strcmp(argv[1], "echo")) {
		for (int i = 2; i < argc; i++)
			printf("%s%s", argv[i], i + 1 < argc ? " " : "\n");
		return 0;
	}
	fprintf(stderr, "usage: %s pause | serve PORT | send HOST PORT [TEXT] | echo WORDS\n", argv[0]);
	return 2;
}
