/* The sweep's memory between passes: which requests the previous pass saw
 * unheld (no live session, no end on its way). A request is deleted only
 * when two passes in a row see it unheld, so it has been unheld for a
 * whole interval and never goes at first sight; no clock is compared
 * (the API server's creationTimestamp against ours). */
#ifndef NRBC_PROXY_SWEEP_H
#define NRBC_PROXY_SWEEP_H

#include <stdbool.h>
#include <stddef.h>

struct proxy_sweep;

struct proxy_sweep *proxy_sweep_create(void);
/* Accepts NULL. */
void proxy_sweep_destroy(struct proxy_sweep *s);
/* One pass: see() each unheld name, then end(). see() is true when the
 * previous pass saw name unheld too: delete it. Out of memory, a name is
 * not remembered (a later pass gets it). */
bool proxy_sweep_see(struct proxy_sweep *s, const char *name);
void proxy_sweep_end(struct proxy_sweep *s);
/* Names the last finished pass remembered. */
size_t proxy_sweep_remembered(const struct proxy_sweep *s);

#endif
