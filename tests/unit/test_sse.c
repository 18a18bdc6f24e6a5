/*
** Unit tests of the SSE parser: one stream exercising every WHATWG rule,
** with its events written out by hand, then the same stream cut at every
** place to show that how bytes arrive never changes what comes out.
*/
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"
#include "unit.h"

#define MAX_EVENTS 64

typedef struct recorded {
  char *data, *event, *id;
  size_t data_len, event_len, id_len;
  const char *data_at;    /* where the parser pointed, to test zero-copy */
} recorded;

typedef struct recorder {
  recorded ev[MAX_EVENTS];
  int n;
  int bad;                /* NULL pointers or too many events */
} recorder;

static char *dup_bytes(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (!d) abort();
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

static void on_event(void *ud, const sl_sse_event *ev) {
  recorder *r = ud;
  recorded *e;
  if (!ev->data || !ev->event || !ev->id || r->n == MAX_EVENTS) {
    r->bad = 1;
    return;
  }
  e = &r->ev[r->n++];
  e->data = dup_bytes(ev->data, ev->data_len);
  e->data_len = ev->data_len;
  e->event = dup_bytes(ev->event, ev->event_len);
  e->event_len = ev->event_len;
  e->id = dup_bytes(ev->id, ev->id_len);
  e->id_len = ev->id_len;
  e->data_at = ev->data;
}

static void recorder_clear(recorder *r) {
  int i;
  for (i = 0; i < r->n; i++) {
    free(r->ev[i].data);
    free(r->ev[i].event);
    free(r->ev[i].id);
  }
  r->n = 0;
  r->bad = 0;
}

/* Feeds stream[0..len) cut at the given offsets. Each piece lives in its own
   heap copy that is scribbled over and freed right after the feed, so a
   pointer kept into it shows up as wrong data (and to ASan/valgrind). */
static int trim_between;  /* call sl_sse_trim after every feed */

static int feed_cut(sl_sse *p, const char *stream, size_t len,
                    const size_t *cuts, int ncuts, recorder *r) {
  size_t from = 0;
  int i, rc = SL_SSE_OK;
  for (i = 0; i <= ncuts && rc == SL_SSE_OK; i++) {
    size_t to = i < ncuts ? cuts[i] : len;
    size_t n = to - from;
    char *piece = malloc(n ? n : 1);
    if (!piece) abort();
    if (n) memcpy(piece, stream + from, n);
    rc = sl_sse_feed(p, piece, n, on_event, r);
    if (trim_between) sl_sse_trim(p);
    memset(piece, 'Z', n);
    free(piece);
    from = to;
  }
  return rc;
}

typedef struct expected {
  const char *data;  size_t data_len;
  const char *event; size_t event_len;
  const char *id;    size_t id_len;
} expected;

#define S(lit) lit, sizeof(lit) - 1

static int same_events(const recorder *r, const expected *want, int n) {
  int i;
  if (r->bad || r->n != n) return 0;
  for (i = 0; i < n; i++) {
    const recorded *e = &r->ev[i];
    const expected *w = &want[i];
    if (e->data_len != w->data_len || memcmp(e->data, w->data, w->data_len) ||
        e->event_len != w->event_len ||
        memcmp(e->event, w->event, w->event_len) || e->id_len != w->id_len ||
        memcmp(e->id, w->id, w->id_len))
      return 0;
  }
  return 1;
}

/* ---- the sample stream ------------------------------------------------- */

static const char sample[] =
    "\xEF\xBB\xBF"                 /* BOM, dropped */
    ": comment at start\n"         /* comment 1 */
    "data: first\n"
    "\n"                           /* 1 */
    "data:x\r\n"                   /* no space after the colon; CRLF */
    "\r\n"                         /* 2 */
    "data:  x\r"                   /* only one space is removed; CR */
    "\r"                           /* 3 */
    "event: update\n"
    "data: a\n"
    "data: b\n"
    "id: 7\n"
    "\n"                           /* 4 */
    "data: after id\n"             /* the id persists, the type does not */
    "\n"                           /* 5 */
    "id: bad\0id\n"                /* an id holding NUL is ignored */
    "data: nul id\n"
    "\n"                           /* 6 */
    "retry: 1500\n"
    "retry: 15x\n"                 /* not all digits: ignored */
    "retry:\n"                     /* empty: ignored */
    "retry:  20\n"                 /* " 20" is not all digits: ignored */
    "data\n"                       /* no colon: data with an empty value */
    "\n"                           /* 7 */
    "data:\n"
    "data:\n"
    "\n"                           /* 8 */
    "event: ignored\n"
    "\n"                           /* blank line without data: nothing */
    "data: default type again\n"
    "\n"                           /* 9 */
    "unknown: field\n"
    "Data: wrong case\n"
    "data : space before colon\n"
    "event: lost\n"
    "event\n"                      /* no colon: the type becomes empty */
    "data: z\n"
    ":\n"                          /* comment 2 */
    "\n"                           /* 10 */
    "id\n"                         /* the last event ID becomes empty */
    "data: héllo wörld ✓ 😀\n"
    "\n"                           /* 11 */
    "data: x\r"
    "id: 9\r\n"
    ": c2\r\n"                     /* comment 3 */
    "data: y\n"
    "\r"                           /* 12 */
    "data:no space\n"
    "\n"                           /* 13 */
    "event: tail\n"
    "data: tail never dispatched\n"
    "data: partial";               /* the stream ends inside an event */

static const expected sample_events[] = {
    {S("first"), S(""), S("")},
    {S("x"), S(""), S("")},
    {S(" x"), S(""), S("")},
    {S("a\nb"), S("update"), S("7")},
    {S("after id"), S(""), S("7")},
    {S("nul id"), S(""), S("7")},
    {S(""), S(""), S("7")},
    {S("\n"), S(""), S("7")},
    {S("default type again"), S(""), S("7")},
    {S("z"), S(""), S("7")},
    {S("héllo wörld ✓ 😀"), S(""), S("")},
    {S("x\ny"), S(""), S("9")},
    {S("no space"), S(""), S("9")},
};

#define SAMPLE_LEN (sizeof sample - 1)
#define SAMPLE_N ((int)(sizeof sample_events / sizeof sample_events[0]))

/* Parses the sample cut at the given offsets; 1 when everything matches. */
static int sample_ok(const size_t *cuts, int ncuts) {
  sl_sse p;
  recorder r = {0};
  int rc, ok;
  sl_sse_init(&p, 1 << 20);
  rc = feed_cut(&p, sample, SAMPLE_LEN, cuts, ncuts, &r);
  ok = rc == SL_SSE_OK && same_events(&r, sample_events, SAMPLE_N) &&
       p.comments == 3 && p.retry == 1500;
  recorder_clear(&r);
  sl_sse_free(&p);
  return ok;
}

static void test_sample_whole(void) {
  sl_sse p;
  recorder r = {0};
  sl_sse_init(&p, 1 << 20);
  CHECK(p.retry == -1);
  CHECK(p.comments == 0);
  CHECK(sl_sse_feed(&p, sample, SAMPLE_LEN, on_event, &r) == SL_SSE_OK);
  CHECK(r.n == SAMPLE_N);
  CHECK(same_events(&r, sample_events, SAMPLE_N));
  CHECK(p.comments == 3);
  CHECK(p.retry == 1500);
  /* Spot checks that say which rule broke if same_events fails. */
  if (r.n == SAMPLE_N) {
    CHECK_MEM(r.ev[2].data, r.ev[2].data_len, " x");
    CHECK_MEM(r.ev[3].data, r.ev[3].data_len, "a\nb");
    CHECK_MEM(r.ev[3].event, r.ev[3].event_len, "update");
    CHECK_MEM(r.ev[5].id, r.ev[5].id_len, "7");
    CHECK(r.ev[6].data_len == 0);
    CHECK_MEM(r.ev[7].data, r.ev[7].data_len, "\n");
    CHECK(r.ev[8].event_len == 0);
    CHECK(r.ev[9].event_len == 0);
    CHECK_MEM(r.ev[10].data, r.ev[10].data_len, "héllo wörld ✓ 😀");
    CHECK(r.ev[10].id_len == 0);
    CHECK_MEM(r.ev[11].data, r.ev[11].data_len, "x\ny");
  }
  /* The unterminated tail is still never dispatched when more bytes that
     do not end it arrive. */
  CHECK(sl_sse_feed(&p, " more", 5, on_event, &r) == SL_SSE_OK);
  CHECK(r.n == SAMPLE_N);
  recorder_clear(&r);
  sl_sse_free(&p);
}

static void test_sample_split(void) {
  size_t i, j, cuts[SAMPLE_LEN];
  int bad = 0;
  for (i = 0; i <= SAMPLE_LEN; i++) {
    cuts[0] = i;
    if (!sample_ok(cuts, 1)) {
      if (!bad) fprintf(stderr, "two feeds: first failure cut at %zu\n", i);
      bad++;
    }
  }
  CHECK(bad == 0);

  for (i = 0; i < SAMPLE_LEN; i++) cuts[i] = i + 1;
  CHECK(sample_ok(cuts, (int)SAMPLE_LEN - 1));  /* one byte at a time */

  bad = 0;
  for (i = 0; i <= SAMPLE_LEN; i++) {
    for (j = i; j <= SAMPLE_LEN; j++) {
      cuts[0] = i;
      cuts[1] = j;
      if (!sample_ok(cuts, 2)) {
        if (!bad)
          fprintf(stderr, "three feeds: first failure at %zu,%zu\n", i, j);
        bad++;
      }
    }
  }
  CHECK(bad == 0);

  /* The same with the idle buffers freed between feeds, as sluice does with
     many streams: nothing pending may be lost. */
  trim_between = 1;
  bad = 0;
  for (i = 0; i <= SAMPLE_LEN; i++) {
    cuts[0] = i;
    if (!sample_ok(cuts, 1)) bad++;
  }
  for (i = 0; i < SAMPLE_LEN; i++) cuts[i] = i + 1;
  if (!sample_ok(cuts, (int)SAMPLE_LEN - 1)) bad++;
  CHECK(bad == 0);
  trim_between = 0;
}

/* ---- single rules ----------------------------------------------------- */

static int count_events(size_t max, const char *s, size_t len,
                        const size_t *cuts, int ncuts, recorder *r,
                        int *rc) {
  sl_sse p;
  sl_sse_init(&p, max);
  *rc = feed_cut(&p, s, len, cuts, ncuts, r);
  sl_sse_free(&p);
  return r->n;
}

static void test_bom(void) {
  static const char doubled[] = "\xEF\xBB\xBF\xEF\xBB\xBF" "data: x\n\n";
  static const char late[] = "data: a\n\n\xEF\xBB\xBF" "data: b\n\n";
  static const char lookalike[] = "\xEF\xBB" "data: x\n\n";
  static const char bare[] = "\xEF\xBB\xBF" "data: x\n\n";
  size_t cut;
  recorder r = {0};
  int rc;

  /* Only one BOM, and only at the very start, is dropped: what follows
     makes the field name unknown. */
  CHECK(count_events(0, S(doubled), NULL, 0, &r, &rc) == 0 && rc == 0);
  recorder_clear(&r);
  CHECK(count_events(0, S(late), NULL, 0, &r, &rc) == 1 && rc == 0);
  recorder_clear(&r);
  /* Bytes that start like a BOM but are not one stay in the stream, also
     when the feed ends inside them. */
  for (cut = 0; cut <= 3; cut++) {
    CHECK(count_events(0, S(lookalike), &cut, 1, &r, &rc) == 0 && rc == 0);
    recorder_clear(&r);
  }
  /* A BOM split across feeds is still dropped. */
  for (cut = 0; cut <= 4; cut++) {
    CHECK(count_events(0, S(bare), &cut, 1, &r, &rc) == 1 && rc == 0 &&
          MEM_IS(r.ev[0].data, r.ev[0].data_len, "x"));
    recorder_clear(&r);
  }
}

static void test_cr_lf_across_feeds(void) {
  static const char s[] = "data: a\r\ndata: b\n\n";
  size_t cut = 8;   /* right after the CR */
  size_t cuts3[2] = {8, 8};
  recorder r = {0};
  int rc;

  CHECK(count_events(0, S(s), &cut, 1, &r, &rc) == 1 && rc == 0);
  CHECK(r.n == 1 && MEM_IS(r.ev[0].data, r.ev[0].data_len, "a\nb"));
  recorder_clear(&r);
  /* An empty feed between the CR and the LF changes nothing. */
  CHECK(count_events(0, S(s), cuts3, 2, &r, &rc) == 1 && rc == 0);
  CHECK(r.n == 1 && MEM_IS(r.ev[0].data, r.ev[0].data_len, "a\nb"));
  recorder_clear(&r);
  /* Only an LF joins the CR: a second CR is a blank line and dispatches. */
  CHECK(count_events(0, S("data: a\r\r"), &cut, 1, &r, &rc) == 1 && rc == 0);
  recorder_clear(&r);
  /* An LF that follows an LF-ended feed is a blank line of its own. */
  cut = 8;
  CHECK(count_events(0, S("data: a\n\n"), &cut, 1, &r, &rc) == 1 && rc == 0);
  recorder_clear(&r);
}

static void test_zero_copy(void) {
  static const char s[] = "data: hello\n\ndata: a\ndata: b\n\n";
  sl_sse p;
  recorder r = {0};
  sl_sse_init(&p, 0);
  CHECK(sl_sse_feed(&p, s, sizeof s - 1, on_event, &r) == SL_SSE_OK);
  CHECK(r.n == 2);
  if (r.n == 2) {
    /* A one-line event whole in the feed points into the caller's bytes. */
    CHECK(r.ev[0].data_at == s + 6);
    CHECK_MEM(r.ev[1].data, r.ev[1].data_len, "a\nb");
  }
  recorder_clear(&r);
  sl_sse_free(&p);
}

static void test_retry(void) {
  sl_sse p;
  recorder r = {0};
  sl_sse_init(&p, 0);
  CHECK(sl_sse_feed(&p, S("retry: 0\n"), on_event, &r) == SL_SSE_OK);
  CHECK(p.retry == 0);
  CHECK(sl_sse_feed(&p, S("retry: -5\nretry: 1e3\nretry: 3 \n"), on_event,
                    &r) == SL_SSE_OK);
  CHECK(p.retry == 0);
  CHECK(sl_sse_feed(&p, S("retry:99999999999999999999999999\n"), on_event,
                    &r) == SL_SSE_OK);
  CHECK(p.retry == LONG_MAX);
  CHECK(r.n == 0);
  sl_sse_free(&p);
}

static void test_limits(void) {
  static const char fits[] = "data:01234567\ndata:0123456\n\n";   /* 16 */
  static const char over[] = "data: ok\n\ndata:01234567\ndata:01234567\n\n";
  static const char long_line[] = "data: ok\n\ndata: 0123456789abcdefg\n\n";
  char *huge;
  size_t i, cut, huge_len = 1002, failed_at = 0;
  sl_sse p;
  recorder r = {0};
  int rc, bad = 0;

  CHECK(count_events(16, S(fits), NULL, 0, &r, &rc) == 1 && rc == SL_SSE_OK);
  CHECK(r.n == 1 && r.ev[0].data_len == 16);
  recorder_clear(&r);

  /* Joined data of 17 bytes from lines that each fit; the event before it
     was delivered. The outcome is the same wherever the stream is cut. */
  for (cut = 0; cut <= sizeof over - 1; cut++) {
    if (count_events(16, S(over), &cut, 1, &r, &rc) != 1 ||
        rc != SL_SSE_TOO_BIG)
      bad++;
    recorder_clear(&r);
  }
  CHECK(bad == 0);

  /* One line longer than the limit. */
  CHECK(count_events(16, S(long_line), NULL, 0, &r, &rc) == 1 &&
        rc == SL_SSE_TOO_BIG);
  recorder_clear(&r);

  /* Not fed again after an error, but if it were, the error sticks. */
  sl_sse_init(&p, 16);
  CHECK(sl_sse_feed(&p, S(long_line), on_event, &r) == SL_SSE_TOO_BIG);
  CHECK(sl_sse_feed(&p, S("data: a\n\n"), on_event, &r) == SL_SSE_TOO_BIG);
  CHECK(r.n == 1);
  recorder_clear(&r);
  sl_sse_free(&p);

  /* A huge comment line: rejected in one piece, and in small pieces as soon
     as the pending part passes the limit, before the line ends. */
  huge = malloc(huge_len);
  if (!huge) abort();
  huge[0] = ':';
  memset(huge + 1, 'x', huge_len - 2);
  huge[huge_len - 1] = '\n';
  sl_sse_init(&p, 100);
  CHECK(sl_sse_feed(&p, huge, huge_len, on_event, &r) == SL_SSE_TOO_BIG);
  CHECK(p.comments == 0);
  sl_sse_free(&p);
  sl_sse_init(&p, 100);
  for (i = 0; i < huge_len; i += 7) {
    size_t n = huge_len - i < 7 ? huge_len - i : 7;
    if (sl_sse_feed(&p, huge + i, n, on_event, &r) != SL_SSE_OK) {
      failed_at = i + n;
      break;
    }
  }
  CHECK(failed_at > 100 && failed_at <= 107);
  sl_sse_free(&p);
  /* An unterminated line fails within the feed that overflows it. */
  sl_sse_init(&p, 100);
  CHECK(sl_sse_feed(&p, huge, 200, on_event, &r) == SL_SSE_TOO_BIG);
  sl_sse_free(&p);
  /* A line of exactly the limit is fine. */
  memcpy(huge, "data: ", 6);
  huge[100] = '\n';
  huge[101] = '\n';
  CHECK(count_events(100, huge, 102, NULL, 0, &r, &rc) == 1 && rc == 0);
  CHECK(r.n == 1 && r.ev[0].data_len == 94);
  recorder_clear(&r);
  free(huge);

  /* 0 means no limit. */
  huge_len = (1u << 20) + 8;
  huge = malloc(huge_len);
  if (!huge) abort();
  memcpy(huge, "data:", 5);
  memset(huge + 5, 'y', huge_len - 7);
  huge[huge_len - 2] = huge[huge_len - 1] = '\n';
  cut = 4096;
  CHECK(count_events(0, huge, huge_len, &cut, 1, &r, &rc) == 1 && rc == 0);
  CHECK(r.n == 1 && r.ev[0].data_len == huge_len - 7);
  recorder_clear(&r);
  free(huge);
}

static int same_bytes(const char *s, size_t n, const char *want, int want_n) {
  return n == (size_t)want_n && memcmp(s, want, n) == 0;
}

/* Many events through reused buffers: the data of events split in every
   way across feeds comes out whole. */
static void test_many_events(void) {
  char stream[64 * 40];
  size_t len = 0, off;
  sl_sse p;
  recorder r = {0};
  int i, bad = 0;
  for (i = 0; i < 40; i++)
    len += (size_t)sprintf(stream + len, "id: %d\ndata: {\"n\":%d}\n\n", i, i);
  sl_sse_init(&p, 0);
  for (off = 0; off < len; off += 13) {
    size_t n = len - off < 13 ? len - off : 13;
    if (sl_sse_feed(&p, stream + off, n, on_event, &r) != SL_SSE_OK) bad++;
  }
  CHECK(bad == 0);
  CHECK(r.n == 40);
  for (i = 0; i < r.n; i++) {
    char want[32], id[16];
    int wn = sprintf(want, "{\"n\":%d}", i), idn = sprintf(id, "%d", i);
    if (!same_bytes(r.ev[i].data, r.ev[i].data_len, want, wn) ||
        !same_bytes(r.ev[i].id, r.ev[i].id_len, id, idn))
      bad++;
  }
  CHECK(bad == 0);
  recorder_clear(&r);
  sl_sse_free(&p);
}

int main(void) {
  test_sample_whole();
  test_sample_split();
  test_bom();
  test_cr_lf_across_feeds();
  test_zero_copy();
  test_retry();
  test_limits();
  test_many_events();
  return UNIT_DONE("test_sse");
}
