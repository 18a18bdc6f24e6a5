/*
** A streaming HTTP transfer: the easy handle, the framing parser, the bounded
** event queue, the deadlines, the metrics. No Lua here (lstream.c binds it).
** sl_stream_end() is the one function that ends a transfer.
*/
#ifndef SL_STREAM_H
#define SL_STREAM_H

#include <stdint.h>
#include "curl_dl.h"

#include "curlm.h"
#include "ndjson.h"
#include "runtime.h"
#include "sse.h"
#include "trace.h"

typedef enum {
  SL_FRAMING_SSE, SL_FRAMING_NDJSON, SL_FRAMING_RAW,
  SL_FRAMING_BODY         /* whole body kept, any status accepted (fetch) */
} sl_framing;

typedef enum {
  SL_STATE_CONNECTING, SL_STATE_STREAMING,
  SL_STATE_DONE, SL_STATE_CANCELLED, SL_STATE_FAILED
} sl_state;

typedef struct sl_buf {
  char *p;
  size_t len, cap;
} sl_buf;

typedef struct sl_stream sl_stream;
struct sl_stream {
  sl_resource res;        /* on its task's and the runtime's lists while unfinished */
  sl_transfer xfer;       /* what the curl bridge calls */
  sl_runtime *rt;
  CURL *easy;
  struct curl_slist *req_headers;
  char *req_body;
  sl_framing framing;
  sl_state state;

  /* Event queue: records [u32 data_len][u32 event_len][u32 id_len] then the
     bytes of event, id, data; consumed from qhead, appended at q.len. */
  sl_buf q;
  size_t qhead;
  size_t queued;          /* events in the queue */
  int paused;
  size_t max_event_bytes;
  sl_sse sse;
  sl_lines lines;

  sl_buf body;            /* BODY framing, or an HTTP error's body (capped) */
  sl_buf resp_headers;    /* "name\0value\0" pairs, names lower-cased */
  long status;
  int headers_done;
  int http_error;         /* status >= 300 on a streaming framing */
  int not_stream;         /* a 2xx whose body is no event stream (JSON, HTML) */

  double to_connect, to_first_byte, to_idle, to_total;   /* seconds, 0 = none */
  uv_timer_t *timer;

  double t_started, t_connected, t_headers, t_first_byte, t_first_event,
      t_last_event, t_ended;
  double t_busy;          /* last time the idle timer saw events still queued */
  uint64_t events, bytes;
  int local_port;         /* of the connection, once connected */
  curl_socket_t fd;       /* the socket curl is watching for this transfer */
  int http2;              /* may be HTTP/2 (asked for); else surely HTTP/1.1 */

  char *cancel_reason;
  const char *err_kind;   /* set when state is FAILED */
  char *err_message;
  const char *abort_kind; /* set by a callback that aborts the transfer */
  char *abort_message;
  char **secrets;         /* header values never to appear in errors */
  int nsecrets;
  char errbuf[CURL_ERROR_SIZE];

  sl_task *waiter;        /* the task blocked in next() */
  sl_task *end_waiter;    /* the task blocked in wait() */
  struct sl_watch *watch; /* sees the end without holding the stream (lstream.c) */
  double server_stopped_at;  /* when the server confirmed it stopped (confirm) */
  unsigned long long id;  /* this runtime's stream number (traces name it) */
  sl_trace_pending tp;    /* what its next trace lines gather */
};

typedef struct sl_stream_opts {
  const char *url;
  const char *method;
  const char *body;
  size_t body_len;
  struct curl_slist *headers;   /* taken over by the stream */
  char **secrets;               /* taken over */
  int nsecrets;
  sl_framing framing;
  size_t max_event_bytes;
  double connect, first_byte, idle, total;
  int insecure;
  int http2;                    /* offer HTTP/2 over TLS; default HTTP/1.1 */
  long max_redirects;           /* 0: follow none */
  const char *ca_file;
  const char *proxy;
  const char *tag;              /* for the trace: what the script calls it */
  size_t tag_len;
  const char *request_id;       /* the X-Request-Id it sends, if any */
} sl_stream_opts;

/* Creates and starts the transfer, owned by owner (NULL: the runtime's).
   Returns NULL with the reason in err on failure; the headers and secrets of
   o are the stream's, or freed, either way. */
sl_stream *sl_stream_start(sl_runtime *rt, sl_task *owner, const sl_stream_opts *o,
                           char *err, size_t errlen);
/* The one function that ends a transfer (see stream.c). */
void sl_stream_end(sl_stream *s, sl_state state);
void sl_stream_cancel(sl_stream *s, const char *reason);
void sl_stream_fail(sl_stream *s, const char *kind, const char *fmt, ...);
/* Frees the stream once its userdata is gone (ends it first if needed). */
void sl_stream_release(sl_stream *s);

/* Queue access for the binding. Returns 0 when empty. */
typedef struct sl_event {
  const char *data, *event, *id;
  uint32_t data_len, event_len, id_len;
} sl_event;
int  sl_stream_peek(sl_stream *s, sl_event *ev);
void sl_stream_pop(sl_stream *s);
const char *sl_state_name(sl_state st);
/* The value of response header name (lower case), or NULL. */
const char *sl_stream_header(const sl_stream *s, const char *name);

/* A watch sees a stream's end without keeping the stream alive (the
   confirmation poller's): the stream and the watch point at each other, and
   whichever goes first unlinks. At the end the watching task is woken, and
   made a foreground task, so that the script's exit waits for what it does
   next (bounded by its own give-up time). */
typedef struct sl_watch {
  sl_stream *s;           /* NULL once the stream is freed */
  sl_task *waiter;        /* the task blocked in watch:wait() */
  int ended;
  sl_state state;
  double ended_at;
  unsigned long long id;
  char request_id[128];   /* the response's x-request-id, "" if none */
} sl_watch;
void sl_watch_ended(sl_watch *w, sl_stream *s);
int sl_stream_finished(const sl_stream *s);

#endif
