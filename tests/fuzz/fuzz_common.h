/*
** What the fuzz targets share: failing loudly (the input is then saved as a
** crash), byte strings, and a counter of the bytes a parser holds, kept by
** the sanitizer allocator's hooks so the parser's own code is unchanged.
*/
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <sanitizer/allocator_interface.h>
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FZ_UNUSED __attribute__((unused))
/* Harness code run per byte or per feed: not instrumented for coverage, so
   the fuzzer's time and feedback go to the code under test. */
#define FZ_PLAIN __attribute__((no_sanitize("coverage")))

/* A property does not hold: say which (also as the sanitizer's summary line,
   which survives -close_fd_mask=2) and abort so libFuzzer keeps the input. */
static void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
FZ_UNUSED static void fz_fail(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "fuzz property failed: %s\n", msg);
  __sanitizer_report_error_summary(msg);
  abort();
}

FZ_UNUSED FZ_PLAIN static void *fz_malloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) abort();
  return p;
}

FZ_UNUSED FZ_PLAIN static void *fz_realloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (!p) abort();
  return p;
}

typedef struct fz_bytes {
  char *p;
  size_t n, cap;
} fz_bytes;

FZ_UNUSED FZ_PLAIN static void fz_bytes_append(fz_bytes *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->p = fz_realloc(b->p, b->cap);
  }
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

FZ_UNUSED FZ_PLAIN static void fz_bytes_set(fz_bytes *b, const char *s, size_t n) {
  memset(b, 0, sizeof *b);
  fz_bytes_append(b, s, n);
}

FZ_UNUSED FZ_PLAIN static int fz_bytes_eq(const fz_bytes *a, const fz_bytes *b) {
  return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
}

/* Cut lengths move forward when one of them is not 0 (0: an empty feed). */
FZ_UNUSED FZ_PLAIN static int fz_cuts_move(const uint8_t *cuts, size_t ncuts) {
  for (size_t i = 0; cuts && i < ncuts; i++)
    if (cuts[i]) return 1;
  return 0;
}

/* ---- the stream targets' input ------------------------------------------ */

/* Byte 0: bits 0-2 choose the limit from limits[8], bit 3 is a flag, bits
   4-7 say how many cut lengths follow; then those lengths, then the stream.
   Returns 0 when the input is too short to say. */
typedef struct fz_stream_input {
  size_t max;
  int flag;
  const uint8_t *cuts;
  size_t ncuts;
  const uint8_t *data;
  size_t size;
} fz_stream_input;

FZ_UNUSED static int fz_stream_input_read(fz_stream_input *in, const size_t limits[8],
                                          const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  in->max = limits[data[0] & 7];
  in->flag = (data[0] >> 3) & 1;
  in->ncuts = data[0] >> 4;
  if (size < 1 + in->ncuts) return 0;
  in->cuts = data + 1;
  in->data = data + 1 + in->ncuts;
  in->size = size - 1 - in->ncuts;
  return 1;
}

/* ---- feeding a stream in pieces ------------------------------------------ */

/* The stream in one exact-size heap copy, all of it poisoned but the piece
   being fed: a parser that keeps a pointer into an earlier piece, or reads
   ahead of the current one, trips ASan (and finds 'Z's where data was). */
typedef struct fz_feed {
  char *buf;
  size_t len;
} fz_feed;

FZ_UNUSED FZ_PLAIN static void fz_feed_init(fz_feed *f, const uint8_t *data, size_t len) {
  f->buf = fz_malloc(len);
  f->len = len;
  if (len) memcpy(f->buf, data, len);
  ASAN_POISON_MEMORY_REGION(f->buf, len);
}

FZ_UNUSED FZ_PLAIN static char *fz_feed_open(fz_feed *f, size_t pos, size_t n) {
  ASAN_UNPOISON_MEMORY_REGION(f->buf + pos, n);
  return f->buf + pos;
}

FZ_UNUSED FZ_PLAIN static void fz_feed_close(fz_feed *f, size_t pos, size_t n) {
  memset(f->buf + pos, 'Z', n);
  ASAN_POISON_MEMORY_REGION(f->buf + pos, n);
}

FZ_UNUSED FZ_PLAIN static void fz_feed_free(fz_feed *f) {
  ASAN_UNPOISON_MEMORY_REGION(f->buf, f->len);
  free(f->buf);
}

/* ---- counting the bytes allocated between start and stop ---------------- */

static __thread int fz_counting, fz_paused;
static __thread long long fz_live, fz_peak;

FZ_UNUSED FZ_PLAIN static void fz_on_malloc(const volatile void *p, size_t n) {
  (void)p;
  if (fz_counting && !fz_paused) {
    fz_live += (long long)n;
    if (fz_live > fz_peak) fz_peak = fz_live;
  }
}

FZ_UNUSED FZ_PLAIN static void fz_on_free(const volatile void *p) {
  if (fz_counting && !fz_paused && p)
    fz_live -= (long long)__sanitizer_get_allocated_size((const void *)p);
}

FZ_UNUSED FZ_PLAIN static void fz_count_start(void) {
  static int installed;
  if (!installed) {
    __sanitizer_install_malloc_and_free_hooks(fz_on_malloc, fz_on_free);
    installed = 1;
  }
  fz_live = fz_peak = 0;
  fz_paused = 1;  /* until the parser is called */
  fz_counting = 1;
}

/* The harness's own allocations (recording events) are not the parser's. */
FZ_UNUSED FZ_PLAIN static void fz_count_pause(void) { fz_paused = 1; }
FZ_UNUSED FZ_PLAIN static void fz_count_resume(void) { fz_paused = 0; }
FZ_UNUSED FZ_PLAIN static size_t fz_count_peak(void) { return fz_peak > 0 ? (size_t)fz_peak : 0; }

FZ_UNUSED FZ_PLAIN static void fz_count_stop(void) {
  fz_counting = 0;
  if (fz_live != 0) {
    long long live = fz_live;
    fz_live = 0;
    fz_fail("%lld bytes still held after the parser was freed", live);
  }
}

#endif
