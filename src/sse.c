/*
** Server-Sent Events parser (WHATWG "interpreting an event stream").
** The common event, one "data:" line lying whole in the current feed, is
** handed to the callback as pointers into the caller's buffer; bytes are
** copied only for lines split across feeds and for multi-line data.
*/
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

static const unsigned char utf8_bom[3] = {0xEF, 0xBB, 0xBF};

/* Grows a buffer geometrically so that a stream settles into no allocation. */
static int reserve(char **buf, size_t *cap, size_t need) {
  size_t n = *cap ? *cap : 64;
  char *q;
  if (need <= *cap) return 0;
  while (n < need) n = n > SIZE_MAX / 2 ? need : n * 2;
  q = realloc(*buf, n);
  if (!q) return -1;
  *buf = q;
  *cap = n;
  return 0;
}

static int append(char **buf, size_t *len, size_t *cap, const char *s,
                  size_t n) {
  if (reserve(buf, cap, *len + n) != 0) return SL_SSE_NOMEM;
  if (n) memcpy(*buf + *len, s, n);
  *len += n;
  return SL_SSE_OK;
}

void sl_sse_init(sl_sse *p, size_t max_event_bytes) {
  memset(p, 0, sizeof *p);
  p->retry = -1;
  p->max = max_event_bytes ? max_event_bytes : SIZE_MAX;
}

void sl_sse_free(sl_sse *p) {
  free(p->line);
  free(p->data);
  free(p->event);
  free(p->id);
  p->line = p->data = p->event = p->id = NULL;
  p->line_len = p->line_cap = p->data_len = p->data_cap = 0;
  p->event_len = p->event_cap = p->id_len = p->id_cap = 0;
  p->data_ref = NULL;
}

void sl_sse_trim(sl_sse *p) {
  if (p->line_len == 0) {
    free(p->line);
    p->line = NULL;
    p->line_cap = 0;
  }
  if (!p->has_data) {
    free(p->data);
    p->data = NULL;
    p->data_len = p->data_cap = 0;
  }
  if (p->event_len == 0) {
    free(p->event);
    p->event = NULL;
    p->event_cap = 0;
  }
}

/* Data borrowed from the caller's buffer must be owned before the buffer
   goes away or before more data is joined to it. */
static int own_data(sl_sse *p, size_t extra) {
  if (reserve(&p->data, &p->data_cap, p->data_len + extra) != 0)
    return SL_SSE_NOMEM;
  if (p->data_ref) {
    if (p->data_len) memcpy(p->data, p->data_ref, p->data_len);
    p->data_ref = NULL;
  }
  return SL_SSE_OK;
}

static int add_data(sl_sse *p, const char *v, size_t n, int borrow) {
  if (!p->has_data) {
    p->has_data = 1;
    if (n > p->max) return SL_SSE_TOO_BIG;
    if (borrow) {
      p->data_ref = v;
      p->data_len = n;
      return SL_SSE_OK;
    }
    p->data_len = 0;
    return append(&p->data, &p->data_len, &p->data_cap, v, n);
  }
  if (p->data_len + 1 + n > p->max) return SL_SSE_TOO_BIG;
  if (own_data(p, 1 + n) != SL_SSE_OK) return SL_SSE_NOMEM;
  p->data[p->data_len++] = '\n';
  return append(&p->data, &p->data_len, &p->data_cap, v, n);
}

static void set_retry(sl_sse *p, const char *v, size_t n) {
  long ms = 0;
  size_t i;
  if (n == 0) return;
  for (i = 0; i < n; i++)
    if (v[i] < '0' || v[i] > '9') return;
  for (i = 0; i < n; i++) {
    int d = v[i] - '0';
    ms = ms > (LONG_MAX - d) / 10 ? LONG_MAX : ms * 10 + d;
  }
  p->retry = ms;
}

static int dispatch(sl_sse *p, sl_sse_event_fn fn, void *ud) {
  sl_sse_event ev;
  if (p->has_data) {
    ev.data = p->data_ref ? p->data_ref : p->data ? p->data : "";
    ev.data_len = p->data_len;
    ev.event = p->event_len ? p->event : "";
    ev.event_len = p->event_len;
    ev.id = p->id_len ? p->id : "";
    ev.id_len = p->id_len;
    fn(ud, &ev);
  }
  p->has_data = 0;
  p->data_len = 0;
  p->data_ref = NULL;
  p->event_len = 0;
  return SL_SSE_OK;
}

/* One complete line, without its line ending. borrow: the bytes stay valid
   until the end of the current feed, so data may point at them. */
static int process_line(sl_sse *p, const char *s, size_t n, int borrow,
                        sl_sse_event_fn fn, void *ud) {
  const char *colon, *v;
  size_t field_len, vlen;

  if (n == 0) return dispatch(p, fn, ud);
  if (s[0] == ':') {
    p->comments++;
    return SL_SSE_OK;
  }
  colon = memchr(s, ':', n);
  if (colon) {
    field_len = (size_t)(colon - s);
    v = colon + 1;
    vlen = n - field_len - 1;
    if (vlen && *v == ' ') {
      v++;
      vlen--;
    }
  } else {
    field_len = n;
    v = s + n;
    vlen = 0;
  }
  switch (field_len) {
  case 4:
    if (memcmp(s, "data", 4) == 0) return add_data(p, v, vlen, borrow);
    break;
  case 5:
    if (memcmp(s, "event", 5) == 0) {
      p->event_len = 0;
      return append(&p->event, &p->event_len, &p->event_cap, v, vlen);
    }
    if (memcmp(s, "retry", 5) == 0) set_retry(p, v, vlen);
    break;
  case 2:
    if (s[0] == 'i' && s[1] == 'd' && !memchr(v, '\0', vlen)) {
      p->id_len = 0;
      return append(&p->id, &p->id_len, &p->id_cap, v, vlen);
    }
    break;
  }
  return SL_SSE_OK;
}

/* A line ending was found: the line is what was kept from earlier feeds
   followed by s[0..n). */
static int end_line(sl_sse *p, const char *s, size_t n, sl_sse_event_fn fn,
                    void *ud) {
  if (p->line_len) {
    if (p->line_len + n > p->max) return SL_SSE_TOO_BIG;
    if (append(&p->line, &p->line_len, &p->line_cap, s, n) != SL_SSE_OK)
      return SL_SSE_NOMEM;
    n = p->line_len;
    p->line_len = 0;  /* the bytes stay in p->line while they are used */
    return process_line(p, p->line, n, 0, fn, ud);
  }
  if (n > p->max) return SL_SSE_TOO_BIG;
  return process_line(p, s, n, 1, fn, ud);
}

static int parse(sl_sse *p, const char *buf, size_t len, sl_sse_event_fn fn,
                 void *ud) {
  size_t pos = 0, nl = 0;
  int have_nl = 0, rc = SL_SSE_OK;

  if (p->last_cr) {  /* a CR ended the last feed: this LF completes a CRLF */
    p->last_cr = 0;
    if (buf[0] == '\n') pos = 1;
  }
  while (pos < len) {
    const char *start = buf + pos, *cr;
    size_t end, next;
    if (*start == '\n') {  /* the blank line ending most events */
      rc = end_line(p, start, 0, fn, ud);
      if (rc != SL_SSE_OK) return rc;
      pos++;
      continue;
    }
    /* The next LF is kept across CR-terminated lines so that a CR-only
       stream stays linear. */
    if (!have_nl || nl < pos) {
      const char *q = memchr(start, '\n', len - pos);
      nl = q ? (size_t)(q - buf) : len;
      have_nl = 1;
    }
    cr = memchr(start, '\r', nl - pos);
    if (cr) {
      end = (size_t)(cr - buf);
      if (end + 1 < len) {
        next = end + 1 + (buf[end + 1] == '\n');
      } else {
        next = len;
        p->last_cr = 1;
      }
    } else if (nl < len) {
      end = nl;
      next = nl + 1;
    } else {
      if (p->line_len + (len - pos) > p->max) return SL_SSE_TOO_BIG;
      rc = append(&p->line, &p->line_len, &p->line_cap, start, len - pos);
      break;
    }
    rc = end_line(p, start, end - pos, fn, ud);
    if (rc != SL_SSE_OK) return rc;
    pos = next;
  }
  if (rc == SL_SSE_OK && p->data_ref) rc = own_data(p, 0);
  return rc;
}

int sl_sse_feed(sl_sse *p, const char *buf, size_t len, sl_sse_event_fn fn,
                void *ud) {
  int rc;
  if (p->status != SL_SSE_OK) return p->status;
  if (p->bom < 3) {
    /* A BOM may arrive split across feeds; bytes that only looked like its
       start are ordinary stream bytes. */
    size_t matched;
    while (len && p->bom < 3 && (unsigned char)*buf == utf8_bom[p->bom]) {
      p->bom++;
      buf++;
      len--;
    }
    if (p->bom < 3) {
      if (!len) return SL_SSE_OK;
      matched = p->bom;
      p->bom = 3;
      if (matched) {
        rc = parse(p, (const char *)utf8_bom, matched, fn, ud);
        if (rc != SL_SSE_OK) return p->status = (unsigned char)rc;
      }
    }
  }
  if (!len) return SL_SSE_OK;
  rc = parse(p, buf, len, fn, ud);
  p->status = (unsigned char)rc;
  return rc;
}
