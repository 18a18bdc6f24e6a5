/*
** Unit tests of the NDJSON line splitter: a stream with every kind of line,
** its lines written out by hand, then the same stream cut at every place.
*/
#include <stdlib.h>
#include <string.h>

#include "ndjson.h"
#include "unit.h"

#define MAX_LINES 32

typedef struct recorder {
  char *line[MAX_LINES];
  size_t len[MAX_LINES];
  const char *at[MAX_LINES];   /* where the splitter pointed */
  int n;
  int bad;
} recorder;

static void on_line(void *ud, const char *line, size_t len) {
  recorder *r = ud;
  if (!line || r->n == MAX_LINES) {
    r->bad = 1;
    return;
  }
  r->line[r->n] = malloc(len + 1);
  if (!r->line[r->n]) abort();
  memcpy(r->line[r->n], line, len);
  r->len[r->n] = len;
  r->at[r->n] = line;
  r->n++;
}

static void recorder_clear(recorder *r) {
  int i;
  for (i = 0; i < r->n; i++) free(r->line[i]);
  r->n = 0;
  r->bad = 0;
}

/* Feeds s[0..len) cut at the given offsets, each piece from its own heap
   copy scribbled over and freed after the feed, then finishes. */
static int feed_cut(sl_lines *p, const char *s, size_t len, const size_t *cuts,
                    int ncuts, recorder *r) {
  size_t from = 0;
  int i, rc = SL_LINES_OK;
  for (i = 0; i <= ncuts && rc == SL_LINES_OK; i++) {
    size_t to = i < ncuts ? cuts[i] : len;
    size_t n = to - from;
    char *piece = malloc(n ? n : 1);
    if (!piece) abort();
    if (n) memcpy(piece, s + from, n);
    rc = sl_lines_feed(p, piece, n, on_line, r);
    memset(piece, 'Z', n);
    free(piece);
    from = to;
  }
  if (rc == SL_LINES_OK) rc = sl_lines_finish(p, on_line, r);
  return rc;
}

#define S(lit) lit, sizeof(lit) - 1

typedef struct expected {
  const char *line;
  size_t len;
} expected;

static const char sample[] =
    "{\"a\":1}\n"
    "{\"b\":2}\r\n"                   /* CRLF */
    "\n"                              /* blank lines are skipped */
    "\r\n"
    "   \t \n"
    "  {\"c\":3}  \n"                 /* inner whitespace is kept */
    "{\"d\":1}\r\r\n"                 /* only one CR is stripped */
    "a\rb\n"                          /* a lone CR does not end a line */
    "{\"e\":\"héllo ✓\"}\n"
    "\r\n"
    "{\"f\":4}";                      /* unterminated: delivered at finish */

static const expected sample_lines[] = {
    {S("{\"a\":1}")},
    {S("{\"b\":2}")},
    {S("  {\"c\":3}  ")},
    {S("{\"d\":1}\r")},
    {S("a\rb")},
    {S("{\"e\":\"héllo ✓\"}")},
    {S("{\"f\":4}")},
};

#define SAMPLE_LEN (sizeof sample - 1)
#define SAMPLE_N ((int)(sizeof sample_lines / sizeof sample_lines[0]))

static int same_lines(const recorder *r, const expected *want, int n) {
  int i;
  if (r->bad || r->n != n) return 0;
  for (i = 0; i < n; i++)
    if (r->len[i] != want[i].len || memcmp(r->line[i], want[i].line, r->len[i]))
      return 0;
  return 1;
}

static int sample_ok(const size_t *cuts, int ncuts) {
  sl_lines p;
  recorder r = {0};
  int ok;
  sl_lines_init(&p, 1 << 20);
  ok = feed_cut(&p, sample, SAMPLE_LEN, cuts, ncuts, &r) == SL_LINES_OK &&
       same_lines(&r, sample_lines, SAMPLE_N);
  recorder_clear(&r);
  sl_lines_free(&p);
  return ok;
}

static void test_sample(void) {
  sl_lines p;
  recorder r = {0};
  size_t i, j, cuts[SAMPLE_LEN];
  int bad = 0;

  sl_lines_init(&p, 1 << 20);
  CHECK(sl_lines_feed(&p, sample, SAMPLE_LEN, on_line, &r) == SL_LINES_OK);
  CHECK(r.n == SAMPLE_N - 1);   /* the last line waits for the end */
  /* A whole line in the feed is passed in place. */
  CHECK(r.n > 0 && r.at[0] == sample);
  CHECK(sl_lines_finish(&p, on_line, &r) == SL_LINES_OK);
  CHECK(same_lines(&r, sample_lines, SAMPLE_N));
  recorder_clear(&r);
  sl_lines_free(&p);

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
}

static int run(size_t max, const char *s, size_t len, const size_t *cuts,
               int ncuts, recorder *r) {
  sl_lines p;
  int rc;
  sl_lines_init(&p, max);
  rc = feed_cut(&p, s, len, cuts, ncuts, r);
  sl_lines_free(&p);
  return rc;
}

static void test_finish(void) {
  recorder r = {0};
  CHECK(run(0, S("{\"x\":1}\n  \t\r"), NULL, 0, &r) == SL_LINES_OK);
  CHECK(r.n == 1);   /* a blank final line is not delivered */
  recorder_clear(&r);
  CHECK(run(0, S("x\r"), NULL, 0, &r) == SL_LINES_OK);
  CHECK(r.n == 1 && MEM_IS(r.line[0], r.len[0], "x"));
  recorder_clear(&r);
  CHECK(run(0, S(""), NULL, 0, &r) == SL_LINES_OK && r.n == 0);
  recorder_clear(&r);
}

static void test_limits(void) {
  static const char over[] = "{\"ok\":1}\n123456789\n";
  recorder r = {0};
  size_t cut;
  int bad = 0;
  sl_lines p;
  char *big;

  CHECK(run(8, S("12345678\n"), NULL, 0, &r) == SL_LINES_OK && r.n == 1);
  recorder_clear(&r);
  /* The stripped CR does not count, wherever the stream is cut. */
  for (cut = 0; cut <= 10; cut++) {
    if (run(8, S("12345678\r\n"), &cut, 1, &r) != SL_LINES_OK || r.n != 1)
      bad++;
    recorder_clear(&r);
  }
  CHECK(bad == 0);
  /* One byte over: the line before it was delivered, at every cut. */
  bad = 0;
  for (cut = 0; cut <= sizeof over - 1; cut++) {
    if (run(8, S(over), &cut, 1, &r) != SL_LINES_TOO_BIG || r.n != 1) bad++;
    recorder_clear(&r);
  }
  CHECK(bad == 0);
  /* An unterminated last line over the limit fails at finish or before. */
  CHECK(run(8, S("123456789"), NULL, 0, &r) == SL_LINES_TOO_BIG);
  CHECK(run(8, S("12345678\r"), NULL, 0, &r) == SL_LINES_OK && r.n == 1);
  recorder_clear(&r);

  /* A long line without "\n" fails in the feed that overflows it, and the
     error sticks. */
  big = malloc(1000);
  if (!big) abort();
  memset(big, 'x', 1000);
  sl_lines_init(&p, 100);
  CHECK(sl_lines_feed(&p, big, 50, on_line, &r) == SL_LINES_OK);
  CHECK(sl_lines_feed(&p, big, 52, on_line, &r) == SL_LINES_TOO_BIG);
  CHECK(sl_lines_feed(&p, S("{}\n"), on_line, &r) == SL_LINES_TOO_BIG);
  CHECK(sl_lines_finish(&p, on_line, &r) == SL_LINES_TOO_BIG);
  CHECK(r.n == 0);
  sl_lines_free(&p);
  /* 0 means no limit. */
  big[999] = '\n';
  cut = 500;
  CHECK(run(0, big, 1000, &cut, 1, &r) == SL_LINES_OK);
  CHECK(r.n == 1 && r.len[0] == 999);
  recorder_clear(&r);
  free(big);
}

int main(void) {
  test_sample();
  test_finish();
  test_limits();
  return UNIT_DONE("test_ndjson");
}
