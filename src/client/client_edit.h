/* Edits to the text of the files a Nix client is configured with:
 * nix.conf settings, known_hosts entries, a marked ssh_config block.
 * Each edit is a pure function from the old text (NULL: no file) to the
 * new, and never replaces something different unless forced: it reports
 * the conflict and what is there instead. File I/O is separate (below). */
#ifndef NRBC_CLIENT_EDIT_H
#define NRBC_CLIENT_EDIT_H

#include <stdbool.h>
#include <sys/types.h>

enum client_edit_result {
	CLIENT_EDIT_UNCHANGED, /* already there, identical */
	CLIENT_EDIT_ADDED,     /* was missing; *out has it */
	CLIENT_EDIT_REPLACED,  /* something different was there; forced */
	CLIENT_EDIT_CONFLICT,  /* something different is there; *existing says what */
	CLIENT_EDIT_ERROR,     /* out of memory */
};

/* "unchanged", "added", "replaced", "conflict", "error". */
const char *client_edit_result_name(enum client_edit_result r);

/* nix.conf: `key = value`. The last definition of key is the one Nix
 * uses, so that one is compared and, when forced, replaced. On ADDED and
 * REPLACED *out is the new text (heap); on CONFLICT *existing is the line
 * found (heap). */
enum client_edit_result client_edit_nix_conf(const char *old, const char *key,
    const char *value, bool force, char **out, char **existing);

/* known_hosts: `line` is "HOST TYPE KEY". A line naming HOST (among its
 * comma-separated hosts) with the same key type and another key is a
 * conflict (a different host key); forced, such lines go. */
enum client_edit_result client_edit_known_hosts(const char *old, const char *line,
    bool force, char **out, char **existing);

/* ssh_config: block goes between "# BEGIN nrbc client-config" and
 * "# END nrbc client-config" markers, at the top of the file when new
 * (ssh_config takes the first value it finds for an option, so a later
 * `Host *` cannot override it). A marked block with other content is a
 * conflict. */
enum client_edit_result client_edit_ssh_block(const char *old, const char *block, bool force,
    char **out, char **existing);

/* Whole file, NULL in *text when it does not exist. Returns 0, or -1 with
 * *err (heap). */
int client_file_read(const char *path, char **text, char **err);
/* Writes through a temporary file and rename, creating missing parent
 * directories (mode 0700 under ~/.ssh, else 0755); keeps an existing file's
 * mode, else uses mode. Returns 0 or -1 with *err (heap). */
int client_file_write(const char *path, const char *text, mode_t mode, char **err);

#endif
