/* Closing a client's socket without a reset. close() on a TCP socket with
 * unread bytes, or one that bytes reach afterwards, answers with a reset,
 * and a reset makes the peer's kernel drop what it has not read yet: an
 * OpenSSH client told "idle for 1s" then fails its own goodbye with
 * "Connection reset by peer" and exits 255 instead of the exit status it
 * was sent. So the proxy shuts its side for writing (the peer reads EOF
 * after everything sent), reads and drops what the peer still sends, and
 * closes when the peer has closed too, or after a bounded wait. */
#ifndef NRBC_PROXY_LINGER_H
#define NRBC_PROXY_LINGER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct proxy_lingers;

/* max: sockets lingering at once (past it, one is closed at once);
 * wait_ms: how long one waits for its peer. NULL on failure. */
struct proxy_lingers *proxy_lingers_create(uv_loop_t *loop, size_t max, uint64_t wait_ms);
/* Takes no more sockets (they are closed at once); those lingering end as
 * they would have, within wait_ms, so a stopping proxy's last words reach
 * its clients too; memory goes after the last. Accepts NULL. */
void proxy_lingers_destroy(struct proxy_lingers *l);

/* Takes fd, a connected socket, and closes it as above. l NULL, or
 * destroyed: closed at once. */
void proxy_lingers_close(struct proxy_lingers *l, int fd);
/* Sockets lingering now. */
size_t proxy_lingers_count(const struct proxy_lingers *l);

#endif
