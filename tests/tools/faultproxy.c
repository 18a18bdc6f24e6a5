/*
** faultproxy: the test suite's own fault-injecting TCP proxy. It listens on
** loopback, connects each client to one upstream, and passes bytes both ways,
** injecting network faults: latency, a stall, a reset, a half-close, trickled
** bytes. Faults count the bytes sent to the client; they apply to every
** connection (flags), or to one request (an X-Fault header in it).
*/
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <uv.h>

static const char usage_text[] =
  "usage: faultproxy --upstream HOST:PORT [options]\n"
  "  --port N               port to listen on, 0 picks a free one (default 0)\n"
  "  --url-file FILE        once listening, write http://127.0.0.1:PORT and a newline to\n"
  "                         FILE.tmp and rename it to FILE\n"
  "  --exit-with-parent     shut down (as on SIGTERM) when the parent process dies\n"
  "Faults, for every connection (each counts the bytes sent to the client):\n"
  "  --latency MS           deliver every piece of data, and every close, MS later,\n"
  "                         both ways\n"
  "  --stall-after N        after N bytes to the client, hold the server's bytes...\n"
  "  --stall-for S          ...for S seconds (default: for good); the client's bytes\n"
  "                         and its close still go through\n"
  "  --reset-after N        after N bytes to the client, reset both connections (RST)\n"
  "  --half-close-after N   after N bytes to the client, shut down the sending side to\n"
  "                         the client (FIN) and drop what the server sends after; the\n"
  "                         client's bytes and its close still go through\n"
  "  --trickle MS           send the server's bytes to the client one at a time (or\n"
  "  --trickle-bytes N      N at a time), MS milliseconds apart (0: one write each)\n"
  "A request with a header \"X-Fault: stall-after=300 stall-for=2\" (the names above,\n"
  "without the dashes in front) gets those faults instead, counted from that request\n"
  "on its connection. Each connection logs what happened to it on stderr.\n";

#define MAX_QUEUED (256u * 1024)   /* server bytes held before reading stops */
#define SCAN_TAIL 255              /* client bytes kept to find a split X-Fault */

typedef struct faults {
  uint64_t latency_ms;
  uint64_t stall_after, reset_after, half_close_after;  /* UINT64_MAX: off */
  double stall_for;                                     /* < 0: for good */
  int trickle;                                          /* on or off */
  uint64_t trickle_ms, trickle_bytes;
} faults;

enum { PIECE_DATA, PIECE_END, PIECE_RESET };

/* A piece of data (or the sender's close) on its way, due at `due` (ms). */
typedef struct piece {
  struct piece *next;
  int kind;
  uint64_t due;
  size_t len, off;
  char data[];
} piece;

typedef struct proxy proxy;
typedef struct pair pair;

/* One direction: what `from` sent, on its way to `to`. */
typedef struct way {
  pair *pair;
  uv_tcp_t *from, *to;
  uv_timer_t timer;
  piece *head, *tail;
  size_t queued;
  unsigned writes;          /* uv_writes not completed */
  int reading, ended;       /* from's close has been read */
  int delivered_end;        /* ... and passed on */
  const char *from_name, *to_name;
} way;

struct pair {
  proxy *px;
  pair *prev, *next;
  uint64_t number;
  uv_tcp_t client, server;
  uv_connect_t connect;
  int connected, closing, open_handles;
  way down, up;             /* server -> client, client -> server */
  faults f;
  uint64_t down_bytes;      /* sent to the client since the faults began */
  uint64_t stalled_until;   /* ms; UINT64_MAX: for good */
  int stalled, stall_done, half_closed, reset_pending;
  uint64_t next_trickle;
  char scan[SCAN_TAIL + 1]; /* the tail of the client's bytes, for X-Fault */
  size_t scan_len;
};

struct proxy {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_signal_t sigint, sigterm;
  struct sockaddr_storage upstream;
  faults defaults;
  pair *pairs;
  uint64_t counter;
  int stopping;
};

static void pump(way *w);
static void pair_close(pair *p, int reset);

static uint64_t now_ms(proxy *px) {
  return uv_now(px->loop);
}

static void logf_pair(pair *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_pair(pair *p, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "faultproxy: conn %llu: ", (unsigned long long)p->number);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---- options ---------------------------------------------------------- */

static int parse_count(const char *s, uint64_t *out) {
  char *end;
  if (s == NULL || *s < '0' || *s > '9') return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end != '\0') return -1;
  *out = v;
  return 0;
}

/* A fault by its name (without the dashes); -1 if the name or value is bad. */
static int set_fault(faults *f, const char *name, const char *value) {
  uint64_t n;
  if (strcmp(name, "stall-for") == 0) {
    char *end;
    if (value == NULL) return -1;
    double s = strtod(value, &end);
    if (end == value || *end != '\0' || !(s >= 0 && s < 1e6)) return -1;
    f->stall_for = s;
    return 0;
  }
  if (parse_count(value, &n) < 0) return -1;
  if (strcmp(name, "latency") == 0) f->latency_ms = n;
  else if (strcmp(name, "stall-after") == 0) f->stall_after = n;
  else if (strcmp(name, "reset-after") == 0) f->reset_after = n;
  else if (strcmp(name, "half-close-after") == 0) f->half_close_after = n;
  else if (strcmp(name, "trickle") == 0) f->trickle = 1, f->trickle_ms = n;
  else if (strcmp(name, "trickle-bytes") == 0 && n > 0) f->trickle_bytes = n;
  else return -1;
  return 0;
}

static void faults_none(faults *f) {
  memset(f, 0, sizeof *f);
  f->stall_after = f->reset_after = f->half_close_after = UINT64_MAX;
  f->stall_for = -1;
  f->trickle_bytes = 1;
}

/* "stall-after=300 stall-for=2" (spaces or commas between). */
static int parse_fault_header(const char *text, size_t len, faults *f) {
  char buf[256];
  if (len >= sizeof buf) return -1;
  memcpy(buf, text, len);
  buf[len] = '\0';
  faults_none(f);
  for (char *save = NULL, *tok = strtok_r(buf, " ,\t", &save); tok;
       tok = strtok_r(NULL, " ,\t", &save)) {
    char *eq = strchr(tok, '=');
    if (eq == NULL) return -1;
    *eq = '\0';
    if (set_fault(f, tok, eq + 1) < 0) return -1;
  }
  return 0;
}

/* ---- the fault state of a connection --------------------------------- */

static void faults_begin(pair *p, const faults *f) {
  p->f = *f;
  p->down_bytes = 0;
  p->stalled = p->stall_done = 0;
  p->next_trickle = 0;
}

/* Looks for "\r\nX-Fault: ...\r\n" in what the client sent. What may hold the
   start of a header not seen whole yet is kept for the next read; a header
   already applied is not kept, so it applies once. */
static void scan_for_fault(pair *p, const char *data, size_t len) {
  static const char name[] = "\r\nx-fault:";
  char buf[SCAN_TAIL + 64 * 1024 + 1];
  if (len > 64 * 1024) { /* far more than a request head: scan its end */
    data += len - 64 * 1024;
    len = 64 * 1024;
  }
  memcpy(buf, p->scan, p->scan_len);
  memcpy(buf + p->scan_len, data, len);
  size_t total = p->scan_len + len, keep_from = 0;
  buf[total] = '\0';
  const char *at = buf;
  for (;;) {
    const char *hit = NULL;
    for (const char *c = at; c + sizeof name - 1 <= buf + total; c++) {
      if (strncasecmp(c, name, sizeof name - 1) == 0) {
        hit = c;
        break;
      }
    }
    if (hit == NULL) break;
    const char *v = hit + sizeof name - 1;
    const char *eol = strstr(v, "\r\n");
    if (eol == NULL) {  /* the rest of it comes with the next read */
      keep_from = (size_t)(hit - buf);
      break;
    }
    while (v < eol && (*v == ' ' || *v == '\t')) v++;
    faults f;
    if (parse_fault_header(v, (size_t)(eol - v), &f) == 0) {
      logf_pair(p, "X-Fault: %.*s", (int)(eol - v), v);
      faults_begin(p, &f);
    } else {
      logf_pair(p, "bad X-Fault header ignored: %.*s", (int)(eol - v), v);
    }
    at = eol;
    keep_from = (size_t)(eol - buf);  /* its CR LF may begin the next one */
  }
  if (total - keep_from > SCAN_TAIL) keep_from = total - SCAN_TAIL;
  p->scan_len = total - keep_from;
  memcpy(p->scan, buf + keep_from, p->scan_len);
}

/* The next fault position ahead of the bytes sent so far, or UINT64_MAX. */
static uint64_t next_mark(const pair *p) {
  uint64_t m = UINT64_MAX;
  if (!p->stall_done && p->f.stall_after >= p->down_bytes && p->f.stall_after < m)
    m = p->f.stall_after;
  if (p->f.reset_after >= p->down_bytes && p->f.reset_after < m) m = p->f.reset_after;
  if (p->f.half_close_after >= p->down_bytes && p->f.half_close_after < m)
    m = p->f.half_close_after;
  return m;
}

/* ---- closing ---------------------------------------------------------- */

static void free_pieces(way *w) {
  while (w->head) {
    piece *next = w->head->next;
    free(w->head);
    w->head = next;
  }
  w->tail = NULL;
  w->queued = 0;
}

/* Every handle of a pair (its sockets and timers) has a way as its data. */
static void on_handle_closed(uv_handle_t *h) {
  pair *p = ((way *)h->data)->pair;
  if (--p->open_handles > 0) return;
  free_pieces(&p->down);
  free_pieces(&p->up);
  free(p);
}

static void close_socket(uv_tcp_t *t, int reset) {
  if (uv_is_closing((uv_handle_t *)t)) return;
  if (!reset || uv_tcp_close_reset(t, on_handle_closed) != 0)
    uv_close((uv_handle_t *)t, on_handle_closed);
}

/* The one place a connection pair ends: both sockets closed (reset: RST). */
static void pair_close(pair *p, int reset) {
  if (p->closing) return;
  p->closing = 1;
  proxy *px = p->px;
  if (p->prev) p->prev->next = p->next;
  else px->pairs = p->next;
  if (p->next) p->next->prev = p->prev;
  uv_timer_stop(&p->down.timer);
  uv_timer_stop(&p->up.timer);
  uv_close((uv_handle_t *)&p->down.timer, on_handle_closed);
  uv_close((uv_handle_t *)&p->up.timer, on_handle_closed);
  close_socket(&p->client, reset);
  close_socket(&p->server, reset);
}

/* Both sides have closed and what was due has been passed on. */
static void maybe_done(pair *p) {
  if (p->closing) return;
  if (p->up.delivered_end && (p->down.delivered_end || p->down.ended)) {
    logf_pair(p, "closed");
    pair_close(p, 0);
  }
}

/* ---- moving bytes ----------------------------------------------------- */

typedef struct write_req {
  uv_write_t req;
  way *way;
  char data[];
} write_req;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void read_resume(way *w) {
  if (w->reading || w->ended || w->pair->closing) return;
  if (uv_read_start((uv_stream_t *)w->from, on_alloc, on_read) == 0) w->reading = 1;
}

static void read_pause(way *w) {
  if (!w->reading) return;
  uv_read_stop((uv_stream_t *)w->from);
  w->reading = 0;
}

static void on_write(uv_write_t *req, int status) {
  write_req *wr = (write_req *)req;
  way *w = wr->way;
  pair *p = w->pair;
  free(wr);
  w->writes--;
  if (p->closing) return;
  if (status < 0) {
    logf_pair(p, "write to the %s failed (%s): closing both", w->to_name, uv_err_name(status));
    pair_close(p, 0);
    return;
  }
  if (w == &p->down && p->reset_pending && w->writes == 0) {
    logf_pair(p, "reset after %llu bytes to the client", (unsigned long long)p->down_bytes);
    pair_close(p, 1);
    return;
  }
  pump(w);
}

static int send_bytes(way *w, const char *data, size_t len) {
  write_req *wr = malloc(sizeof *wr + len);
  if (wr == NULL) return UV_ENOMEM;
  memcpy(wr->data, data, len);
  wr->way = w;
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
  int rc = uv_write(&wr->req, (uv_stream_t *)w->to, &b, 1, on_write);
  if (rc != 0) {
    free(wr);
    return rc;
  }
  w->writes++;
  return 0;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

static void shutdown_to(uv_tcp_t *t) {
  uv_shutdown_t *req = malloc(sizeof *req);
  if (req && uv_shutdown(req, (uv_stream_t *)t, on_shutdown) != 0) free(req);
}

/* A fault position reached after the bytes just sent to the client. */
static void fault_reached(pair *p) {
  uint64_t n = p->down_bytes;
  if (n == p->f.reset_after) {
    p->reset_pending = 1;
    if (p->down.writes == 0) {
      logf_pair(p, "reset after %llu bytes to the client", (unsigned long long)n);
      pair_close(p, 1);
    }
    return;
  }
  if (n == p->f.half_close_after && !p->half_closed) {
    logf_pair(p, "half-close after %llu bytes to the client", (unsigned long long)n);
    p->half_closed = 1;
    shutdown_to(&p->client);
    free_pieces(&p->down);
    p->down.delivered_end = 1;
    return;
  }
  if (n == p->f.stall_after && !p->stall_done) {
    p->stall_done = 1;
    p->stalled = 1;
    p->stalled_until = p->f.stall_for < 0 ? UINT64_MAX
                                          : now_ms(p->px) + (uint64_t)(p->f.stall_for * 1000);
    if (p->f.stall_for < 0) logf_pair(p, "stall after %llu bytes, for good", (unsigned long long)n);
    else logf_pair(p, "stall after %llu bytes, for %g s", (unsigned long long)n, p->f.stall_for);
  }
}

static void on_way_timer(uv_timer_t *t) {
  pump(t->data);
}

/* Passes on what is due, as the faults allow; arms the timer for the rest. */
static void pump(way *w) {
  pair *p = w->pair;
  proxy *px = p->px;
  int down = w == &p->down;
  while (!p->closing && w->head) {
    if (!down && !p->connected) return;  /* on_connect pumps again */
    piece *pc = w->head;
    uint64_t now = now_ms(px);
    uint64_t wait_until = pc->due;
    if (down && p->stalled) {
      if (p->stalled_until == UINT64_MAX) return;  /* for good */
      if (now >= p->stalled_until) {
        p->stalled = 0;
        logf_pair(p, "stall over");
      } else if (p->stalled_until > wait_until) {
        wait_until = p->stalled_until;
      }
    }
    if (down && p->f.trickle && p->next_trickle > wait_until) wait_until = p->next_trickle;
    if (down && p->reset_pending) return;
    if (wait_until > now) {
      uv_timer_start(&w->timer, on_way_timer, wait_until - now, 0);
      return;
    }
    if (pc->kind != PIECE_DATA) {
      w->head = pc->next;
      if (w->head == NULL) w->tail = NULL;
      int reset = pc->kind == PIECE_RESET;
      free(pc);
      if (reset) {
        logf_pair(p, "the %s reset: resetting the %s", w->from_name, w->to_name);
        pair_close(p, 1);
        return;
      }
      logf_pair(p, "the %s closed: passing it on to the %s", w->from_name, w->to_name);
      w->delivered_end = 1;
      shutdown_to(w->to);
      maybe_done(p);
      return;
    }
    size_t n = pc->len - pc->off;
    if (down) {
      uint64_t mark = next_mark(p);
      if (mark != UINT64_MAX && mark - p->down_bytes < n) n = (size_t)(mark - p->down_bytes);
      if (p->f.trickle && p->f.trickle_bytes < n) n = (size_t)p->f.trickle_bytes;
      if (mark == p->down_bytes) n = 0;  /* a mark at 0: act before sending */
    }
    if (n > 0) {
      int rc = send_bytes(w, pc->data + pc->off, n);
      if (rc != 0) {
        logf_pair(p, "write to the %s failed (%s): closing both", w->to_name, uv_err_name(rc));
        pair_close(p, 0);
        return;
      }
      pc->off += n;
      w->queued -= n;
      if (pc->off == pc->len) {
        w->head = pc->next;
        if (w->head == NULL) w->tail = NULL;
        free(pc);
      }
    }
    if (down) {
      p->down_bytes += n;
      if (p->down_bytes == next_mark(p)) fault_reached(p);
      if (p->f.trickle) p->next_trickle = now_ms(px) + p->f.trickle_ms;
      if (p->f.trickle && p->f.trickle_ms == 0 && w->writes > 0) return;  /* on_write goes on */
    }
    if (w->queued < MAX_QUEUED / 2) read_resume(w);
  }
}

static void enqueue(way *w, int kind, const char *data, size_t len) {
  pair *p = w->pair;
  piece *pc = malloc(sizeof *pc + len);
  if (pc == NULL) {
    pair_close(p, 0);
    return;
  }
  pc->next = NULL;
  pc->kind = kind;
  pc->due = now_ms(p->px) + p->f.latency_ms;
  pc->len = len;
  pc->off = 0;
  if (len) memcpy(pc->data, data, len);
  if (w->tail) w->tail->next = pc;
  else w->head = pc;
  w->tail = pc;
  w->queued += len;
  if (w->queued >= MAX_QUEUED) read_pause(w);
  pump(w);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  way *w = stream->data;
  pair *p = w->pair;
  if (nread > 0 && !p->closing) {
    if (w == &p->up) scan_for_fault(p, buf->base, (size_t)nread);
    if (w == &p->down && p->half_closed) {
      /* the client no longer hears from the server: drop it */
    } else {
      enqueue(w, PIECE_DATA, buf->base, (size_t)nread);
    }
  } else if (nread < 0 && !p->closing) {
    read_pause(w);
    w->ended = 1;
    if (w == &p->down && p->half_closed) {
      maybe_done(p);
    } else {
      logf_pair(p, "the %s %s", w->from_name, nread == UV_EOF ? "closed" : uv_err_name((int)nread));
      enqueue(w, nread == UV_EOF ? PIECE_END : PIECE_RESET, NULL, 0);
      maybe_done(p);  /* the client gone, what the server still sends has nowhere to go */
    }
  }
  free(buf->base);
}

/* ---- connections ------------------------------------------------------ */

static void on_connect(uv_connect_t *req, int status) {
  pair *p = req->data;
  if (p->closing) return;
  if (status < 0) {
    logf_pair(p, "cannot connect to the server: %s", uv_err_name(status));
    pair_close(p, 1);
    return;
  }
  p->connected = 1;
  uv_tcp_nodelay(&p->server, 1);
  read_resume(&p->down);
  pump(&p->up);
}

static void way_init(pair *p, way *w, uv_tcp_t *from, uv_tcp_t *to, const char *from_name,
                     const char *to_name) {
  w->pair = p;
  w->from = from;
  w->to = to;
  w->from_name = from_name;
  w->to_name = to_name;
  uv_timer_init(p->px->loop, &w->timer);
  w->timer.data = w;
  from->data = w;
}

static void on_connection(uv_stream_t *listener, int status) {
  proxy *px = listener->data;
  if (status < 0) return;
  pair *p = calloc(1, sizeof *p);
  if (p == NULL) return;
  p->px = px;
  p->number = ++px->counter;
  uv_tcp_init(px->loop, &p->client);
  uv_tcp_init(px->loop, &p->server);
  way_init(p, &p->down, &p->server, &p->client, "server", "client");
  way_init(p, &p->up, &p->client, &p->server, "client", "server");
  p->open_handles = 4;
  faults_begin(p, &px->defaults);
  p->next = px->pairs;
  if (px->pairs) px->pairs->prev = p;
  px->pairs = p;
  if (uv_accept(listener, (uv_stream_t *)&p->client) != 0) {
    pair_close(p, 0);
    return;
  }
  uv_tcp_nodelay(&p->client, 1);
  p->connect.data = p;
  if (uv_tcp_connect(&p->connect, &p->server, (struct sockaddr *)&px->upstream, on_connect) != 0) {
    pair_close(p, 1);
    return;
  }
  read_resume(&p->up);
}

/* ---- main ------------------------------------------------------------- */

static void stop(proxy *px) {
  if (px->stopping) return;
  px->stopping = 1;
  uv_close((uv_handle_t *)&px->listener, NULL);
  uv_close((uv_handle_t *)&px->sigint, NULL);
  uv_close((uv_handle_t *)&px->sigterm, NULL);
  while (px->pairs) pair_close(px->pairs, 0);
}

static void on_signal(uv_signal_t *h, int signum) {
  (void)signum;
  stop(h->data);
}

static int write_url_file(const char *path, int port) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return -1;
  FILE *f = fopen(tmp, "w");
  if (f == NULL) return -1;
  int ok = fprintf(f, "http://127.0.0.1:%d\n", port) > 0;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    int e = errno;  /* what failed, not remove()'s */
    remove(tmp);
    errno = e;
    return -1;
  }
  return 0;
}

static int usage_error(const char *what, const char *arg) {
  fprintf(stderr, "faultproxy: %s: %s\n%s", what, arg ? arg : "(none)", usage_text);
  return 2;
}

int main(int argc, char **argv) {
  proxy px;
  memset(&px, 0, sizeof px);
  faults_none(&px.defaults);
  const char *upstream = NULL, *url_file = NULL;
  int port = 0, exit_with_parent = 0;
  pid_t parent = getppid();
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0) {
      fputs(usage_text, stdout);
      return 0;
    }
    if (strcmp(a, "--exit-with-parent") == 0) {
      exit_with_parent = 1;
      continue;
    }
    if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) return usage_error("bad option", a);
    const char *v = argv[++i];
    uint64_t n;
    if (strcmp(a, "--upstream") == 0) upstream = v;
    else if (strcmp(a, "--url-file") == 0) url_file = v;
    else if (strcmp(a, "--port") == 0) {
      if (parse_count(v, &n) < 0 || n > 65535) return usage_error("bad port", v);
      port = (int)n;
    } else if (set_fault(&px.defaults, a + 2, v) < 0) {
      return usage_error("bad option or value", a);
    }
  }
  char host[256];
  const char *colon = upstream ? strrchr(upstream, ':') : NULL;
  uint64_t upstream_port;
  if (colon == NULL || (size_t)(colon - upstream) >= sizeof host ||
      parse_count(colon + 1, &upstream_port) < 0 || upstream_port > 65535)
    return usage_error("--upstream HOST:PORT is required", upstream);
  memcpy(host, upstream, (size_t)(colon - upstream));
  host[colon - upstream] = '\0';
  if (uv_ip4_addr(host, (int)upstream_port, (struct sockaddr_in *)&px.upstream) != 0)
    return usage_error("--upstream must be an IPv4 address and port", upstream);

  if (exit_with_parent) {
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || parent == 1 || getppid() != parent) {
      fprintf(stderr, "faultproxy: --exit-with-parent: the parent is gone\n");
      return 1;
    }
  }
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return 1;
  px.loop = &loop;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_tcp_init(&loop, &px.listener);
  px.listener.data = &px;
  int rc = uv_tcp_bind(&px.listener, (struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&px.listener, 128, on_connection);
  if (rc != 0) {
    fprintf(stderr, "faultproxy: cannot listen on 127.0.0.1:%d: %s\n", port, uv_strerror(rc));
    uv_close((uv_handle_t *)&px.listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 1;
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&px.listener, (struct sockaddr *)&bound, &len);
  port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
  uv_signal_init(&loop, &px.sigint);
  uv_signal_init(&loop, &px.sigterm);
  px.sigint.data = px.sigterm.data = &px;
  uv_signal_start(&px.sigint, on_signal, SIGINT);
  uv_signal_start(&px.sigterm, on_signal, SIGTERM);
  int failed = 0;
  if (url_file && write_url_file(url_file, port) != 0) {
    fprintf(stderr, "faultproxy: cannot write %s: %s\n", url_file, strerror(errno));
    stop(&px);
    failed = 1;  /* the exit says so: a test waiting for the file fails at once */
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(&loop);
  if (rc != 0) fprintf(stderr, "faultproxy: loop not closed cleanly: %s\n", uv_strerror(rc));
  return rc != 0 || failed;
}
