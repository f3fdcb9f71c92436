#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *log_component = "nrbc";
static enum log_level log_max = LOG_LEVEL_INFO;
static enum log_format log_fmt = LOG_FORMAT_TEXT;

static const char *const log_level_names[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

void log_init(const char *component, enum log_level level, enum log_format format)
{
	log_component = component;
	log_max = level;
	log_fmt = format;
}

int log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]); i++) {
		if (strcmp(s, log_level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

int log_format_parse(const char *s, enum log_format *out)
{
	if (strcmp(s, "text") == 0)
		*out = LOG_FORMAT_TEXT;
	else if (strcmp(s, "json") == 0)
		*out = LOG_FORMAT_JSON;
	else
		return -1;
	return 0;
}

bool log_enabled(enum log_level level)
{
	return level <= log_max;
}

static size_t log_escape_one(unsigned char c, char tmp[4])
{
	static const char hex[] = "0123456789abcdef";

	if (c == '"' || c == '\\') {
		tmp[0] = '\\';
		tmp[1] = (char)c;
		return 2;
	}
	if (c >= 0x20 && c < 0x7f) {
		tmp[0] = (char)c;
		return 1;
	}
	tmp[0] = '\\';
	tmp[1] = 'x';
	tmp[2] = hex[c >> 4];
	tmp[3] = hex[c & 15];
	return 4;
}

char *log_escape(char *out, size_t size, const char *s, size_t len)
{
	size_t o = 0, total = 0, room;
	char tmp[4];

	if (!size)
		return out;
	if (!s)
		s = "";
	if (len == (size_t)-1)
		len = strlen(s);
	for (size_t i = 0; i < len; i++)
		total += log_escape_one((unsigned char)s[i], tmp);
	/* All of it, or as much as leaves room for "..." (when that fits). */
	room = total < size ? size - 1 : (size > 4 ? size - 4 : size - 1);
	for (size_t i = 0; i < len; i++) {
		size_t n = log_escape_one((unsigned char)s[i], tmp);

		if (o + n > room)
			break;
		memcpy(out + o, tmp, n);
		o += n;
	}
	if (total >= size && size > 4) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

size_t log_utf8_char_len(const unsigned char *p, size_t left)
{
	uint32_t cp;
	size_t n;

	if (p[0] < 0xc2 || p[0] > 0xf4)
		return 0;
	n = p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : 4;
	if (left < n)
		return 0;
	cp = p[0] & (0x7f >> n);
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
		return 0;
	return n;
}

static bool log_needs_scrub(const char *msg)
{
	for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
		if (*p < 0x20 || *p >= 0x7f)
			return true;
	}
	return false;
}

/* Control bytes (C0, DEL, C1) and bytes that are not valid UTF-8 in a whole
 * formatted line become \xHH (in place, bounded); valid UTF-8 text stays. */
static void log_scrub(char *msg, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)msg;
	size_t len = strlen(msg), o = 0;
	char tmp[2048];

	for (size_t i = 0; i < len && o + 5 < sizeof(tmp);) {
		size_t n = p[i] >= 0x80 ? log_utf8_char_len(p + i, len - i) : 0;

		if (n) {
			if (o + n + 1 > sizeof(tmp))
				break;
			memcpy(tmp + o, p + i, n);
			o += n;
			i += n;
		} else if (p[i] < 0x20 || p[i] >= 0x7f) {
			tmp[o++] = '\\';
			tmp[o++] = 'x';
			tmp[o++] = hex[p[i] >> 4];
			tmp[o++] = hex[p[i] & 15];
			i++;
		} else {
			tmp[o++] = (char)p[i++];
		}
	}
	tmp[o] = '\0';
	snprintf(msg, size, "%s", tmp);
}

/* Writes s as the body of a JSON string: quotes, backslashes and control
 * characters escaped, so a log line never breaks a JSON consumer. */
static void log_json_escape(FILE *f, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
}

__attribute__((format(printf, 3, 0)))
static void log_emit(enum log_level level, const char *suffix, const char *fmt, va_list ap)
{
	char msg[2048];
	char ts[40];
	struct timespec now;
	struct tm tm;

	if (!log_enabled(level))
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (log_needs_scrub(msg))
		log_scrub(msg, sizeof(msg));
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);

	/* One fprintf per line keeps lines whole when stderr is shared. */
	flockfile(stderr);
	if (log_fmt == LOG_FORMAT_JSON) {
		fprintf(stderr, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"component\":\"%s\",\"msg\":\"",
		    ts, now.tv_nsec / 1000000, log_level_names[level], log_component);
		log_json_escape(stderr, msg);
		if (suffix) {
			fputs(": ", stderr);
			log_json_escape(stderr, suffix);
		}
		fputs("\"}\n", stderr);
	} else {
		fprintf(stderr, "%s.%03ldZ %-5s %s: %s%s%s\n", ts, now.tv_nsec / 1000000,
		    log_level_names[level], log_component, msg, suffix ? ": " : "",
		    suffix ? suffix : "");
	}
	funlockfile(stderr);
}

void log_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(LOG_LEVEL_ERROR, NULL, fmt, ap);
	va_end(ap);
}

void log_warn(const char *fmt, ...)
{
	va_list ap;
	const char *err = strerror(errno);
	va_start(ap, fmt);
	log_emit(LOG_LEVEL_WARN, err, fmt, ap);
	va_end(ap);
}

void log_warnx(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(LOG_LEVEL_WARN, NULL, fmt, ap);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(LOG_LEVEL_INFO, NULL, fmt, ap);
	va_end(ap);
}

void log_debug(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(LOG_LEVEL_DEBUG, NULL, fmt, ap);
	va_end(ap);
}
