/* SIGINT/SIGTERM on the libuv loop: the first asks for a graceful shutdown,
 * a second one ends the process at once. SIGPIPE is ignored. */
#ifndef NRBC_SIGNALS_H
#define NRBC_SIGNALS_H

#include <uv.h>

struct signals;
typedef void (*signals_shutdown_cb)(void *data, int signum);

struct signals *signals_create(uv_loop_t *loop, signals_shutdown_cb cb, void *data);
/* Closes the handles; the memory goes in their close callbacks, so the loop
 * must run once more. Accepts NULL. */
void signals_destroy(struct signals *s);

#endif
