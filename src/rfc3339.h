/* RFC 3339 times as Kubernetes writes them ("2026-12-01T12:00:00Z", with
 * optional fractional seconds and a numeric offset on input). */
#ifndef NRBC_RFC3339_H
#define NRBC_RFC3339_H

#include <stdint.h>

/* Milliseconds since the epoch, or -1 when s (NULL allowed) is not one. */
int64_t rfc3339_parse_ms(const char *s);
/* "YYYY-MM-DDTHH:MM:SSZ" (whole seconds, UTC). */
void rfc3339_format_ms(int64_t ms, char out[32]);

#endif
