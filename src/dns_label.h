/* RFC 1123 labels, as Kubernetes names many things (and nrbc its builder
 * classes, which are also SSH user names): 1..63 of [a-z0-9-], not
 * starting or ending with '-'. Pure; shared by the controller and the
 * proxy. */
#ifndef NRBC_DNS_LABEL_H
#define NRBC_DNS_LABEL_H

#include <stdbool.h>
#include <stddef.h>

#define DNS_LABEL_MAX 63

static inline bool dns_label_valid(const char *s, size_t len)
{
	if (len == 0 || len > DNS_LABEL_MAX || s[0] == '-' || s[len - 1] == '-')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	return true;
}

#endif
