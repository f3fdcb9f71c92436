/* Bulk bytes over one SSH channel with either client library nrbc links
 * (libssh2, the proxy's leg to the builder today; libssh, its server side),
 * to measure each library's ceiling against the same sshd
 * (test/bench/bench_ssh_libs.py). Blocking calls: this is a meter, not the
 * proxy. Host keys are not checked: loopback benchmark use only.
 *
 *   sshpush LIB HOST PORT USER KEYFILE CIPHER[/MAC] up|down MIB
 *
 * MAC, when given, is the only MAC offered (libssh2's choices of MAC for its
 * own ciphers are a lever of the proxy's builder leg).
 * Prints: "<lib> <cipher> <mac> <up|down> <MiB> <seconds> <cpu seconds>". */
#include <arpa/inet.h>
#include <libssh/libssh.h>
#include <libssh2.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

struct job {
	const char *host, *user, *key, *cipher, *mac, *dir;
	int port;
	long long bytes;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static char *command(const struct job *j)
{
	static char cmd[64];

	if (strcmp(j->dir, "up") == 0)
		snprintf(cmd, sizeof(cmd), "cat >/dev/null");
	else
		snprintf(cmd, sizeof(cmd), "head -c %lld /dev/zero", j->bytes);
	return cmd;
}

static int tcp_connect(const struct job *j)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)j->port) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || inet_pton(AF_INET, j->host, &sa.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("connect");
		exit(1);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void die(const char *what, const char *why)
{
	fprintf(stderr, "sshpush: %s: %s\n", what, why ? why : "failed");
	exit(1);
}

static void run_libssh2(const struct job *j, char *buf)
{
	int fd = tcp_connect(j);
	LIBSSH2_SESSION *s;
	LIBSSH2_CHANNEL *ch;
	char *err = NULL;
	long long left = j->bytes;
	double t0, c0;
	ssize_t n;

	libssh2_init(0);
	s = libssh2_session_init();
	libssh2_session_method_pref(s, LIBSSH2_METHOD_CRYPT_CS, j->cipher);
	libssh2_session_method_pref(s, LIBSSH2_METHOD_CRYPT_SC, j->cipher);
	if (j->mac) {
		libssh2_session_method_pref(s, LIBSSH2_METHOD_MAC_CS, j->mac);
		libssh2_session_method_pref(s, LIBSSH2_METHOD_MAC_SC, j->mac);
	}
	if (libssh2_session_handshake(s, fd) ||
	    libssh2_userauth_publickey_fromfile(s, j->user, NULL, j->key, NULL)) {
		libssh2_session_last_error(s, &err, NULL, 0);
		die("libssh2 connect", err);
	}
	ch = libssh2_channel_open_session(s);
	if (!ch || libssh2_channel_exec(ch, command(j))) {
		libssh2_session_last_error(s, &err, NULL, 0);
		die("libssh2 exec", err);
	}
	t0 = now();
	c0 = cpu_seconds();
	if (strcmp(j->dir, "up") == 0) {
		while (left > 0) {
			n = libssh2_channel_write(ch, buf, left < CHUNK ? (size_t)left : CHUNK);
			if (n < 0)
				die("libssh2 write", NULL);
			left -= n;
		}
		libssh2_channel_send_eof(ch);
		while (libssh2_channel_read(ch, buf, CHUNK) > 0)
			;
	} else {
		while ((n = libssh2_channel_read(ch, buf, CHUNK)) > 0)
			left -= n;
		if (left != 0)
			die("libssh2 read", "short");
	}
	printf("libssh2 %s %s %s %lld %.3f %.3f\n", libssh2_session_methods(s,
	    LIBSSH2_METHOD_CRYPT_CS), libssh2_session_methods(s, LIBSSH2_METHOD_MAC_CS), j->dir,
	    j->bytes >> 20, now() - t0, cpu_seconds() - c0);
	libssh2_channel_close(ch);
	libssh2_channel_free(ch);
	libssh2_session_disconnect(s, "done");
	libssh2_session_free(s);
	close(fd);
}

static void run_libssh(const struct job *j, char *buf)
{
	ssh_session s = ssh_new();
	ssh_channel ch;
	ssh_key key = NULL;
	long long left = j->bytes;
	double t0, c0;
	int n;

	ssh_options_set(s, SSH_OPTIONS_HOST, j->host);
	ssh_options_set(s, SSH_OPTIONS_PORT, &j->port);
	ssh_options_set(s, SSH_OPTIONS_USER, j->user);
	ssh_options_set(s, SSH_OPTIONS_CIPHERS_C_S, j->cipher);
	ssh_options_set(s, SSH_OPTIONS_CIPHERS_S_C, j->cipher);
	if (j->mac) {
		ssh_options_set(s, SSH_OPTIONS_HMAC_C_S, j->mac);
		ssh_options_set(s, SSH_OPTIONS_HMAC_S_C, j->mac);
	}
	ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
	ssh_options_set(s, SSH_OPTIONS_NODELAY, &(int){ 1 });
	if (ssh_connect(s) != SSH_OK)
		die("libssh connect", ssh_get_error(s));
	if (ssh_pki_import_privkey_file(j->key, NULL, NULL, NULL, &key) != SSH_OK ||
	    ssh_userauth_publickey(s, NULL, key) != SSH_AUTH_SUCCESS)
		die("libssh auth", ssh_get_error(s));
	ch = ssh_channel_new(s);
	if (!ch || ssh_channel_open_session(ch) != SSH_OK ||
	    ssh_channel_request_exec(ch, command(j)) != SSH_OK)
		die("libssh exec", ssh_get_error(s));
	t0 = now();
	c0 = cpu_seconds();
	if (strcmp(j->dir, "up") == 0) {
		while (left > 0) {
			n = ssh_channel_write(ch, buf, left < CHUNK ? (uint32_t)left : CHUNK);
			if (n < 0)
				die("libssh write", ssh_get_error(s));
			left -= n;
		}
		ssh_channel_send_eof(ch);
		while (ssh_channel_read(ch, buf, CHUNK, 0) > 0)
			;
	} else {
		while ((n = ssh_channel_read(ch, buf, CHUNK, 0)) > 0)
			left -= n;
		if (left != 0)
			die("libssh read", "short");
	}
	printf("libssh %s %s %s %lld %.3f %.3f\n", ssh_get_cipher_out(s), ssh_get_hmac_out(s),
	    j->dir, j->bytes >> 20, now() - t0, cpu_seconds() - c0);
	ssh_channel_close(ch);
	ssh_channel_free(ch);
	ssh_key_free(key);
	ssh_disconnect(s);
	ssh_free(s);
}

int main(int argc, char **argv)
{
	struct job j;
	char *buf, *slash;

	if (argc != 9) {
		fprintf(stderr, "usage: sshpush libssh2|libssh HOST PORT USER KEYFILE CIPHER[/MAC] "
		    "up|down MIB\n");
		return 2;
	}
	j = (struct job){ .host = argv[2], .port = atoi(argv[3]), .user = argv[4],
		.key = argv[5], .cipher = argv[6], .dir = argv[7],
		.bytes = atoll(argv[8]) << 20 };
	slash = strchr(argv[6], '/');
	if (slash) {
		*slash = '\0';
		j.mac = slash + 1;
	}
	buf = calloc(1, CHUNK);
	if (!buf)
		return 1;
	if (strcmp(argv[1], "libssh2") == 0)
		run_libssh2(&j, buf);
	else if (strcmp(argv[1], "libssh") == 0)
		run_libssh(&j, buf);
	else
		die("library", argv[1]);
	free(buf);
	return 0;
}
