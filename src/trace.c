/*
** The trace writer (see trace.h): a resource of the runtime with a buffer
** that a uv_check writes out once per loop pass. Lines are built by hand,
** numbers and strings escaped here: this runs once per read on the hot path.
*/
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trace.h"

#define FLUSH_AT (64u << 10)     /* write out once the buffer holds this much */

struct sl_trace {
  sl_resource res;               /* "traces" */
  uv_check_t check;              /* writes the pass's lines out */
  sl_runtime *rt;
  int fd;
  char *buf;
  size_t len, cap;
  int failed;                    /* a write failed: the trace stops */
};

static int reserve(sl_trace *t, size_t extra) {
  if (t->len + extra <= t->cap) return 0;
  {
    size_t cap = t->cap ? t->cap : 8192;
    char *b;
    while (cap < t->len + extra) cap *= 2;
    if (!(b = realloc(t->buf, cap))) return -1;
    t->buf = b;
    t->cap = cap;
  }
  return 0;
}

static void put(sl_trace *t, const char *s, size_t n) {
  if (reserve(t, n) != 0) return;
  memcpy(t->buf + t->len, s, n);
  t->len += n;
}

#define PUT(t, lit) put(t, lit, sizeof lit - 1)

/* Writes what the buffer holds: whole lines, always. */
static void flush(sl_trace *t) {
  size_t off = 0;
  while (off < t->len && !t->failed) {
    ssize_t w = write(t->fd, t->buf + off, t->len - off);
    if (w < 0) {
      t->failed = 1;
      fprintf(stderr, "sluice: the trace stopped: cannot write it\n");
      break;
    }
    off += (size_t)w;
  }
  t->len = 0;
}

static void on_check(uv_check_t *h) {
  sl_trace *t = h->data;
  if (t->len) flush(t);
}

static void freed(uv_handle_t *h) {
  sl_trace *t = h->data;
  free(t->buf);
  free(t);
}

/* Closed last of all at shutdown (what the others write as they close is
   traced): while other resources remain, it goes to the end of the list. */
static void trace_close(sl_resource *r, sl_close_how how, const char *reason) {
  sl_trace *t = sl_container_of(r, sl_trace, res);
  sl_runtime *rt = t->rt;
  (void)how, (void)reason;
  if (rt->resources.next != &r->rt_node || rt->resources.prev != &r->rt_node) {
    sl_list_remove(&r->rt_node);
    sl_list_push(&rt->resources, &r->rt_node);
    if (rt->resources.next != &r->rt_node) return;
  }
  if (t->len) flush(t);
  sl_resource_unregister(r);
  if (t->rt->trace == t) t->rt->trace = NULL;
  close(t->fd);
  uv_close((uv_handle_t *)&t->check, freed);
}

static const sl_resource_type trace_type = {"traces", trace_close};

sl_trace *sl_trace_open(sl_runtime *rt, const char *path, char *err, size_t n) {
  sl_trace *t = calloc(1, sizeof *t);
  int rc;
  if (!t) {
    snprintf(err, n, "out of memory");
    return NULL;
  }
  t->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (t->fd < 0) {
    snprintf(err, n, "cannot open the trace %s", path);
    free(t);
    return NULL;
  }
  if ((rc = uv_check_init(&rt->uv, &t->check)) != 0 ||
      (rc = uv_check_start(&t->check, on_check)) != 0) {
    snprintf(err, n, "uv_check: %s", uv_strerror(rc));
    close(t->fd);
    free(t);
    return NULL;
  }
  t->check.data = t;
  uv_unref((uv_handle_t *)&t->check);  /* a trace keeps no loop alive */
  t->rt = rt;
  sl_resource_register(rt, &t->res, &trace_type, NULL);
  t->res.fds = 1;
  rt->trace = t;
  return t;
}

/* ---- building lines --------------------------------------------------------- */

static void put_uint(sl_trace *t, unsigned long long v) {
  char tmp[24];
  int i = (int)sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  put(t, tmp + i, sizeof tmp - (size_t)i);
}

/* Seconds with 6 decimals (microseconds), as sluice.now() gives them. */
static void put_time(sl_trace *t, double secs) {
  unsigned long long us = secs > 0 ? (unsigned long long)(secs * 1e6 + 0.5) : 0;
  char frac[7];
  int i;
  put_uint(t, us / 1000000);
  for (i = 5; i >= 0; i--) {
    frac[i + 1] = (char)('0' + us % 10);
    us /= 10;
  }
  frac[0] = '.';
  put(t, frac, 7);
}

/* A JSON string's body: quotes, backslashes and control bytes escaped. */
static void put_escaped(sl_trace *t, const char *s, size_t n) {
  size_t i, run = 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    put(t, s + run, i - run);
    if (c == '"') PUT(t, "\\\"");
    else if (c == '\\') PUT(t, "\\\\");
    else if (c == '\n') PUT(t, "\\n");
    else if (c == '\t') PUT(t, "\\t");
    else if (c == '\r') PUT(t, "\\r");
    else {
      char u[7];
      snprintf(u, sizeof u, "\\u%04x", c);
      put(t, u, 6);
    }
    run = i + 1;
  }
  put(t, s + run, n - run);
}

static void put_key(sl_trace *t, const char *key) {
  PUT(t, ",\"");
  put(t, key, strlen(key));
  PUT(t, "\":");
}

void sl_trace_begin(sl_trace *t, const char *ev, unsigned long long stream) {
  sl_trace_begin_at(t, ev, stream, sl_now());
}

void sl_trace_begin_at(sl_trace *t, const char *ev, unsigned long long stream, double at) {
  PUT(t, "{\"t\":");
  put_time(t, at);
  PUT(t, ",\"ev\":\"");
  put(t, ev, strlen(ev));
  PUT(t, "\",\"s\":");
  put_uint(t, stream);
}

void sl_trace_str(sl_trace *t, const char *key, const char *s, size_t len) {
  put_key(t, key);
  PUT(t, "\"");
  put_escaped(t, s, len);
  PUT(t, "\"");
}

void sl_trace_num(sl_trace *t, const char *key, double v) {
  char tmp[40];
  int n = snprintf(tmp, sizeof tmp, "%.17g", v);
  put_key(t, key);
  if (v != v || v == 1.0 / 0.0 || v == -1.0 / 0.0) PUT(t, "null");
  else put(t, tmp, (size_t)n);
}

void sl_trace_int(sl_trace *t, const char *key, long long v) {
  put_key(t, key);
  if (v < 0) {
    PUT(t, "-");
    put_uint(t, (unsigned long long)(-v));
  } else {
    put_uint(t, (unsigned long long)v);
  }
}

void sl_trace_bool(sl_trace *t, const char *key, int v) {
  put_key(t, key);
  if (v) PUT(t, "true");
  else PUT(t, "false");
}

void sl_trace_end(sl_trace *t) {
  PUT(t, "}\n");
  if (t->len >= FLUSH_AT) flush(t);
}

/* ---- the per-stream arrays ---------------------------------------------------- */

static int grow_slow(char **p, size_t *cap, size_t need) {
  size_t c = *cap ? *cap : 64;
  char *b;
  while (c < need) c *= 2;
  if (!(b = realloc(*p, c))) return -1;
  *p = b;
  *cap = c;
  return 0;
}

static inline int grow(char **p, size_t *cap, size_t need) {
  return need <= *cap ? 0 : grow_slow(p, cap, need);
}

/* ",<size>" into the sizes array (once per event: sizes below 10,000, nearly
   all of them, take two digits at a time from a table). */
static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

void sl_trace_size(sl_trace *t, sl_trace_pending *p, size_t size) {
  char *d;
  (void)t;
  if (grow(&p->sizes, &p->sizes_cap, p->sizes_len + 22) != 0) return;
  d = p->sizes + p->sizes_len;
  *d++ = ',';
  if (size < 10) {
    *d++ = (char)('0' + size);
  } else if (size < 100) {
    memcpy(d, digit_pairs + 2 * size, 2);
    d += 2;
  } else if (size < 1000) {
    *d++ = (char)('0' + size / 100);
    memcpy(d, digit_pairs + 2 * (size % 100), 2);
    d += 2;
  } else if (size < 10000) {
    memcpy(d, digit_pairs + 2 * (size / 100), 2);
    memcpy(d + 2, digit_pairs + 2 * (size % 100), 2);
    d += 4;
  } else {
    char tmp[20];
    int i = (int)sizeof tmp;
    do tmp[--i] = (char)('0' + size % 10); while (size /= 10);
    memcpy(d, tmp + i, sizeof tmp - (size_t)i);
    d += sizeof tmp - (size_t)i;
  }
  p->sizes_len = (size_t)(d - p->sizes);
}

void sl_trace_data(sl_trace *t, sl_trace_pending *p, unsigned long long stream, double at) {
  if (!p->sizes_len) return;
  PUT(t, "{\"t\":");
  put_time(t, at);
  PUT(t, ",\"ev\":\"data\",\"s\":");
  put_uint(t, stream);
  PUT(t, ",\"sizes\":[");
  put(t, p->sizes + 1, p->sizes_len - 1);  /* without the first comma */
  PUT(t, "]");
  p->sizes_len = 0;
  sl_trace_end(t);
}

/* ,"<piece>" into the pieces array: copied as it is scanned when nothing
   needs escaping (a token, nearly always), else escaped through the trace's
   buffer. */
void sl_trace_piece(sl_trace *t, sl_trace_pending *p, const char *s, size_t len) {
  size_t i, at;
  char *d;
  if (grow(&p->pieces, &p->pieces_cap, p->pieces_len + len + 3) != 0) return;
  d = p->pieces + p->pieces_len;
  d[0] = ',';
  d[1] = '"';
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == '"' || c == '\\') break;
    d[2 + i] = (char)c;
  }
  if (i == len) {
    d[2 + len] = '"';
    p->pieces_len += len + 3;
    return;
  }
  at = t->len;
  put_escaped(t, s, len);
  if (t->len >= at && grow(&p->pieces, &p->pieces_cap, p->pieces_len + (t->len - at) + 3) == 0) {
    p->pieces[p->pieces_len++] = ',';
    p->pieces[p->pieces_len++] = '"';
    memcpy(p->pieces + p->pieces_len, t->buf + at, t->len - at);
    p->pieces_len += t->len - at;
    p->pieces[p->pieces_len++] = '"';
  }
  t->len = at;
}

void sl_trace_text(sl_trace *t, sl_trace_pending *p, unsigned long long stream) {
  if (!p->pieces_len) return;
  sl_trace_begin(t, "text", stream);
  PUT(t, ",\"pieces\":[");
  put(t, p->pieces + 1, p->pieces_len - 1);
  PUT(t, "]");
  p->pieces_len = 0;
  sl_trace_end(t);
}


void sl_trace_pending_free(sl_trace_pending *p) {
  free(p->sizes);
  free(p->pieces);
  memset(p, 0, sizeof *p);
}
