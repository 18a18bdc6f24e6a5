/*
** libFuzzer target for the NDJSON line splitter (src/ndjson.c). As for SSE:
** the whole input in one feed, the input cut at fuzzer-chosen points, and a
** slow reference of the documented rules (split on LF, drop one trailing CR,
** skip blank lines, deliver an unfinished last line at finish) must give the
** same lines and the same status. max_line_bytes bounds the splitter's
** memory; a longer line ends in SL_LINES_TOO_BIG, never comes out cut.
** Every byte but LF (and one CR before it) is passed through: NUL, invalid
** UTF-8.
**
** Input: byte 0 = limit choice (bits 0-2), number of cut bytes (bits 4-7);
** then that many piece lengths (cycled); then the stream.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "ndjson.h"

static const size_t limits[8] = {0, 1, 2, 3, 7, 16, 64, 300};

typedef struct lines {
  fz_bytes *v;
  size_t n, cap;
  int status;
  size_t max;
} lines;

FZ_PLAIN static void lines_add(lines *l, const char *s, size_t n) {
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 16;
    l->v = fz_realloc(l->v, l->cap * sizeof *l->v);
  }
  fz_bytes_set(&l->v[l->n++], s, n);
}

static void lines_free(lines *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i].p);
  free(l->v);
}

static void lines_compare(const lines *a, const lines *b, const char *what) {
  if (a->status != b->status) fz_fail("%s: status %d, expected %d", what, a->status, b->status);
  if (a->n != b->n) fz_fail("%s: %zu lines, expected %zu", what, a->n, b->n);
  for (size_t i = 0; i < a->n; i++)
    if (!fz_bytes_eq(&a->v[i], &b->v[i])) fz_fail("%s: line %zu differs", what, i);
}

FZ_PLAIN static void on_line(void *ud, const char *s, size_t n) {
  lines *l = ud;
  fz_count_pause();
  if (!s) fz_fail("a line with a NULL pointer");
  if (l->max && n > l->max) fz_fail("a line of %zu bytes passed max_line_bytes %zu", n, l->max);
  lines_add(l, s, n);
  fz_count_resume();
}

/* keep() doubles from 256 up to the first size that fits; no need passes
   max + 1 (a line and its CR). */
FZ_PLAIN static void check_bounds(const sl_lines *p, size_t max) {
  size_t b;
  if (!max) return;
  b = 2 * (max + 1) > 256 ? 2 * (max + 1) : 256;
  if (p->line_cap > b || p->line_len > max + 1)
    fz_fail("the line buffer grew past its bound: cap %zu len %zu, max %zu", p->line_cap,
            p->line_len, max);
  if (fz_count_peak() > 2 * b)
    fz_fail("splitter memory peaked at %zu bytes with max_line_bytes %zu", fz_count_peak(), max);
}

FZ_PLAIN static void split(const uint8_t *data, size_t len, size_t max, const uint8_t *cuts,
                  size_t ncuts, lines *out) {
  sl_lines p;
  size_t pos = 0, k = 0;
  int rc = SL_LINES_OK;
  out->max = max;
  fz_feed feed;
  fz_feed_init(&feed, data, len);
  sl_lines_init(&p, max);
  fz_count_start();
  int cut = fz_cuts_move(cuts, ncuts);
  do {
    size_t n = len - pos;
    if (cut) {
      size_t want = cuts[k++ % ncuts];
      if (want < n) n = want;
    }
    char *piece = fz_feed_open(&feed, pos, n);
    fz_count_resume();
    rc = sl_lines_feed(&p, piece, n, on_line, out);
    fz_count_pause();
    check_bounds(&p, max);
    fz_feed_close(&feed, pos, n);
    pos += n;
  } while (pos < len && rc == SL_LINES_OK);
  fz_count_resume();
  if (rc == SL_LINES_OK) rc = sl_lines_finish(&p, on_line, out);
  else if (sl_lines_finish(&p, on_line, out) != rc) fz_fail("the error did not stick");
  out->status = rc;
  sl_lines_free(&p);
  fz_count_stop();
  fz_feed_free(&feed);
}

static int blank(const uint8_t *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!memchr(" \t\r\f\v", s[i], 5)) return 0;
  return 1;
}

static void reference(const uint8_t *s, size_t len, size_t max, lines *out) {
  size_t pos = 0;
  out->status = SL_LINES_OK;
  while (pos < len) {
    size_t end = pos, n;
    while (end < len && s[end] != '\n') end++;
    n = end - pos;
    if (n && s[pos + n - 1] == '\r') n--;
    if (max && n > max) {
      out->status = SL_LINES_TOO_BIG;
      return;
    }
    if (!blank(s + pos, n)) lines_add(out, (const char *)s + pos, n);
    pos = end + 1;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lines whole, cut, want;
  fz_stream_input in;  /* the flag bit is unused */
  if (!fz_stream_input_read(&in, limits, data, size)) return 0;
  memset(&whole, 0, sizeof whole);
  memset(&cut, 0, sizeof cut);
  memset(&want, 0, sizeof want);
  split(in.data, in.size, in.max, NULL, 0, &whole);
  split(in.data, in.size, in.max, in.cuts, in.ncuts, &cut);
  reference(in.data, in.size, in.max, &want);
  lines_compare(&whole, &want, "whole input vs the reference");
  lines_compare(&cut, &whole, "cut input vs whole input");
  lines_free(&whole);
  lines_free(&cut);
  lines_free(&want);
  return 0;
}
