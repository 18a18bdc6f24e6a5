/*
** The fake libuv behind fuzz_mock_request (see fake_uv.h). One connection
** at a time; callbacks never run inside the call that caused them, and a
** closed stream's queued writes end with UV_ECANCELED before its close
** callback, as in libuv.
*/
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "fake_uv.h"

#define MAX_HANDLES 8

typedef struct handle {
  uv_handle_t *h;
  int closing;
  uv_close_cb close_cb;
} handle;

typedef struct timer {
  uv_timer_t *t;
  uv_timer_cb cb;
  uint64_t due, order;
  int active;
} timer;

typedef struct write {
  uv_write_t *req;
  uv_stream_t *stream;
  uv_write_cb cb;
  uv_buf_t buf;
} write;

static struct {
  handle handles[MAX_HANDLES];
  int nhandles;
  timer timers[MAX_HANDLES];
  int ntimers;
  uint64_t order;
  write *writes;             /* queued, oldest first */
  int nwrites, writes_cap;
  uv_stream_t *reader;
  uv_alloc_cb alloc_cb;
  uv_read_cb read_cb;
  int connected;
  size_t window;
  uint64_t now;
  char *out;
  size_t out_len, out_cap;
} fake;

static void output(const char *p, size_t n) {
  if (fake.out_len + n > fake.out_cap) {
    fake.out_cap = (fake.out_len + n) * 2;
    fake.out = realloc(fake.out, fake.out_cap);
    if (!fake.out) abort();
  }
  memcpy(fake.out + fake.out_len, p, n);
  fake.out_len += n;
}

void fake_uv_free(void) {
  free(fake.out);
  free(fake.writes);
  memset(&fake, 0, sizeof fake);
}

void fake_uv_reset(size_t window) {
  fake_uv_free();
  fake.window = window;
  fake.now = 1000000000000ull;  /* 0 means "not yet" to the mock */
}

const char *fake_uv_output(size_t *len) {
  *len = fake.out_len;
  return fake.out ? fake.out : "";
}

int fake_uv_open_handles(void) { return fake.nhandles; }
int fake_uv_connected(void) { return fake.connected; }

static handle *find(const void *h) {
  for (int i = 0; i < fake.nhandles; i++)
    if (fake.handles[i].h == h) return &fake.handles[i];
  return NULL;
}

static void add(void *h) {
  if (fake.nhandles == MAX_HANDLES || find(h)) abort();
  fake.handles[fake.nhandles].h = h;
  fake.handles[fake.nhandles].closing = 0;
  fake.nhandles++;
}

static timer *find_timer(const uv_timer_t *t) {
  for (int i = 0; i < fake.ntimers; i++)
    if (fake.timers[i].t == t) return &fake.timers[i];
  return NULL;
}

/* ---- the libuv calls the mock makes -------------------------------------- */

uint64_t uv_hrtime(void) { return fake.now; }

uv_buf_t uv_buf_init(char *base, unsigned int len) {
  uv_buf_t b;
  b.base = base;
  b.len = len;
  return b;
}

int uv_tcp_init(uv_loop_t *loop, uv_tcp_t *tcp) {
  (void)loop;
  add(tcp);
  return 0;
}

int uv_accept(uv_stream_t *server, uv_stream_t *client) {
  (void)server;
  (void)client;
  fake.connected = 1;
  return 0;
}

int uv_tcp_nodelay(uv_tcp_t *tcp, int enable) {
  (void)tcp;
  (void)enable;
  return 0;
}

int uv_read_start(uv_stream_t *stream, uv_alloc_cb alloc_cb, uv_read_cb read_cb) {
  fake.reader = stream;
  fake.alloc_cb = alloc_cb;
  fake.read_cb = read_cb;
  return 0;
}

int uv_timer_init(uv_loop_t *loop, uv_timer_t *t) {
  (void)loop;
  add(t);
  if (fake.ntimers == MAX_HANDLES) abort();
  memset(&fake.timers[fake.ntimers], 0, sizeof fake.timers[0]);
  fake.timers[fake.ntimers++].t = t;
  return 0;
}

int uv_timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t timeout, uint64_t repeat) {
  timer *tm = find_timer(t);
  handle *h = find(t);
  if (!tm || !h || h->closing || repeat) abort();  /* the mock never repeats */
  tm->cb = cb;
  tm->due = fake.now + timeout * 1000000;
  tm->order = fake.order++;
  tm->active = 1;
  return 0;
}

int uv_timer_stop(uv_timer_t *t) {
  timer *tm = find_timer(t);
  if (tm) tm->active = 0;
  return 0;
}

void uv_close(uv_handle_t *h, uv_close_cb cb) {
  handle *hd = find(h);
  timer *tm = find_timer((uv_timer_t *)h);
  if (!hd || hd->closing) abort();  /* libuv asserts the same */
  hd->closing = 1;
  hd->close_cb = cb;
  if (tm) tm->active = 0;
  if ((uv_handle_t *)fake.reader == h) {
    fake.reader = NULL;
    fake.connected = 0;
  }
}

/* No descriptor to peek at (mock_conn_alive then trusts the read callback,
   through which the fake delivers the client's going). */
int uv_fileno(const uv_handle_t *h, uv_os_fd_t *fd) {
  (void)h;
  (void)fd;
  return UV_EBADF;
}

int uv_tcp_close_reset(uv_tcp_t *tcp, uv_close_cb cb) {
  uv_close((uv_handle_t *)tcp, cb);
  return 0;
}

static int stream_open(const uv_stream_t *s) {
  handle *h = find(s);
  return h && !h->closing;
}

int uv_try_write(uv_stream_t *s, const uv_buf_t bufs[], unsigned int nbufs) {
  size_t n;
  if (!stream_open(s)) return UV_EBADF;
  if (nbufs != 1) abort();
  for (int i = 0; i < fake.nwrites; i++)
    if (fake.writes[i].stream == s) return UV_EAGAIN;  /* keeps the order */
  n = bufs[0].len < fake.window ? bufs[0].len : fake.window;
  if (n == 0) return UV_EAGAIN;
  output(bufs[0].base, n);
  return (int)n;
}

int uv_write(uv_write_t *req, uv_stream_t *s, const uv_buf_t bufs[], unsigned int nbufs,
             uv_write_cb cb) {
  if (!stream_open(s)) return UV_EBADF;
  if (nbufs != 1) abort();
  if (fake.nwrites == fake.writes_cap) {
    fake.writes_cap = fake.writes_cap ? 2 * fake.writes_cap : 16;
    fake.writes = realloc(fake.writes, (size_t)fake.writes_cap * sizeof *fake.writes);
    if (!fake.writes) abort();
  }
  fake.writes[fake.nwrites].req = req;
  fake.writes[fake.nwrites].stream = s;
  fake.writes[fake.nwrites].cb = cb;
  fake.writes[fake.nwrites].buf = bufs[0];
  fake.nwrites++;
  return 0;
}

/* ---- the client's side and the loop ------------------------------------- */

int fake_uv_send(const char *data, size_t len) {
  while (len > 0) {
    uv_buf_t buf;
    size_t n;
    if (!fake.reader) return -1;
    fake.alloc_cb((uv_handle_t *)fake.reader, 65536, &buf);
    n = len < buf.len ? len : buf.len;
    memcpy(buf.base, data, n);
    fake.read_cb(fake.reader, (ssize_t)n, &buf);
    data += n;
    len -= n;
  }
  return 0;
}

void fake_uv_eof(void) {
  uv_buf_t buf;
  if (!fake.reader) return;
  fake.alloc_cb((uv_handle_t *)fake.reader, 65536, &buf);
  fake.read_cb(fake.reader, UV_EOF, &buf);
}

/* One callback: a write's end, else a close, else the next timer (the
   clock moves on to it). 0 when there is nothing to do. */
static int step(void) {
  if (fake.nwrites > 0) {
    write w = fake.writes[0];
    int status = stream_open(w.stream) ? 0 : UV_ECANCELED;
    memmove(fake.writes, fake.writes + 1, (size_t)(fake.nwrites - 1) * sizeof *fake.writes);
    fake.nwrites--;
    if (status == 0) output(w.buf.base, w.buf.len);
    w.cb(w.req, status);
    return 1;
  }
  for (int i = 0; i < fake.nhandles; i++) {
    if (fake.handles[i].closing) {
      handle h = fake.handles[i];
      timer *tm = find_timer((uv_timer_t *)h.h);
      memmove(&fake.handles[i], &fake.handles[i + 1],
              (size_t)(fake.nhandles - i - 1) * sizeof *fake.handles);
      fake.nhandles--;
      if (tm) *tm = fake.timers[--fake.ntimers];
      if (h.close_cb) h.close_cb(h.h);
      return 1;
    }
  }
  timer *next = NULL;
  for (int i = 0; i < fake.ntimers; i++) {
    timer *tm = &fake.timers[i];
    if (tm->active && (!next || tm->due < next->due ||
                       (tm->due == next->due && tm->order < next->order)))
      next = tm;
  }
  if (next) {
    if (next->due > fake.now) fake.now = next->due;
    next->active = 0;
    next->cb(next->t);
    return 1;
  }
  return 0;
}

int fake_uv_run(size_t max_steps, size_t max_output) {
  for (size_t i = 0; i < max_steps; i++) {
    if (fake.out_len > max_output) return 0;
    if (!step()) return 1;
  }
  return 0;
}
