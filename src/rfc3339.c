#include "rfc3339.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t rfc3339_parse_ms(const char *s)
{
	struct tm tm;
	int n = 0;
	int64_t ms;
	time_t t;

	if (!s)
		return -1;
	memset(&tm, 0, sizeof(tm));
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	        &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 || n != 19)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return -1;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	ms = (int64_t)t * 1000;
	s += n;
	if (*s == '.') {
		int64_t scale = 100;

		if (s[1] < '0' || s[1] > '9')
			return -1;
		for (s++; *s >= '0' && *s <= '9'; s++) {
			ms += (*s - '0') * scale;
			scale /= 10;
		}
	}
	if (*s == 'Z' || *s == 'z')
		return s[1] ? -1 : ms;
	if ((*s == '+' || *s == '-') && strlen(s) == 6 && s[3] == ':') {
		int hh, mm;

		if (sscanf(s + 1, "%2d:%2d", &hh, &mm) != 2 || hh > 23 || mm > 59)
			return -1;
		return ms - (*s == '+' ? 1 : -1) * (int64_t)(hh * 60 + mm) * 60000;
	}
	return -1;
}

void rfc3339_format_ms(int64_t ms, char out[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, 32, "1970-01-01T00:00:00Z");
}
