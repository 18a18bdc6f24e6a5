/*
** Server-Sent Events parser: bytes in, events out, following the WHATWG
** "interpreting an event stream" rules byte for byte. No I/O, no Lua, no curl.
** Feed it whatever pieces the transport hands over; events come out whole.
*/
#ifndef SL_SSE_H
#define SL_SSE_H

#include <stddef.h>

enum {
  SL_SSE_OK = 0,
  SL_SSE_TOO_BIG = 1,   /* an event's data or a single line exceeds the limit */
  SL_SSE_NOMEM = 2      /* a buffer could not grow */
};

typedef struct sl_sse_event {
  const char *data;  size_t data_len;   /* data lines joined with "\n" */
  const char *event; size_t event_len;  /* 0: the default type, "message" */
  const char *id;    size_t id_len;     /* last event ID; persists */
} sl_sse_event;

/* Called once per dispatched event; the pointers (never NULL) are valid only
   during the call. */
typedef void (*sl_sse_event_fn)(void *ud, const sl_sse_event *ev);

typedef struct sl_sse {
  /* read-only for callers */
  unsigned long comments;   /* comment lines seen, e.g. ": ping" */
  long retry;               /* last valid retry field in ms, or -1 */

  /* private */
  size_t max;               /* max_event_bytes; 0 was turned into "no limit" */
  char *line;  size_t line_len,  line_cap;    /* a line split across feeds */
  char *data;  size_t data_len,  data_cap;    /* owned copy of the data */
  const char *data_ref;     /* or: the data still inside the caller's buffer */
  char *event; size_t event_len, event_cap;
  char *id;    size_t id_len,    id_cap;
  unsigned char has_data;   /* a data field was seen since the last dispatch */
  unsigned char last_cr;    /* the previous feed ended with a CR line ending */
  unsigned char bom;        /* BOM bytes matched so far; 3 = start handled */
  unsigned char status;     /* sticky error, SL_SSE_OK while healthy */
} sl_sse;

/* max_event_bytes bounds both the data of one event and any single line;
   0 means no limit. */
void sl_sse_init(sl_sse *p, size_t max_event_bytes);

/* Parses len bytes, calling fn for each complete event. Returns SL_SSE_OK or
   an error; events before the error were delivered. Do not feed again after
   an error. An event unterminated at the end of the stream is never
   dispatched, so there is nothing to call at EOF. */
int sl_sse_feed(sl_sse *p, const char *buf, size_t len, sl_sse_event_fn fn,
                void *ud);

void sl_sse_free(sl_sse *p);

/* Between feeds: frees the buffers that hold nothing pending (a split line,
   multi-line data, an event type), for callers with many mostly idle
   streams. The last event ID is kept, as the rules require. */
void sl_sse_trim(sl_sse *p);

#endif
