/* Comma-separated lists as nrbc writes them ("nixbld,arm", "kvm,big-parallel"):
 * no spaces, no quoting. Pure; shared by the proxy and client-config. */
#ifndef NRBC_CSV_LIST_H
#define NRBC_CSV_LIST_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* Whether list holds item (its first len bytes) as one of its entries. */
static inline bool csv_list_has(const char *list, const char *item, size_t len)
{
	while (*list) {
		size_t n = strcspn(list, ",");

		if (n == len && memcmp(list, item, len) == 0)
			return true;
		list += n;
		if (*list == ',')
			list++;
	}
	return false;
}

#endif
