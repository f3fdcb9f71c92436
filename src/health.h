/* The health and metrics HTTP server both roles run: /healthz, /readyz and
 * /metrics, GET and HEAD only, one request per connection. */
#ifndef NRBC_HEALTH_H
#define NRBC_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "metrics.h"

#define HEALTH_HEADER_TIMEOUT_MS 3000
#define HEALTH_MAX_CONNECTIONS 64

struct health_server;

/* A check: true when healthy; otherwise *why says what is wrong (a static or
 * long-lived string, shown in the 503 body). */
typedef bool (*health_check_fn)(void *data, const char **why);

/*
 * Listens on host (a numeric IPv4 or IPv6 address) and port (0: an ephemeral
 * port, see health_server_port). metrics may be NULL (then /metrics is empty
 * and requests are not counted); it must outlive the server. On failure
 * returns NULL and sets *err to a heap message the caller frees; the loop
 * must still run once to release the listener.
 */
struct health_server *health_server_create(uv_loop_t *loop, const char *host, int port,
    struct metrics *metrics, char **err);
/* Closes the listener and every client connection; the memory goes in the
 * close callbacks, so the loop must run once more. Accepts NULL. */
void health_server_destroy(struct health_server *s);

/* /readyz: 503 with the reason until ready says true (default: ready). */
void health_server_set_ready(struct health_server *s, health_check_fn ready, void *data);
/* /healthz: same, default always ok. */
void health_server_set_live(struct health_server *s, health_check_fn live, void *data);
/* Time a client has to send the whole request head (then 408). */
void health_server_set_header_timeout(struct health_server *s, uint64_t ms);
/* Connections beyond this: the oldest one still sending its request head is
 * closed to make room (else the oldest already answered, else the oldest
 * being answered). */
void health_server_set_max_connections(struct health_server *s, unsigned max);

int health_server_port(const struct health_server *s);

#endif
