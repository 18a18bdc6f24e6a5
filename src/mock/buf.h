/*
** Growable byte buffer and allocation helpers for sluice-mock. The mock is a
** test tool: running out of memory ends the process with a message rather
** than threading an error through every caller.
*/
#ifndef MOCK_BUF_H
#define MOCK_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct mock_buf {
  char *data;
  size_t len, cap;
} mock_buf;

void *mock_xmalloc(size_t size);
void *mock_xcalloc(size_t count, size_t size);
void *mock_xrealloc(void *ptr, size_t size);
char *mock_xstrndup(const char *s, size_t len);

void mock_buf_init(mock_buf *b);
void mock_buf_free(mock_buf *b);
void mock_buf_reserve(mock_buf *b, size_t extra);
void mock_buf_append(mock_buf *b, const void *data, size_t len);
void mock_buf_puts(mock_buf *b, const char *s);
void mock_buf_printf(mock_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mock_buf_u64(mock_buf *b, uint64_t value);

/* Writes the decimal digits of value at dst; returns how many (at most 20). */
size_t mock_format_u64(char *dst, uint64_t value);

#endif
