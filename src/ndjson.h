/*
** Newline-delimited JSON framing: splits a byte stream into lines. It does
** not parse JSON; the Lua side decodes each line. No I/O, no Lua, no curl.
*/
#ifndef SL_NDJSON_H
#define SL_NDJSON_H

#include <stddef.h>

enum {
  SL_LINES_OK = 0,
  SL_LINES_TOO_BIG = 1,   /* a line exceeds the limit */
  SL_LINES_NOMEM = 2      /* a buffer could not grow */
};

/* Called once per non-blank line, without its "\n" or "\r\n"; the pointer is
   valid only during the call. */
typedef void (*sl_line_fn)(void *ud, const char *line, size_t len);

typedef struct sl_lines {
  size_t max;               /* max_line_bytes; 0 was turned into "no limit" */
  char *line; size_t line_len, line_cap;   /* a line split across feeds */
  int status;               /* sticky error, SL_LINES_OK while healthy */
} sl_lines;

/* max_line_bytes bounds each line (not counting its line ending); 0 means
   no limit. */
void sl_lines_init(sl_lines *p, size_t max_line_bytes);

/* Splits on "\n", drops one trailing "\r", skips blank lines (empty or only
   ASCII whitespace). Lines before an error were delivered; do not feed again
   after an error. */
int sl_lines_feed(sl_lines *p, const char *buf, size_t len, sl_line_fn fn,
                  void *ud);

/* At end of stream: delivers a last line that had no "\n", if not blank. */
int sl_lines_finish(sl_lines *p, sl_line_fn fn, void *ud);

void sl_lines_free(sl_lines *p);

#endif
