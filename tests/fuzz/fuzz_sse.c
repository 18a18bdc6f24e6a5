/*
** libFuzzer target for the SSE parser (src/sse.c). Three readings of one
** stream must agree exactly: the whole input in one feed, the input cut at
** fuzzer-chosen points (optionally trimming between feeds), and a slow
** reference written from the WHATWG rules. max_event_bytes must bound the
** parser's memory, and an over-limit event must end in SL_SSE_TOO_BIG, never
** come out cut short. Bytes pass through as they are: NUL and invalid UTF-8
** included (an id holding NUL is ignored, as the rules say).
**
** Input: byte 0 = limit choice (bits 0-2), trim (bit 3), number of cut
** bytes (bits 4-7); then that many piece lengths (cycled); then the stream.
*/
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "sse.h"

static const size_t limits[8] = {0, 1, 2, 3, 7, 16, 64, 300};

/* ---- what came out ----------------------------------------------------- */

typedef struct event {
  fz_bytes data, type, id;
} event;

typedef struct events {
  event *v;
  size_t n, cap;
  int status;
  unsigned long comments;
  long retry;
} events;

FZ_PLAIN static void events_add(events *e, const char *data, size_t data_len, const char *type,
                       size_t type_len, const char *id, size_t id_len) {
  if (e->n == e->cap) {
    e->cap = e->cap ? e->cap * 2 : 16;
    e->v = fz_realloc(e->v, e->cap * sizeof *e->v);
  }
  fz_bytes_set(&e->v[e->n].data, data, data_len);
  fz_bytes_set(&e->v[e->n].type, type, type_len);
  fz_bytes_set(&e->v[e->n].id, id, id_len);
  e->n++;
}

static void events_free(events *e) {
  for (size_t i = 0; i < e->n; i++) {
    free(e->v[i].data.p);
    free(e->v[i].type.p);
    free(e->v[i].id.p);
  }
  free(e->v);
}

static void events_compare(const events *a, const events *b, const char *what) {
  if (a->status != b->status)
    fz_fail("%s: status %d, expected %d", what, a->status, b->status);
  if (a->n != b->n) fz_fail("%s: %zu events, expected %zu", what, a->n, b->n);
  for (size_t i = 0; i < a->n; i++) {
    if (!fz_bytes_eq(&a->v[i].data, &b->v[i].data)) fz_fail("%s: event %zu: data differs", what, i);
    if (!fz_bytes_eq(&a->v[i].type, &b->v[i].type)) fz_fail("%s: event %zu: type differs", what, i);
    if (!fz_bytes_eq(&a->v[i].id, &b->v[i].id)) fz_fail("%s: event %zu: id differs", what, i);
  }
  if (a->comments != b->comments)
    fz_fail("%s: %lu comments, expected %lu", what, a->comments, b->comments);
  if (a->retry != b->retry) fz_fail("%s: retry %ld, expected %ld", what, a->retry, b->retry);
}

/* ---- the parser under test, with its memory counted ------------------ */

typedef struct run {
  events *out;
  size_t max;
} run;

FZ_PLAIN static void on_event(void *ud, const sl_sse_event *ev) {
  run *r = ud;
  fz_count_pause();
  if (!ev->data || !ev->event || !ev->id) fz_fail("an event with a NULL pointer");
  if (r->max && ev->data_len > r->max)
    fz_fail("an event of %zu bytes passed max_event_bytes %zu", ev->data_len, r->max);
  events_add(r->out, ev->data, ev->data_len, ev->event, ev->event_len, ev->id, ev->id_len);
  fz_count_resume();
}

/* What one parser buffer may hold: reserve() doubles from 64 up to the
   first size that fits a need, and no need passes max. */
static size_t buffer_bound(size_t max) {
  return max ? (2 * max > 64 ? 2 * max : 64) : SIZE_MAX;
}

FZ_PLAIN static void check_bounds(const sl_sse *p, size_t max) {
  size_t b = buffer_bound(max);
  if (!max) return;
  if (p->line_cap > b || p->data_cap > b || p->event_cap > b || p->id_cap > b)
    fz_fail("a buffer grew past its bound: line %zu data %zu event %zu id %zu, bound %zu",
            p->line_cap, p->data_cap, p->event_cap, p->id_cap, b);
  if (p->line_len > max || p->data_len > max || p->event_len > max || p->id_len > max)
    fz_fail("a buffer holds more than max_event_bytes");
  /* every live byte the parser allocated, plus one realloc in flight */
  if (fz_count_peak() > 5 * b)
    fz_fail("parser memory peaked at %zu bytes with max_event_bytes %zu", fz_count_peak(), max);
}

/* Feeds data cut into pieces (cuts == NULL: whole); a piece is readable
   only during its feed (see fz_feed). */
FZ_PLAIN static void parse(const uint8_t *data, size_t len, size_t max, const uint8_t *cuts,
                  size_t ncuts, int trim, events *out) {
  sl_sse p;
  run r = {out, max};
  size_t pos = 0, k = 0;
  int rc = SL_SSE_OK;
  fz_feed feed;
  fz_feed_init(&feed, data, len);
  sl_sse_init(&p, max);
  fz_count_start();  /* paused until the parser runs */
  int cut = fz_cuts_move(cuts, ncuts);
  do {
    size_t n = len - pos;
    if (cut) {  /* a 0 is an empty feed */
      size_t want = cuts[k++ % ncuts];
      if (want < n) n = want;
    }
    char *piece = fz_feed_open(&feed, pos, n);
    fz_count_resume();
    rc = sl_sse_feed(&p, piece, n, on_event, &r);
    if (trim) sl_sse_trim(&p);
    fz_count_pause();
    check_bounds(&p, max);
    fz_feed_close(&feed, pos, n);
    pos += n;
  } while (pos < len && rc == SL_SSE_OK);
  out->status = rc;
  out->comments = p.comments;
  out->retry = p.retry;
  fz_count_resume();
  sl_sse_free(&p);
  fz_count_stop();
  fz_feed_free(&feed);
}

/* ---- the reference: the WHATWG rules, one line at a time -------------- */

typedef struct ref {
  fz_bytes data, type, id;
  int has_data;
  events *out;
  size_t max;
} ref;

static int ref_line(ref *r, const uint8_t *s, size_t n) {
  size_t colon = 0, vstart, vlen, flen;
  if (n == 0) {  /* dispatch */
    if (r->has_data)
      events_add(r->out, (const char *)r->data.p, r->data.n, (const char *)r->type.p,
                 r->type.n, (const char *)r->id.p, r->id.n);
    r->has_data = 0;
    r->data.n = 0;
    r->type.n = 0;
    return SL_SSE_OK;
  }
  if (s[0] == ':') {
    r->out->comments++;
    return SL_SSE_OK;
  }
  while (colon < n && s[colon] != ':') colon++;
  flen = colon;
  if (colon < n) {
    vstart = colon + 1;
    if (vstart < n && s[vstart] == ' ') vstart++;
  } else {
    vstart = n;
  }
  vlen = n - vstart;
  if (flen == 4 && memcmp(s, "data", 4) == 0) {
    /* append the value and a LF; the last LF is dropped at dispatch */
    size_t joined = r->has_data ? r->data.n + 1 + vlen : vlen;
    if (r->max && joined > r->max) return SL_SSE_TOO_BIG;
    if (r->has_data) fz_bytes_append(&r->data, "\n", 1);
    fz_bytes_append(&r->data, (const char *)s + vstart, vlen);
    r->has_data = 1;
  } else if (flen == 5 && memcmp(s, "event", 5) == 0) {
    r->type.n = 0;
    fz_bytes_append(&r->type, (const char *)s + vstart, vlen);
  } else if (flen == 2 && memcmp(s, "id", 2) == 0) {
    if (!memchr(s + vstart, 0, vlen)) {
      r->id.n = 0;
      fz_bytes_append(&r->id, (const char *)s + vstart, vlen);
    }
  } else if (flen == 5 && memcmp(s, "retry", 5) == 0) {
    size_t i;
    long ms = 0;
    for (i = 0; i < vlen; i++)
      if (s[vstart + i] < '0' || s[vstart + i] > '9') break;
    if (vlen > 0 && i == vlen) {
      for (i = 0; i < vlen; i++) {
        int d = s[vstart + i] - '0';
        ms = ms > (LONG_MAX - d) / 10 ? LONG_MAX : ms * 10 + d;
      }
      r->out->retry = ms;
    }
  }
  return SL_SSE_OK;
}

static void reference(const uint8_t *s, size_t len, size_t max, events *out) {
  static const uint8_t bom[3] = {0xEF, 0xBB, 0xBF};
  ref r;
  size_t pos = 0;
  memset(&r, 0, sizeof r);
  r.out = out;
  r.max = max;
  out->status = SL_SSE_OK;
  out->retry = -1;
  if (len < 3 && memcmp(s, bom, len) == 0) return;  /* a BOM may still be coming */
  if (len >= 3 && memcmp(s, bom, 3) == 0) pos = 3;
  while (pos < len) {
    size_t end = pos, next;
    while (end < len && s[end] != '\r' && s[end] != '\n') end++;
    if (max && end - pos > max) {
      out->status = SL_SSE_TOO_BIG;  /* a line too long, even an unfinished one */
      break;
    }
    if (end == len) break;  /* an unfinished line is never processed */
    next = end + 1;
    if (s[end] == '\r' && next < len && s[next] == '\n') next++;
    if ((out->status = ref_line(&r, s + pos, end - pos)) != SL_SSE_OK) break;
    pos = next;
  }
  free(r.data.p);
  free(r.type.p);
  free(r.id.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  events whole, cut, want;
  fz_stream_input in;
  if (!fz_stream_input_read(&in, limits, data, size)) return 0;
  memset(&whole, 0, sizeof whole);
  memset(&cut, 0, sizeof cut);
  memset(&want, 0, sizeof want);
  parse(in.data, in.size, in.max, NULL, 0, 0, &whole);
  parse(in.data, in.size, in.max, in.cuts, in.ncuts, in.flag, &cut);  /* flag: trim */
  reference(in.data, in.size, in.max, &want);
  events_compare(&whole, &want, "whole input vs the reference");
  events_compare(&cut, &whole, "cut input vs whole input");
  events_free(&whole);
  events_free(&cut);
  events_free(&want);
  return 0;
}
