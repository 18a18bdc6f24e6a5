/*
** A streaming HTTP transfer. Curl callbacks (cb_write, cb_header, cb_prereq)
** only parse and queue; they never run Lua and never remove handles. Every way
** a transfer stops ends in sl_stream_end(), which removes the easy handle from
** the multi handle (closing an unfinished connection) before it returns.
*/
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "errors.h"
#include "redact.h"
#include "stream.h"
#include "task.h"

#define QUEUE_HIGH (1u << 20)     /* pause the transfer above this many bytes */
#define QUEUE_LOW (256u << 10)    /* resume it below this */
/* All queues together: past this, a stream that already has unread events is
   paused (its data waits in the kernel's socket buffer, not in our memory). A
   stream whose queue is empty is never paused, so every stream progresses. */
#define QUEUES_HIGH (16u << 20)
#define ERROR_BODY_MAX (64u << 10)
#define RECORD_HEADER 12
#define MANY_STREAMS 256
#define FD_RESERVE 32       /* fds kept for stdio, the loop, files the script opens */

static void free_handle(uv_handle_t *h) { free(h); }

static int buf_reserve(sl_buf *b, size_t extra) {
  size_t need = b->len + extra, cap;
  char *p;
  if (need <= b->cap) return 0;
  cap = b->cap ? b->cap : 64;  /* most buffers stay small; 10,000 streams add up */
  while (cap < need) cap *= 2;
  p = realloc(b->p, cap);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

static int buf_append(sl_buf *b, const void *data, size_t len) {
  if (buf_reserve(b, len) != 0) return -1;
  if (len) memcpy(b->p + b->len, data, len);
  b->len += len;
  return 0;
}

static void buf_free(sl_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

const char *sl_state_name(sl_state st) {
  static const char *const names[] = {"connecting", "streaming", "done",
                                      "cancelled", "failed"};
  return names[st];
}

int sl_stream_finished(const sl_stream *s) { return s->state >= SL_STATE_DONE; }

/* ---- the event queue ---------------------------------------------------- */

static int queue_push(sl_stream *s, const char *data, size_t dlen,
                      const char *event, size_t elen, const char *id,
                      size_t ilen) {
  uint32_t hdr[3] = {(uint32_t)dlen, (uint32_t)elen, (uint32_t)ilen};
  size_t need = RECORD_HEADER + dlen + elen + ilen;
  char *w;
  if (s->qhead > 0 && s->q.len + need > s->q.cap) {  /* compact first */
    memmove(s->q.p, s->q.p + s->qhead, s->q.len - s->qhead);
    s->q.len -= s->qhead;
    s->qhead = 0;
  }
  if (buf_reserve(&s->q, need) != 0) return -1;
  w = s->q.p + s->q.len;
  memcpy(w, hdr, RECORD_HEADER);
  w += RECORD_HEADER;
  if (elen) memcpy(w, event, elen);
  w += elen;
  if (ilen) memcpy(w, id, ilen);
  w += ilen;
  if (dlen) memcpy(w, data, dlen);
  s->q.len += need;
  s->queued++;
  s->rt->net.queued_bytes += need;
  return 0;
}

int sl_stream_peek(sl_stream *s, sl_event *ev) {
  const char *r;
  uint32_t hdr[3];
  if (s->queued == 0) return 0;
  r = s->q.p + s->qhead;
  memcpy(hdr, r, RECORD_HEADER);
  ev->data_len = hdr[0];
  ev->event_len = hdr[1];
  ev->id_len = hdr[2];
  ev->event = r + RECORD_HEADER;
  ev->id = ev->event + ev->event_len;
  ev->data = ev->id + ev->id_len;
  return 1;
}

void sl_stream_pop(sl_stream *s) {
  uint32_t hdr[3];
  size_t size, left;
  memcpy(hdr, s->q.p + s->qhead, RECORD_HEADER);
  size = RECORD_HEADER + hdr[0] + hdr[1] + hdr[2];
  s->qhead += size;
  s->rt->net.queued_bytes -= size;
  if (--s->queued == 0) {
    /* the script has read all that came: its text goes into the trace */
    if (s->rt->trace) sl_trace_text(s->rt->trace, &s->tp, s->id);
    s->qhead = s->q.len = 0;
    /* A finished stream gives its memory back now, not when the collector
       gets to its userdata; with many streams, a drained queue holds nothing
       between bursts (10,000 streams: 5 MB). */
    if (sl_stream_finished(s) || s->rt->net.transfers >= MANY_STREAMS)
      buf_free(&s->q);
  }
  left = s->q.len - s->qhead;
  if (s->paused && s->easy &&
      (left == 0 || (left < QUEUE_LOW && s->rt->net.queued_bytes < QUEUES_HIGH))) {
    CURLcode rc;
    s->paused = 0;
    rc = curl_easy_pause(s->easy, CURLPAUSE_CONT);  /* may call cb_write at once */
    if (rc != CURLE_OK) {
      sl_stream_fail(s, "transport", "curl_easy_pause: %s", curl_easy_strerror(rc));
      return;
    }
    sl_curlm_kick(&s->rt->net);
  }
}

static void queue_clear(sl_stream *s) {
  s->rt->net.queued_bytes -= s->q.len - s->qhead;
  s->qhead = s->q.len = 0;
  s->queued = 0;
}

/* ---- curl callbacks: queue only ---------------------------------------- */

static void on_sse_event(void *ud, const sl_sse_event *ev) {
  sl_stream *s = ud;
  if (s->rt->trace) sl_trace_size(s->rt->trace, &s->tp, ev->data_len);
  if (queue_push(s, ev->data, ev->data_len, ev->event, ev->event_len, ev->id,
                 ev->id_len) != 0 && !s->abort_kind)
    s->abort_kind = "limit";
}

static void on_line(void *ud, const char *line, size_t len) {
  sl_stream *s = ud;
  if (s->rt->trace) sl_trace_size(s->rt->trace, &s->tp, len);
  if (queue_push(s, line, len, NULL, 0, NULL, 0) != 0 && !s->abort_kind)
    s->abort_kind = "limit";
}

static void set_abort(sl_stream *s, const char *kind, const char *msg) {
  s->abort_kind = kind;
  free(s->abort_message);
  s->abort_message = strdup(msg);
}

static size_t cb_write(char *ptr, size_t size, size_t nmemb, void *ud) {
  sl_stream *s = ud;
  size_t n = size * nmemb, before = s->queued;
  double now;
  int rc = 0;

  if (s->http_error || s->not_stream || s->framing == SL_FRAMING_BODY) {
    size_t room = s->http_error ? ERROR_BODY_MAX - s->body.len : SIZE_MAX;
    if (!s->t_first_byte) s->t_first_byte = sl_now();
    s->bytes += n;
    if (!s->http_error && s->body.len + n > s->max_event_bytes) {
      char msg[96];
      snprintf(msg, sizeof msg, "response body larger than max_event_bytes (%zu)",
               s->max_event_bytes);
      set_abort(s, "limit", msg);
      return 0;
    }
    if (buf_append(&s->body, ptr, n < room ? n : room) != 0) {
      set_abort(s, "limit", "out of memory for the response body");
      return 0;
    }
    /* Enough of an error body: stop reading it (reported as the HTTP error). */
    return s->http_error && s->body.len >= ERROR_BODY_MAX ? 0 : n;
  }
  if (s->q.len - s->qhead >= QUEUE_HIGH ||
      (s->queued > 0 && s->rt->net.queued_bytes >= QUEUES_HIGH)) {
    if (s->rt->net.queued_bytes >= QUEUES_HIGH) s->rt->gc_wanted = 1;  /* dropped streams' queues? */
    s->paused = 1;  /* curl keeps this chunk and hands it over again */
    return CURL_WRITEFUNC_PAUSE;
  }
  now = sl_now();
  if (!s->t_first_byte) s->t_first_byte = now;
  s->bytes += n;
  switch (s->framing) {
  case SL_FRAMING_SSE:
    rc = sl_sse_feed(&s->sse, ptr, n, on_sse_event, s);
    if (s->rt->net.transfers >= MANY_STREAMS) sl_sse_trim(&s->sse);
    break;
  case SL_FRAMING_NDJSON:
    rc = sl_lines_feed(&s->lines, ptr, n, on_line, s);
    break;
  default:
    if (queue_push(s, ptr, n, NULL, 0, NULL, 0) != 0) s->abort_kind = "limit";
    else if (s->rt->trace) sl_trace_size(s->rt->trace, &s->tp, n);
    break;
  }
  if (rc) {  /* SL_SSE_TOO_BIG == SL_LINES_TOO_BIG; the other code is NOMEM */
    char msg[96];
    if (rc == SL_SSE_TOO_BIG)
      snprintf(msg, sizeof msg, "event larger than max_event_bytes (%zu)", s->max_event_bytes);
    else
      snprintf(msg, sizeof msg, "out of memory while parsing events");
    set_abort(s, "limit", msg);
    return 0;
  }
  if (s->abort_kind) {
    if (!s->abort_message) s->abort_message = strdup("out of memory");
    return 0;
  }
  if (s->queued > before) {
    s->events += s->queued - before;
    if (!s->t_first_event) s->t_first_event = now;
    s->t_last_event = now;
    if (s->rt->trace) sl_trace_data(s->rt->trace, &s->tp, s->id, now);
    if (s->waiter) sl_task_wake(s->waiter);
  }
  return n;
}

const char *sl_stream_header(const sl_stream *s, const char *name) {
  const char *p = s->resp_headers.p, *end = p + s->resp_headers.len;
  while (p && p < end) {
    const char *value = p + strlen(p) + 1;
    if (strcmp(p, name) == 0) return value;
    p = value + strlen(value) + 1;
  }
  return NULL;
}

/* What a response to an SSE request may be: an event stream, or something
   close enough (text/plain, no type at all: some servers say so). A JSON
   document (a server that ignored stream: true, an error), an HTML page (a
   proxy's) or XML is not. */
static int is_event_stream(const char *type) {
  static const char *const not_streams[] = {"application/json", "text/html", "application/xml",
                                            "text/xml", "application/problem+json", NULL};
  int i;
  if (!type) return 1;
  for (i = 0; not_streams[i]; i++)
    if (strncasecmp(type, not_streams[i], strlen(not_streams[i])) == 0) return 0;
  return strstr(type, "+json") == NULL;
}

static size_t cb_header(char *buf, size_t size, size_t nitems, void *ud) {
  sl_stream *s = ud;
  size_t n = size * nitems, i, nl;
  const char *colon, *v, *end;
  if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {  /* a new response begins */
    const char *sp = memchr(buf, ' ', n);
    s->status = sp ? strtol(sp + 1, NULL, 10) : 0;
    s->resp_headers.len = 0;
    s->headers_done = 0;
    return n;
  }
  if (n <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
    if (s->status >= 200) {  /* 1xx and proxy CONNECT replies are not final */
      s->headers_done = 1;
      s->t_headers = sl_now();
      if (s->state == SL_STATE_CONNECTING) s->state = SL_STATE_STREAMING;
      if (s->rt->trace) {
        sl_trace_begin(s->rt->trace, "head", s->id);
        sl_trace_int(s->rt->trace, "status", s->status);
        sl_trace_end(s->rt->trace);
      }
      if (s->framing != SL_FRAMING_BODY && s->status >= 300) s->http_error = 1;
      else if (s->framing == SL_FRAMING_SSE && !is_event_stream(sl_stream_header(s, "content-type")))
        s->not_stream = 1;  /* kept whole, reported as what it is */
    }
    return n;
  }
  colon = memchr(buf, ':', n);
  if (!colon) return n;
  nl = (size_t)(colon - buf);
  if (buf_reserve(&s->resp_headers, n + 2) != 0) return n;
  for (i = 0; i < nl; i++)
    s->resp_headers.p[s->resp_headers.len + i] = (char)tolower((unsigned char)buf[i]);
  s->resp_headers.len += nl;
  s->resp_headers.p[s->resp_headers.len++] = '\0';
  v = colon + 1;
  end = buf + n;
  while (v < end && (*v == ' ' || *v == '\t')) v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
  memcpy(s->resp_headers.p + s->resp_headers.len, v, (size_t)(end - v));
  s->resp_headers.len += (size_t)(end - v);
  s->resp_headers.p[s->resp_headers.len++] = '\0';
  return n;
}

static int cb_prereq(void *ud, char *primary_ip, char *local_ip,
                     int primary_port, int local_port) {
  sl_stream *s = ud;
  if (!s->t_connected) s->t_connected = sl_now();
  s->local_port = local_port;
  return CURL_PREREQFUNC_OK;
}

/* ---- deadlines ------------------------------------------------------------ */

static void arm_timer(sl_stream *s, double now);

/* Idle time runs from the last data event, or from the last moment events
   were still waiting for the script (the server is not idle then), or from
   the headers. 0 before the headers. */
static double idle_base(const sl_stream *s) {
  return fmax(fmax(s->t_last_event, s->t_busy), s->t_headers);
}

static void on_deadline(uv_timer_t *t) {
  sl_stream *s = t->data;
  double now = sl_now();
  if (sl_stream_finished(s)) return;
  if (s->to_connect > 0 && !s->t_connected && now >= s->t_started + s->to_connect)
    sl_stream_fail(s, "timeout", "connect took longer than %g s", s->to_connect);
  else if (s->to_first_byte > 0 && !s->t_first_byte &&
           now >= s->t_started + s->to_first_byte)
    sl_stream_fail(s, "timeout", "no first byte within %g s", s->to_first_byte);
  else if (s->to_total > 0 && now >= s->t_started + s->to_total)
    sl_stream_fail(s, "timeout", "total time over %g s", s->to_total);
  else {
    if (s->to_idle > 0 && s->headers_done) {
      /* Events waiting for the script mean the server is not idle. */
      if (s->queued > 0 || s->paused) s->t_busy = now;
      else if (now >= idle_base(s) + s->to_idle) {
        sl_stream_fail(s, "timeout", "idle for %g s: no data", s->to_idle);
        return;
      }
    }
    arm_timer(s, now);
  }
}

static void arm_timer(sl_stream *s, double now) {
  double due = HUGE_VAL;
  uint64_t ms;
  if (s->to_connect > 0 && !s->t_connected) due = fmin(due, s->t_started + s->to_connect);
  if (s->to_first_byte > 0 && !s->t_first_byte)
    due = fmin(due, s->t_started + s->to_first_byte);
  if (s->to_total > 0) due = fmin(due, s->t_started + s->to_total);
  if (s->to_idle > 0) {
    double base = idle_base(s);
    /* Before the headers, idle is not running yet: look again soon. */
    due = fmin(due, base ? base + s->to_idle : now + s->to_idle);
  }
  if (!sl_seconds_to_ms(due - now, &ms)) return;  /* none, or too far to matter */
  uv_timer_start(s->timer, on_deadline, ms, 0);  /* cannot fail: s->timer is live */
}

/* ---- ending ---------------------------------------------------------------- */

/* Takes what curl hands over while a transfer is being let go. */
static size_t cb_drop(char *ptr, size_t size, size_t nmemb, void *ud) {
  (void)ptr, (void)ud;
  return size * nmemb;
}

/* The end line of a trace: the state, the counts, the error. */
static void trace_end(sl_stream *s) {
  sl_trace *t = s->rt->trace;
  sl_trace_text(t, &s->tp, s->id);
  sl_trace_begin(t, "end", s->id);
  sl_trace_str(t, "state", sl_state_name(s->state), strlen(sl_state_name(s->state)));
  sl_trace_int(t, "events", (long long)s->events);
  sl_trace_int(t, "bytes", (long long)s->bytes);
  if (s->state == SL_STATE_FAILED) {
    sl_trace_str(t, "kind", s->err_kind, strlen(s->err_kind));
    if (s->err_message) sl_trace_str(t, "error", s->err_message, strlen(s->err_message));
  }
  sl_trace_end(t);
}

/*
** The one function that ends a transfer. Runs outside curl callbacks. After it
** returns the easy handle is gone: an unfinished connection is closed (curl
** never reuses a connection whose response was not read to the end), the
** timer is stopped and the waiting task, if any, is woken.
*/
void sl_stream_end(sl_stream *s, sl_state state) {
  if (sl_stream_finished(s)) return;
  s->state = state;
  s->t_ended = sl_now();
  if (s->easy) {
    double closed_at = 0;  /* when the socket was shut, if it was */
    /* Unfinished, on a connection no other transfer shares (HTTP/1, or
       HTTP/2 where curl does not multiplex, see curlm.c): shut it first.
       curl's own close comes at the end of its clean-up, some 10 us later,
       time in which the server goes on generating. Without http2 the request
       is surely HTTP/1.1, even before any response byte. An HTTP/2 connection
       is not put back for reuse (curl would keep a multiplexed one open), so
       a stream alone on it closes it; beside others, curl resets the stream. */
    if (s->fd != CURL_SOCKET_BAD) {
      long version = 0;
      if (s->http2) curl_easy_getinfo(s->easy, CURLINFO_HTTP_VERSION, &version);
      if (!s->http2 || version == CURL_HTTP_VERSION_1_0 || version == CURL_HTTP_VERSION_1_1 ||
          !s->rt->net.multiplex) {
        /* stamped before: on loopback the FIN reaches the server within the
           call, which returns some 100 us later on a busy machine */
        closed_at = sl_now();
        shutdown(s->fd, SHUT_RDWR);
      }
    }
    if (s->http2 && state != SL_STATE_DONE)
      (void)curl_easy_setopt(s->easy, CURLOPT_FORBID_REUSE, 1L);
    if (s->paused) {
      /* What curl holds for a paused transfer is lost, never freed, when the
         transfer is removed while its HTTP/2 connection carries others
         (libcurl 7.88; curl issue 10971, fixed in 8.1): unpause it into a
         callback that drops it. */
      s->paused = 0;
      /* best effort: the transfer is removed right after, whatever they say */
      (void)curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, cb_drop);
      (void)curl_easy_pause(s->easy, CURLPAUSE_CONT);
    }
    sl_curlm_remove(&s->rt->net, s->easy);
    curl_easy_cleanup(s->easy);
    s->easy = NULL;
    if (s->rt->trace) {
      sl_trace_begin_at(s->rt->trace, "close", s->id, closed_at ? closed_at : sl_now());
      sl_trace_end(s->rt->trace);
    }
  }
  if (s->rt->trace) trace_end(s);
  if (s->timer) uv_timer_stop(s->timer);
  curl_slist_free_all(s->req_headers);
  s->req_headers = NULL;
  free(s->req_body);
  s->req_body = NULL;
  sl_sse_free(&s->sse);      /* no more input: partial events are dropped */
  sl_lines_free(&s->lines);
  if (s->queued == 0) buf_free(&s->q);
  sl_resource_unregister(&s->res);
  if (s->waiter) sl_task_wake(s->waiter);
  if (s->end_waiter) sl_task_wake(s->end_waiter);
  if (s->watch) sl_watch_ended(s->watch, s);
}

/* msg with every secret of the stream replaced; NULL when out of memory. */
static char *redact(const sl_stream *s, const char *msg, size_t len, size_t *outlen) {
  return sl_redact(msg, len, (const char *const *)s->secrets, s->nsecrets, outlen);
}

void sl_stream_fail(sl_stream *s, const char *kind, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  if (sl_stream_finished(s)) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  s->err_kind = kind;
  free(s->err_message);
  s->err_message = redact(s, msg, strlen(msg), NULL);
  if ((s->http_error || s->not_stream) && s->body.len) {  /* servers may echo what they were sent */
    size_t n;
    char *clean = redact(s, s->body.p, s->body.len, &n);
    buf_free(&s->body);
    if (clean) {  /* else no body at all, never the unredacted text */
      s->body.p = clean;
      s->body.len = n;
      s->body.cap = n + 1;
    }
  }
  sl_stream_end(s, SL_STATE_FAILED);
}

void sl_stream_cancel(sl_stream *s, const char *reason) {
  if (sl_stream_finished(s)) return;
  free(s->cancel_reason);
  s->cancel_reason = strdup(reason ? reason : "cancelled");
  if (s->rt->trace && s->cancel_reason) {  /* the decision, before the close */
    sl_trace_begin(s->rt->trace, "stop", s->id);
    sl_trace_str(s->rt->trace, "reason", s->cancel_reason, strlen(s->cancel_reason));
    sl_trace_end(s->rt->trace);
  }
  queue_clear(s);
  sl_stream_end(s, SL_STATE_CANCELLED);
}

static void on_socket(sl_transfer *x, curl_socket_t fd, int gone) {
  sl_stream *s = sl_container_of(x, sl_stream, xfer);
  if (!gone) s->fd = fd;
  else if (s->fd == fd) s->fd = CURL_SOCKET_BAD;  /* curl may close it now */
}

static void on_done(sl_transfer *x, CURLcode result) {
  sl_stream *s = sl_container_of(x, sl_stream, xfer);
  s->fd = CURL_SOCKET_BAD;  /* finished: the connection is curl's to keep or close */
  if (sl_stream_finished(s)) return;
  if (s->http_error) {  /* whatever happened after an error status */
    char summary[256];
    sl_error_summary(s->body.p, s->body.len, summary, sizeof summary);
    if (summary[0]) sl_stream_fail(s, "http", "http %ld: %s", s->status, summary);
    else sl_stream_fail(s, "http", "http %ld", s->status);
  } else if (s->not_stream && result == CURLE_OK) {
    char first[204];
    const char *type = sl_stream_header(s, "content-type");
    sl_error_excerpt(s->body.p, s->body.len, first, sizeof first);
    sl_stream_fail(s, "protocol", "expected an event stream (text/event-stream), got %s: %s",
                   type, first);
  } else if (s->abort_kind) {
    sl_stream_fail(s, s->abort_kind, "%s", s->abort_message ? s->abort_message : "aborted");
  } else if (result != CURLE_OK) {
    const char *detail = s->errbuf[0] ? s->errbuf : curl_easy_strerror(result);
    if (result == CURLE_OPERATION_TIMEDOUT)
      sl_stream_fail(s, "timeout", "%s", detail);
    else
      sl_stream_fail(s, "transport", "%s", detail);
  } else if (!s->headers_done) {
    sl_stream_fail(s, "protocol", "response ended before its headers");
  } else {
    if (s->framing == SL_FRAMING_NDJSON) {
      size_t before = s->queued;
      if (sl_lines_finish(&s->lines, on_line, s) != SL_LINES_OK) {
        sl_stream_fail(s, "limit", "line larger than max_event_bytes (%zu)",
                       s->max_event_bytes);
        return;
      }
      s->events += s->queued - before;
    }
    sl_stream_end(s, SL_STATE_DONE);
  }
}

/* ---- the stream as a resource ------------------------------------------------ */

/* Its task returned: the stream lives on (the task may have handed it on) and
   closes by its own paths, garbage collection at the latest. Otherwise it is
   cancelled with the reason. */
static void stream_close(sl_resource *r, sl_close_how how, const char *reason) {
  sl_stream *s = sl_container_of(r, sl_stream, res);
  if (how == SL_CLOSE_RETURN) sl_resource_disown(r);
  else sl_stream_cancel(s, reason);
}

static const sl_resource_type stream_type = {"streams", stream_close};
static const sl_resource_type fetch_type = {"fetches", stream_close};

/* ---- start and release ---------------------------------------------------- */

/* The start line of a trace; the URL without credentials or query (either
   may carry a key). */
static void trace_start(sl_stream *s, const sl_stream_opts *o) {
  sl_trace *t = s->rt->trace;
  const char *u = o->url, *scheme_end = strstr(u, "://"), *host = scheme_end ? scheme_end + 3 : u;
  const char *end = host + strcspn(host, "/?#"), *at = memchr(host, '@', (size_t)(end - host));
  size_t path_len = strcspn(end, "?#");
  char url[1024];
  snprintf(url, sizeof url, "%.*s%.*s%.*s", (int)(host - u), u,
           (int)(end - (at ? at + 1 : host)), at ? at + 1 : host, (int)path_len, end);
  sl_trace_begin(t, "start", s->id);
  sl_trace_str(t, "method", o->method ? o->method : o->body ? "POST" : "GET",
               strlen(o->method ? o->method : o->body ? "POST" : "GET"));
  sl_trace_str(t, "url", url, strlen(url));
  if (o->request_id) sl_trace_str(t, "request_id", o->request_id, strlen(o->request_id));
  if (o->tag) sl_trace_str(t, "tag", o->tag, o->tag_len);
  sl_trace_end(t);
}

#define SETOPT(opt, val)                                                       \
  do {                                                                         \
    CURLcode rc_ = curl_easy_setopt(e, opt, val);                              \
    if (rc_ != CURLE_OK) {                                                     \
      snprintf(err, errlen, "curl_easy_setopt(%s): %s", #opt, curl_easy_strerror(rc_)); \
      goto fail;                                                               \
    }                                                                          \
  } while (0)

sl_stream *sl_stream_start(sl_runtime *rt, sl_task *owner, const sl_stream_opts *o,
                           char *err, size_t errlen) {
  sl_stream *s = calloc(1, sizeof *s);
  CURL *e;
  int rc;
  if (!s) {
    snprintf(err, errlen, "out of memory");
    goto fail_opts;
  }
  sl_resource_init(&s->res);
  s->xfer.on_done = on_done;
  s->xfer.on_socket = on_socket;
  s->rt = rt;
  s->id = ++rt->next_stream_id;
  s->fd = CURL_SOCKET_BAD;
  s->framing = o->framing;
  s->http2 = o->http2;
  s->max_event_bytes = o->max_event_bytes;
  s->to_connect = o->connect;
  s->to_first_byte = o->first_byte;
  s->to_idle = o->idle;
  s->to_total = o->total;
  s->secrets = o->secrets;
  s->nsecrets = o->nsecrets;
  s->req_headers = o->headers;
  sl_sse_init(&s->sse, o->max_event_bytes);
  sl_lines_init(&s->lines, o->max_event_bytes);
  if (s->to_connect > 0 || s->to_first_byte > 0 || s->to_idle > 0 || s->to_total > 0) {
    /* only a stream with deadlines has a timer: 10,000 streams add up */
    s->timer = malloc(sizeof *s->timer);
    if (!s->timer || (rc = uv_timer_init(&rt->uv, s->timer)) != 0) {
      snprintf(err, errlen, "uv_timer_init: %s", s->timer ? uv_strerror(rc) : "out of memory");
      free(s->timer);
      s->timer = NULL;
      goto fail;
    }
    s->timer->data = s;
  }
  s->t_started = sl_now();
  if (rt->fd_limit && (uint64_t)rt->net.transfers + FD_RESERVE >= rt->fd_limit) {
    /* Say so, rather than let curl fail with a bare "couldn't connect". */
    sl_stream_fail(s, "limit", "too many open streams for the open-file limit (%llu, "
                   "raised as far as the hard limit allows): raise it with ulimit -Hn",
                   (unsigned long long)rt->fd_limit);
    return s;
  }
  s->easy = e = curl_easy_init();
  if (!e) {
    snprintf(err, errlen, "curl_easy_init failed");
    goto fail;
  }
  SETOPT(CURLOPT_URL, o->url);
  /* http and https only, redirects included: never file://, gopher://... */
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
  SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  if (o->max_redirects > 0) {
    SETOPT(CURLOPT_FOLLOWLOCATION, 1L);
    SETOPT(CURLOPT_MAXREDIRS, o->max_redirects);
  }
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_ERRORBUFFER, s->errbuf);
  SETOPT(CURLOPT_WRITEFUNCTION, cb_write);
  SETOPT(CURLOPT_WRITEDATA, s);
  SETOPT(CURLOPT_HEADERFUNCTION, cb_header);
  SETOPT(CURLOPT_HEADERDATA, s);
  SETOPT(CURLOPT_PREREQFUNCTION, cb_prereq);
  SETOPT(CURLOPT_PREREQDATA, s);
  SETOPT(CURLOPT_HTTPHEADER, s->req_headers);
  SETOPT(CURLOPT_TCP_NODELAY, 1L);
  /* Many live streams are each slow, and curl's receive buffer is a large
     part of a stream's memory: give them 1 KiB (curl's minimum), not 16. */
  if (rt->net.transfers >= MANY_STREAMS) SETOPT(CURLOPT_BUFFERSIZE, 1024L);
  if (o->body) {
    s->req_body = malloc(o->body_len ? o->body_len : 1);
    if (!s->req_body) {
      snprintf(err, errlen, "out of memory for the request body");
      goto fail;
    }
    memcpy(s->req_body, o->body, o->body_len);
    SETOPT(CURLOPT_POSTFIELDS, s->req_body);
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
  }
  if (o->method && strcmp(o->method, o->body ? "POST" : "GET") != 0) {
    if (strcmp(o->method, "HEAD") == 0) SETOPT(CURLOPT_NOBODY, 1L);
    else SETOPT(CURLOPT_CUSTOMREQUEST, o->method);
  }
  if (o->insecure) {
    SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
  }
  /* HTTP/1.1 unless asked: a cancel then closes the stream's own socket, and a
     paused stream's data waits in the kernel. An HTTP/2 stream shares its
     connection; a cancel resets just that stream, and libcurl 7.88 buffers a
     paused one's data itself, up to 32 MB, while the connection is read for
     the others. */
  SETOPT(CURLOPT_HTTP_VERSION,
         o->http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
  if (o->ca_file) SETOPT(CURLOPT_CAINFO, o->ca_file);
  if (o->proxy) SETOPT(CURLOPT_PROXY, o->proxy);
  if (o->connect > 0 && o->connect < SL_NO_LIMIT / 1000)
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)ceil(o->connect * 1000));
  if (sl_curlm_add(&rt->net, e, &s->xfer, err, errlen) != 0) goto fail;
  sl_resource_register(rt, &s->res, o->framing == SL_FRAMING_BODY ? &fetch_type : &stream_type,
                       owner);
  if (rt->trace) trace_start(s, o);
  arm_timer(s, s->t_started);
  return s;

fail:
  s->state = SL_STATE_FAILED;
  sl_stream_release(s);
  return NULL;
fail_opts:
  curl_slist_free_all(o->headers);
  for (int i = 0; i < o->nsecrets; i++) free(o->secrets[i]);
  free(o->secrets);
  return NULL;
}

/* From __gc: the last path of the closing guarantee. */
void sl_stream_release(sl_stream *s) {
  int i;
  sl_stream_cancel(s, "garbage collected");  /* nothing if already over */
  if (s->watch) s->watch->s = NULL;
  sl_resource_unregister(&s->res);
  if (s->easy) {  /* only on a failed start */
    curl_easy_cleanup(s->easy);
    s->easy = NULL;
  }
  curl_slist_free_all(s->req_headers);
  free(s->req_body);
  if (s->timer) uv_close((uv_handle_t *)s->timer, free_handle);
  sl_sse_free(&s->sse);
  sl_lines_free(&s->lines);
  queue_clear(s);  /* events never read still count in the runtime's total */
  buf_free(&s->q);
  buf_free(&s->body);
  buf_free(&s->resp_headers);
  if (s->rt->trace) sl_trace_text(s->rt->trace, &s->tp, s->id);  /* read, never flushed */
  sl_trace_pending_free(&s->tp);
  free(s->cancel_reason);
  free(s->err_message);
  free(s->abort_message);
  for (i = 0; i < s->nsecrets; i++) free(s->secrets[i]);
  free(s->secrets);
  free(s);
}
