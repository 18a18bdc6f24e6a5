/*
** NDJSON line splitter. A line lying whole in the current feed is handed to
** the callback in place; only a line split across feeds is copied.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ndjson.h"

void sl_lines_init(sl_lines *p, size_t max_line_bytes) {
  memset(p, 0, sizeof *p);
  p->max = max_line_bytes ? max_line_bytes : SIZE_MAX;
}

void sl_lines_free(sl_lines *p) {
  free(p->line);
  p->line = NULL;
  p->line_len = p->line_cap = 0;
}

/* Grows geometrically so that a stream settles into no allocation. */
static int keep(sl_lines *p, const char *s, size_t n) {
  size_t need = p->line_len + n;
  if (need > p->line_cap) {
    size_t cap = p->line_cap ? p->line_cap : 256;
    char *q;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    q = realloc(p->line, cap);
    if (!q) return SL_LINES_NOMEM;
    p->line = q;
    p->line_cap = cap;
  }
  memcpy(p->line + p->line_len, s, n);
  p->line_len = need;
  return SL_LINES_OK;
}

static int blank(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    char c = s[i];
    if (c != ' ' && c != '\t' && c != '\r' && c != '\f' && c != '\v') return 0;
  }
  return 1;
}

/* A complete line without its "\n". */
static int deliver(sl_lines *p, const char *s, size_t n, sl_line_fn fn,
                   void *ud) {
  if (n && s[n - 1] == '\r') n--;
  if (n > p->max) return SL_LINES_TOO_BIG;
  if (!blank(s, n)) fn(ud, s, n);
  return SL_LINES_OK;
}

int sl_lines_feed(sl_lines *p, const char *buf, size_t len, sl_line_fn fn,
                  void *ud) {
  const char *end = buf + len, *nl;
  int rc;

  if (p->status != SL_LINES_OK) return p->status;
  while (buf < end) {
    size_t n;
    nl = memchr(buf, '\n', (size_t)(end - buf));
    n = (size_t)((nl ? nl : end) - buf);
    if (p->line_len || !nl) {
      size_t total = p->line_len + n;
      /* One byte of slack: a trailing "\r" is not part of the line. */
      if (total > p->max && total - 1 > p->max)
        return p->status = SL_LINES_TOO_BIG;
      if ((rc = keep(p, buf, n)) != SL_LINES_OK) return p->status = rc;
      if (!nl) break;
      n = p->line_len;
      p->line_len = 0;  /* the bytes stay in p->line while they are used */
      rc = deliver(p, p->line, n, fn, ud);
    } else {
      rc = deliver(p, buf, n, fn, ud);
    }
    if (rc != SL_LINES_OK) return p->status = rc;
    buf = nl + 1;
  }
  return SL_LINES_OK;
}

int sl_lines_finish(sl_lines *p, sl_line_fn fn, void *ud) {
  size_t n = p->line_len;
  if (p->status != SL_LINES_OK) return p->status;
  p->line_len = 0;
  if (n) p->status = deliver(p, p->line, n, fn, ud);
  return p->status;
}
