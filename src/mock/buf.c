/*
** Growable byte buffer and allocation helpers for sluice-mock.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static void out_of_memory(size_t size) {
  fprintf(stderr, "sluice-mock: out of memory (%zu bytes)\n", size);
  abort();
}

void *mock_xmalloc(size_t size) {
  void *p = malloc(size ? size : 1);
  if (p == NULL)
    out_of_memory(size);
  return p;
}

void *mock_xcalloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (p == NULL)
    out_of_memory(count * size);
  return p;
}

void *mock_xrealloc(void *ptr, size_t size) {
  void *p = realloc(ptr, size ? size : 1);
  if (p == NULL)
    out_of_memory(size);
  return p;
}

char *mock_xstrndup(const char *s, size_t len) {
  char *p = mock_xmalloc(len + 1);
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

void mock_buf_init(mock_buf *b) {
  b->data = NULL;
  b->len = b->cap = 0;
}

void mock_buf_free(mock_buf *b) {
  free(b->data);
  mock_buf_init(b);
}

void mock_buf_reserve(mock_buf *b, size_t extra) {
  size_t need = b->len + extra + 1; /* room for a terminating NUL */
  if (need <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need)
    cap *= 2;
  b->data = mock_xrealloc(b->data, cap);
  b->cap = cap;
}

void mock_buf_append(mock_buf *b, const void *data, size_t len) {
  mock_buf_reserve(b, len);
  if (len)
    memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
}

void mock_buf_puts(mock_buf *b, const char *s) {
  mock_buf_append(b, s, strlen(s));
}

void mock_buf_printf(mock_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  mock_buf_reserve(b, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

size_t mock_format_u64(char *dst, uint64_t value) {
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + value % 10);
    value /= 10;
  } while (value);
  for (size_t i = 0; i < n; i++)
    dst[i] = tmp[n - 1 - i];
  return n;
}

void mock_buf_u64(mock_buf *b, uint64_t value) {
  mock_buf_reserve(b, 20);
  b->len += mock_format_u64(b->data + b->len, value);
  b->data[b->len] = '\0';
}
