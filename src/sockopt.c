#include "sockopt.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int sockopt_keepalive(int fd, uint64_t interval_ms, int count)
{
	int one = 1, secs;
	unsigned int user_timeout;

	if (!interval_ms)
		return 0;
	if (count < 1)
		count = 1;
	secs = (int)((interval_ms + 999) / 1000);
	user_timeout = (unsigned int)(interval_ms * (uint64_t)count);
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &secs, sizeof(secs)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &secs, sizeof(secs)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout)) < 0)
		return -1;
	return 0;
}

int sockopt_since_data_received(int fd, uint32_t *ms)
{
	struct tcp_info info;
	socklen_t len = sizeof(info);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0)
		return -1;
	*ms = info.tcpi_last_data_recv;
	return 0;
}
