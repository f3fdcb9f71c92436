/* Socket options more than one part sets. */
#ifndef NRBC_SOCKOPT_H
#define NRBC_SOCKOPT_H

#include <stdint.h>

/* TCP keepalive probes after interval_ms of silence, count of them; and
 * TCP_USER_TIMEOUT: data unacknowledged for interval_ms x count ends the
 * connection. So a peer whose host is gone, or whose path is cut, is found
 * by the kernel within that bound. interval_ms 0: nothing is set. 0, or -1
 * with errno. */
int sockopt_keepalive(int fd, uint64_t interval_ms, int count);

/* Milliseconds since the kernel last received data on TCP socket fd
 * (TCP_INFO's tcpi_last_data_recv), whoever read it since: a library that
 * consumes a reply inside one of its own calls leaves no trace in the
 * caller's poll. 0, or -1 with errno (not TCP, say). */
int sockopt_since_data_received(int fd, uint32_t *ms);

#endif
