/* `nrbc usage` as pure functions: the rows of a NixUsageList and the table
 * they print as. One row per identity (the hashed key, never the key). */
#ifndef NRBC_CLIENT_USAGE_H
#define NRBC_CLIENT_USAGE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct client_usage_row {
	char identity[64];
	int64_t served, failed, builders, builder_seconds, bytes_up, bytes_down;
	char updated[32]; /* status.lastUpdate as written, or "-" */
};

/* The rows of list (a NixUsageList), most builder time first. An object
 * that does not parse is left out and named in *warnings (heap lines, or
 * NULL when none). 0, or -1 with *err (heap) when list is not a list. */
int client_usage_rows(const json_t *list, struct client_usage_row **rows, size_t *n,
    char **warnings, char **err);

/* The table: a header and one line per row. Heap string, NULL when out of
 * memory. */
char *client_usage_table(const struct client_usage_row *rows, size_t n);

/* "3d04h", "1h02m", "4m05s", "12s". */
void client_usage_format_seconds(int64_t s, char out[32]);
/* "512 B", "1.5 KiB", "12.3 MiB", "2.0 GiB". */
void client_usage_format_bytes(int64_t b, char out[32]);

int client_usage_main(int argc, char **argv);

#endif
