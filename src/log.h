/* Leveled logging to stderr, as text or as JSON lines. */
#ifndef NRBC_LOG_H
#define NRBC_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_LEVEL_ERROR,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

enum log_format {
	LOG_FORMAT_TEXT,
	LOG_FORMAT_JSON,
};

void log_init(const char *component, enum log_level level, enum log_format format);
/* Parses "error|warn|info|debug" and "text|json"; returns -1 on unknown. */
int log_level_parse(const char *s, enum log_level *out);
int log_format_parse(const char *s, enum log_format *out);
bool log_enabled(enum log_level level);

/*
 * Client-supplied text (user names, commands, subsystem and env names) goes
 * into logs and messages only through this: printable ASCII stays, '"' and
 * '\\' get a backslash, every other byte (newline, ESC, DEL, 8-bit) becomes
 * \xHH, so no client can forge a log line or drive a terminal. Writes at
 * most size bytes (NUL included) to out, ending in "..." when cut; returns
 * out. len: bytes of s ((size_t)-1: up to its NUL).
 */
#define LOG_ESCAPE_MAX 256
char *log_escape(char *out, size_t size, const char *s, size_t len);

/* Every line is also scrubbed as a whole (control bytes, C1 controls and
 * invalid UTF-8 become \xHH; valid UTF-8 stays), so even a string that
 * missed log_escape cannot break a line or drive a terminal. */
#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))

void log_error(const char *fmt, ...) LOG_PRINTF(1, 2);
/* Like log_error at warn level, with strerror(errno) appended. */
void log_warn(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_warnx(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_info(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_debug(const char *fmt, ...) LOG_PRINTF(1, 2);

/* Length of the valid UTF-8 sequence at p (left bytes available) that is
 * not a C1 control (U+0080..U+009F, e.g. 0xc2 0x9b, a CSI), or 0. Overlong
 * forms and surrogates count as invalid. */
size_t log_utf8_char_len(const unsigned char *p, size_t left);

#endif
