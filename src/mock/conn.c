/*
** One client connection: reading (always on, so a client that goes away is
** noticed at once), HTTP/1.1 parsing with http_parser, writing, the small
** routes, and the one function that closes the socket (mock_conn_close).
*/
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "mock.h"

#define MAX_URL 8192
#define MAX_REQUEST_ID 256
#define MAX_MOCK_HEADER (64 * 1024)
#define MAX_PENDING (1024 * 1024)
#define MAX_FREE_BLOCKS 64

enum { HEADER_OTHER, HEADER_REQUEST_ID, HEADER_MOCK, HEADER_EXPECT };

static void on_close(uv_handle_t *h);
static void conn_process(mock_conn *c);

const char *mock_status_text(int status) {
  const char *text = http_status_str((enum http_status)status);
  return strcmp(text, "<unknown>") == 0 ? "Unknown" : text;
}

/* ---- closing ---------------------------------------------------------- */

/*
** The only place a connection's socket is closed. Stops the generation first
** (its timer, its record) so nothing is written after this returns.
*/
void mock_conn_close(mock_conn *c, mock_after how) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->gen)
    mock_gen_free(c->gen);
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, on_close);
  if (how != MOCK_AFTER_RESET || uv_tcp_close_reset(&c->tcp, on_close) != 0)
    uv_close((uv_handle_t *)&c->tcp, on_close);
  mock_server *s = c->server;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  s->connections_open--;
}

static void on_close(uv_handle_t *h) {
  mock_conn *c = h->data;
  if (--c->open_handles > 0)
    return;
  mock_buf_free(&c->url);
  mock_buf_free(&c->body);
  mock_buf_free(&c->request_id);
  mock_buf_free(&c->xmock);
  mock_buf_free(&c->pending);
  free(c);
}

/*
** The client closed, reset, or a write to it failed. When a generation was
** running this is the abort the mock exists to observe: record when it was
** noticed and how long stopping took, and log it like vLLM does.
*/
static void conn_peer_gone(mock_conn *c, uint64_t noticed_at) {
  if (c->closing)
    return;
  mock_gen *g = c->gen;
  if (g == NULL) {
    mock_conn_close(c, MOCK_AFTER_CLOSE);
    return;
  }
  mock_record *r = g->rec;
  mock_record_ref(r);
  r->closed_at = noticed_at;
  r->client_closed = 1;
  mock_conn_close(c, MOCK_AFTER_CLOSE);
  r->close_notice_ns = uv_hrtime() - noticed_at;
  fprintf(stderr, "Aborted request %s (conn %llu, %llu tokens sent)\n", r->id,
          (unsigned long long)r->conn, (unsigned long long)r->tokens_sent);
  mock_record_unref(r);
}

/* Before a paced write: has the client closed? libuv runs due timers before
   it polls for input, so after the mock was kept off the CPU a token timer
   would fire before the close is read; a real server checks between tokens
   too (vLLM's is_disconnected). Returns 0 when the client is gone (and the
   close is recorded now). */
int mock_conn_alive(mock_conn *c) {
  uv_os_fd_t fd;
  char b;
  ssize_t n;
  if (c->closing) return 0;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) return 1;
  n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
    conn_peer_gone(c, uv_hrtime());
    return 0;
  }
  return 1;
}

static void conn_write_failed(mock_conn *c, uint32_t tokens) {
  if (c->gen) {
    c->gen->rec->tokens_after_close += tokens;
    c->gen->rec->write_errors++;
  }
  conn_peer_gone(c, uv_hrtime());
}

/* ---- writing ---------------------------------------------------------- */

void mock_conn_release_block(mock_server *s, mock_write *w) {
  if (s->free_block_count < MAX_FREE_BLOCKS && !s->stopping) {
    w->next_free = s->free_blocks;
    s->free_blocks = w;
    s->free_block_count++;
  } else {
    free(w);
  }
}

static void on_write(uv_write_t *req, int status) {
  mock_write *w = (mock_write *)req;
  mock_conn *c = w->conn;
  uint32_t tokens = w->tokens;
  uint64_t serial = w->gen_serial;
  c->writes_pending--;
  c->queued_bytes -= w->len;
  if (w->pooled) {
    mock_conn_release_block(c->server, w);
  } else {
    free(w->owned);
    free(w);
  }
  if (c->closing || status == UV_ECANCELED)
    return;
  if (status < 0) {
    if (c->gen && c->gen->serial == serial) {
      c->gen->rec->tokens_after_close += tokens;
      c->gen->rec->write_errors++;
    }
    conn_peer_gone(c, uv_hrtime());
    return;
  }
  if (c->draining) {
    if (c->writes_pending == 0)
      mock_conn_close(c, c->after_drain);
    return;
  }
  if (c->gen)
    mock_gen_on_drain(c->gen);
}

/*
** Hands data to the socket: as much as the kernel takes now, the rest queued
** (copied, unless owned: a malloc'd buffer this takes over). Returns -1 when
** the connection is (now) closed; the generation is gone then.
*/
static int conn_send(mock_conn *c, const char *data, size_t len, uint32_t tokens,
                     char *owned) {
  if (c->closing) {
    free(owned);
    return -1;
  }
  size_t done = 0;
  if (c->writes_pending == 0) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r >= 0)
      done = (size_t)r;
    else if (r != UV_EAGAIN) {
      free(owned);
      conn_write_failed(c, tokens);
      return -1;
    }
  }
  if (done == len) {
    free(owned);
    return 0;
  }
  size_t rest = len - done;
  mock_write *w = mock_xmalloc(sizeof *w + (owned ? 0 : rest));
  w->conn = c;
  w->tokens = tokens;
  w->gen_serial = c->gen ? c->gen->serial : 0;
  w->pooled = 0;
  w->len = rest;
  w->owned = owned;
  if (!owned)
    memcpy(w->data, data + done, rest);
  uv_buf_t b = uv_buf_init(owned ? owned + done : w->data, (unsigned)rest);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    free(w->owned);
    free(w);
    conn_write_failed(c, tokens);
    return -1;
  }
  c->writes_pending++;
  c->queued_bytes += rest;
  return 0;
}

int mock_conn_write(mock_conn *c, const char *data, size_t len, uint32_t tokens) {
  return conn_send(c, data, len, tokens, NULL);
}

int mock_conn_write_owned(mock_conn *c, char *data, size_t len) {
  return conn_send(c, data, len, 0, data);
}

mock_write *mock_conn_block(mock_conn *c) {
  mock_server *s = c->server;
  mock_write *w = s->free_blocks;
  if (w) {
    s->free_blocks = w->next_free;
    s->free_block_count--;
  } else {
    w = mock_xmalloc(sizeof *w + MOCK_CHUNK_HEAD + MOCK_BLOCK_SIZE + 16);
    w->pooled = 1;
    w->owned = NULL;
  }
  w->conn = c;
  return w;
}

/* Writes len bytes at w->data + off; w is released whatever happens. */
int mock_conn_write_block(mock_conn *c, mock_write *w, size_t off, size_t len,
                          uint32_t tokens) {
  if (c->closing) {
    mock_conn_release_block(c->server, w);
    return -1;
  }
  w->tokens = tokens;
  w->gen_serial = c->gen ? c->gen->serial : 0;
  w->len = len;
  uv_buf_t b = uv_buf_init(w->data + off, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    mock_conn_release_block(c->server, w);
    conn_write_failed(c, tokens);
    return -1;
  }
  c->writes_pending++;
  c->queued_bytes += len;
  return 0;
}

/* ---- responses -------------------------------------------------------- */

int mock_conn_respond(mock_conn *c, int status, const char *content_type,
                      const char *body, size_t len, const char *extra_headers) {
  mock_buf b;
  mock_buf_init(&b);
  mock_buf_reserve(&b, len + 256);
  mock_buf_printf(&b,
                  "HTTP/1.1 %d %s\r\nServer: sluice-mock\r\nContent-Type: %s\r\n"
                  "Content-Length: %zu\r\n%sConnection: %s\r\n\r\n",
                  status, mock_status_text(status), content_type, len,
                  extra_headers ? extra_headers : "",
                  c->keep_alive ? "keep-alive" : "close");
  mock_buf_append(&b, body, len);
  int rc = mock_conn_write(c, b.data, b.len, 0);
  mock_buf_free(&b);
  return rc;
}

int mock_conn_respond_error(mock_conn *c, int status, const char *type,
                            const char *message, const char *extra_headers) {
  mock_buf b;
  mock_buf_init(&b);
  mock_buf_puts(&b, "{\"error\":{\"message\":");
  mock_buf_json_string(&b, message, strlen(message));
  mock_buf_printf(&b, ",\"type\":\"%s\",\"code\":%d}}", type, status);
  int rc = mock_conn_respond(c, status, "application/json", b.data, b.len, extra_headers);
  mock_buf_free(&b);
  return rc;
}

/*
** A response has been handed over (possibly still queued). Either read the
** next request, or close once everything queued is out.
*/
void mock_conn_response_done(mock_conn *c, mock_after how) {
  if (c->closing)
    return;
  if (how == MOCK_AFTER_NEXT && c->keep_alive && !c->discard) {
    conn_process(c);
    return;
  }
  if (how == MOCK_AFTER_NEXT)
    how = MOCK_AFTER_CLOSE;
  c->draining = 1;
  c->after_drain = how;
  if (c->writes_pending == 0)
    mock_conn_close(c, how);
}

/* ---- routes ----------------------------------------------------------- */

static void route_models(mock_conn *c) {
  mock_buf b;
  mock_buf_init(&b);
  const char *model = c->server->config.model;
  mock_buf_puts(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
  mock_buf_json_string(&b, model, strlen(model));
  mock_buf_puts(&b, ",\"object\":\"model\",\"owned_by\":\"sluice-mock\"}]}");
  mock_conn_respond(c, 200, "application/json", b.data, b.len, NULL);
  mock_buf_free(&b);
}

static void route_stats(mock_conn *c) {
  mock_server *s = c->server;
  mock_buf b;
  mock_buf_init(&b);
  mock_buf_reserve(&b, 576 * s->stats.count + 128);
  mock_buf_puts(&b, "{\"requests\":[");
  mock_stats_render(&s->stats, &b);
  mock_buf_printf(&b, "],\"active\":%llu,\"connections_open\":%llu,"
                  "\"connections_total\":%llu}",
                  (unsigned long long)s->active, (unsigned long long)s->connections_open,
                  (unsigned long long)s->connections_total);
  /* the body can be tens of MiB: written from its own buffer, not copied */
  char head[256];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 200 OK\r\nServer: sluice-mock\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\nConnection: %s\r\n\r\n",
                   b.len, c->keep_alive ? "keep-alive" : "close");
  if (mock_conn_write(c, head, (size_t)n, 0) == 0)
    mock_conn_write_owned(c, b.data, b.len);
  else
    mock_buf_free(&b);
}


static void conn_dispatch(mock_conn *c) {
  const char *path = c->url.data ? c->url.data : "/";
  size_t len = strcspn(path, "?#");
  int method = c->parser.method;
  int chat = mock_path_is(path, len, "/v1/chat/completions");
  int known = 1, allowed = 1;

  if (chat || mock_path_is(path, len, "/v1/completions")) {
    if ((allowed = method == HTTP_POST))
      mock_request_start(c, chat);
  } else if (mock_path_is(path, len, "/v1/models")) {
    if ((allowed = method == HTTP_GET))
      route_models(c);
  } else if (mock_path_is(path, len, "/stats")) {
    if ((allowed = method == HTTP_GET))
      route_stats(c);
  } else if (mock_path_is(path, len, "/stats/reset")) {
    if ((allowed = method == HTTP_POST)) {
      mock_stats_reset(&c->server->stats);
      mock_conn_respond(c, 200, "application/json", "{\"ok\":true}", 11, NULL);
    }
  } else if (mock_standin_serves(c->server, path, len)) {
    if ((allowed = method == HTTP_GET))
      mock_standin_route(c, path, len);
  } else if (mock_path_is(path, len, "/health")) {
    if ((allowed = method == HTTP_GET))
      mock_conn_respond(c, 200, "text/plain", "ok", 2, NULL);
  } else {
    known = 0;
  }

  char message[160];
  if (!known || !allowed) {
    snprintf(message, sizeof message, "%s %.*s: %s", http_method_str(method),
             (int)(len > 100 ? 100 : len), path, known ? "method not allowed" : "not found");
    if (known)
      mock_conn_respond_error(c, 405, "method_not_allowed_error", message, NULL);
    else
      mock_conn_respond_error(c, 404, "not_found_error", message, NULL);
  }
  mock_buf_free(&c->body);
  mock_buf_free(&c->xmock);
  /* a generation answers (and goes on) when it ends */
  if (c->gen == NULL && !c->closing && !c->draining)
    mock_conn_response_done(c, MOCK_AFTER_NEXT);
}

/* ---- parsing ---------------------------------------------------------- */

static mock_conn *conn_of(http_parser *p) {
  return p->data;
}

static void request_error(mock_conn *c, int status, const char *message) {
  if (c->request_error == 0) {
    c->request_error = status;
    c->request_error_message = message;
  }
}

static int on_message_begin(http_parser *p) {
  mock_conn *c = conn_of(p);
  c->url.len = c->body.len = c->request_id.len = c->xmock.len = 0;
  c->in_value = 0;
  c->field_len = 0;
  c->header_kind = HEADER_OTHER;
  c->expect_continue = 0;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  mock_conn *c = conn_of(p);
  if (c->url.len + len > MAX_URL) {
    request_error(c, 414, "request target too long");
    return -1;
  }
  mock_buf_append(&c->url, at, len);
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  mock_conn *c = conn_of(p);
  if (c->in_value) {
    c->in_value = 0;
    c->field_len = 0;
  }
  if (c->field_len + len < sizeof c->field)
    memcpy(c->field + c->field_len, at, len);
  c->field_len += len;
  return 0;
}

static int field_is(const mock_conn *c, const char *name) {
  size_t len = strlen(name);
  return c->field_len == len && strncasecmp(c->field, name, len) == 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  mock_conn *c = conn_of(p);
  if (!c->in_value) {
    c->in_value = 1;
    c->header_kind = field_is(c, "x-request-id") ? HEADER_REQUEST_ID
                     : field_is(c, "x-mock")     ? HEADER_MOCK
                     : field_is(c, "expect")     ? HEADER_EXPECT
                                                 : HEADER_OTHER;
    if (c->header_kind == HEADER_REQUEST_ID)
      c->request_id.len = 0;
    else if (c->header_kind == HEADER_MOCK)
      c->xmock.len = 0;
    else if (c->header_kind == HEADER_EXPECT)
      c->expect_continue = len >= 3 && strncmp(at, "100", 3) == 0;
  }
  switch (c->header_kind) {
  case HEADER_REQUEST_ID:
    if (c->request_id.len + len > MAX_REQUEST_ID) {
      request_error(c, 400, "X-Request-Id is longer than 256 bytes");
      return -1;
    }
    mock_buf_append(&c->request_id, at, len);
    break;
  case HEADER_MOCK:
    if (c->xmock.len + len > MAX_MOCK_HEADER) {
      request_error(c, 431, "X-Mock header too large");
      return -1;
    }
    mock_buf_append(&c->xmock, at, len);
    break;
  }
  return 0;
}

static int on_headers_complete(http_parser *p) {
  mock_conn *c = conn_of(p);
  if (p->content_length != ULLONG_MAX && p->content_length > MOCK_MAX_BODY) {
    request_error(c, 413, "request body larger than 16 MiB");
    http_parser_pause(p, 1);
    return 0;
  }
  if (c->expect_continue && p->http_minor >= 1)
    mock_conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, 0);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  mock_conn *c = conn_of(p);
  if (c->body.len + len > MOCK_MAX_BODY) {
    request_error(c, 413, "request body larger than 16 MiB");
    return -1;
  }
  mock_buf_append(&c->body, at, len);
  return 0;
}

static int on_message_complete(http_parser *p) {
  mock_conn *c = conn_of(p);
  c->message_done = 1;
  c->keep_alive = http_should_keep_alive(p) != 0;
  http_parser_pause(p, 1);
  return 0;
}

void mock_conn_parser_settings(http_parser_settings *s) {
  http_parser_settings_init(s);
  s->on_message_begin = on_message_begin;
  s->on_url = on_url;
  s->on_header_field = on_header_field;
  s->on_header_value = on_header_value;
  s->on_headers_complete = on_headers_complete;
  s->on_body = on_body;
  s->on_message_complete = on_message_complete;
}

/*
** Parses until a request starts a generation, the connection stops taking
** requests, or the data runs out. Returns the bytes consumed.
*/
static size_t conn_feed(mock_conn *c, const char *data, size_t len) {
  size_t off = 0;
  while (off < len && !c->closing && !c->gen && !c->draining && !c->discard) {
    http_parser_pause(&c->parser, 0);
    size_t n = http_parser_execute(&c->parser, &c->server->settings, data + off,
                                   len - off);
    off += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->request_error || (e != HPE_OK && e != HPE_PAUSED)) {
      int status = c->request_error ? c->request_error : 400;
      const char *message = c->request_error ? c->request_error_message
                                              : http_errno_description(e);
      c->keep_alive = 0;
      c->discard = 1;
      mock_conn_respond_error(c, status, mock_error_type(status), message, NULL);
      mock_conn_response_done(c, MOCK_AFTER_CLOSE);
      return len;
    }
    if (c->message_done) {
      c->message_done = 0;
      if (c->parser.upgrade) {
        c->keep_alive = 0; /* the bytes after it are not HTTP */
        c->discard = 1;
      }
      conn_dispatch(c);
    } else if (n == 0) {
      break;
    }
  }
  return off;
}

static void conn_process(mock_conn *c) {
  if (c->in_parse)
    return; /* the feed loop further up the stack carries on */
  c->in_parse = 1;
  while (c->pending_off < c->pending.len && !c->closing && !c->gen && !c->draining &&
         !c->discard) {
    size_t used = conn_feed(c, c->pending.data + c->pending_off,
                            c->pending.len - c->pending_off);
    if (used == 0)
      break;
    c->pending_off += used;
  }
  if (!c->closing && c->pending_off >= c->pending.len) {
    mock_buf_free(&c->pending);
    c->pending_off = 0;
  }
  c->in_parse = 0;
}

static void stash(mock_conn *c, const char *data, size_t len) {
  if (c->pending.len - c->pending_off + len > MAX_PENDING) {
    /* a client pipelining this much gets its response, then a close */
    c->discard = 1;
    c->keep_alive = 0;
    return;
  }
  if (c->pending_off > 0 && c->pending_off == c->pending.len) {
    c->pending.len = 0;
    c->pending_off = 0;
  }
  mock_buf_append(&c->pending, data, len);
}

/* One buffer for every connection: a read is consumed before the next. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  mock_conn *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->server->read_buffer, sizeof c->server->read_buffer);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  mock_conn *c = stream->data;
  if (nread < 0) {
    conn_peer_gone(c, uv_hrtime());
    return;
  }
  if (nread == 0 || c->closing || c->discard || c->draining)
    return;
  size_t len = (size_t)nread;
  if (c->pending_off < c->pending.len || c->gen || c->in_parse) {
    stash(c, buf->base, len);
    conn_process(c);
    return;
  }
  c->in_parse = 1;
  size_t used = conn_feed(c, buf->base, len);
  c->in_parse = 0;
  if (used < len && !c->closing && !c->discard)
    stash(c, buf->base + used, len - used);
  if (c->pending_off < c->pending.len && !c->gen)
    conn_process(c);
}

void mock_server_free_state(mock_server *s) {
  while (s->free_blocks) {
    mock_write *w = s->free_blocks;
    s->free_blocks = w->next_free;
    free(w);
  }
  mock_standin_free(s);
  mock_stats_free(&s->stats);
  mock_replies_free(s->replies);  /* after the records, which name its rules */
  json_decref(s->fault_counts);
}

void mock_conn_accept(mock_server *s) {
  mock_conn *c = mock_xcalloc(1, sizeof *c);
  c->server = s;
  if (uv_tcp_init(s->loop, &c->tcp) != 0) {
    free(c);
    return;
  }
  c->tcp.data = c;
  c->open_handles = 1;
  if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, on_close);
    return;
  }
  uv_timer_init(s->loop, &c->timer);
  c->timer.data = c;
  c->open_handles = 2;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->keep_alive = 1;
  c->number = ++s->conn_counter;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  s->connections_open++;
  s->connections_total++;
  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    mock_conn_close(c, MOCK_AFTER_CLOSE);
}
