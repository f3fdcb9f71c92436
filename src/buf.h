/* A growable byte buffer with a hard cap; every append can fail cleanly. */
#ifndef NRBC_BUF_H
#define NRBC_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;  /* always NUL-terminated when non-NULL */
	size_t len;
	size_t cap;  /* allocated bytes */
	size_t max;  /* appends that would exceed this fail with -1 */
};

void buf_init(struct buf *b, size_t max);
void buf_finish(struct buf *b);
void buf_reset(struct buf *b);
int buf_append(struct buf *b, const void *data, size_t len);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Drops the first n bytes, keeping the rest. */
void buf_consume(struct buf *b, size_t n);
/* Hands the data to the caller (who frees it) and resets b. */
char *buf_steal(struct buf *b);

/* printf into a fresh heap string; NULL on failure. */
char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
