/* --check: one real connection through the proxy, as Nix makes it
 * (`nix store ping --store ssh-ng://USER@ADDRESS`, ssh reading the
 * ssh_config block we made), and a verdict a user can act on. */
#ifndef NRBC_CLIENT_CHECK_H
#define NRBC_CLIENT_CHECK_H

#include <stddef.h>

enum client_check_verdict {
	CLIENT_CHECK_OK,           /* a builder answered as a Nix store */
	CLIENT_CHECK_UNREACHABLE,  /* no TCP connection to the proxy */
	CLIENT_CHECK_HOST_KEY,     /* the proxy's host key is not the published one */
	CLIENT_CHECK_KEY_REFUSED,  /* the proxy did not accept the client key */
	CLIENT_CHECK_NO_BUILDER,   /* logged in, but no builder served the session */
	CLIENT_CHECK_NO_NIX,       /* the nix command is missing here */
	CLIENT_CHECK_CLASS_REFUSED, /* the key may not use this class (nrbc-classes=) */
};

const char *client_check_verdict_name(enum client_check_verdict v);

/* Pure: the verdict from the exit status and stderr of the ping. */
enum client_check_verdict client_check_classify(int exit_status, const char *stderr_text);

/* Runs the ping with NIX_SSHOPTS="-F ssh_config -o BatchMode=yes" and
 * returns the verdict; *output (heap) is the ping's stderr and stdout. */
enum client_check_verdict client_check_run(const char *store_uri, const char *ssh_config,
    char **output);

#endif
