/*
** Traces: one JSON line per stream event, in a file (sluice --trace FILE,
** $SLUICE_TRACE, sluice.trace(path)), times on sluice.now()'s clock. Lines
** are buffered and written out whole once per loop pass (and whenever the
** buffer fills): after a kill -9 the file holds the lines of every pass but
** the last, each whole but possibly the last. To stay cheap on the hot path,
** the events of one read share a line (their sizes in an array), and so do
** the text pieces a script reads one after the other.
**
**   {"t":..,"ev":"start","s":ID,"method":"POST","url":"http://host/path","request_id":..,"tag":..}
**   {"t":..,"ev":"head","s":ID,"status":200}
**   {"t":..,"ev":"data","s":ID,"sizes":[n,...]}        events that arrived together
**   {"t":..,"ev":"text","s":ID,"pieces":["..",..]}     text pieces read (sluice.openai)
**   {"t":..,"ev":"note","s":ID,...}                    what a layer adds (s:trace_note)
**   {"t":..,"ev":"stop","s":ID,"reason":".."}          the decision to stop (a cancel)
**   {"t":..,"ev":"close","s":ID}                       the socket closed
**   {"t":..,"ev":"end","s":ID,"state":"..","events":n,"bytes":n,"error":".."}
**   {"t":..,"ev":"confirm","s":ID,"server_stopped_at":..,"how":".."}  the server's word
*/
#ifndef SL_TRACE_H
#define SL_TRACE_H

#include <stddef.h>

#include "runtime.h"

typedef struct sl_trace sl_trace;

/* Starts tracing to path (appended to: several runs may share a file).
   Returns NULL with err set when the file cannot be opened. */
sl_trace *sl_trace_open(sl_runtime *rt, const char *path, char *err, size_t n);

/* A line's beginning: {"t":now,"ev":"<ev>","s":<id> -- then fields, then
   sl_trace_end. Each returns nothing; a trace that cannot grow drops lines,
   never the stream. */
void sl_trace_begin(sl_trace *t, const char *ev, unsigned long long stream);
/* The same, for something that happened at sl_now() time `at`. */
void sl_trace_begin_at(sl_trace *t, const char *ev, unsigned long long stream, double at);
void sl_trace_str(sl_trace *t, const char *key, const char *s, size_t len);
void sl_trace_num(sl_trace *t, const char *key, double v);
void sl_trace_int(sl_trace *t, const char *key, long long v);
void sl_trace_bool(sl_trace *t, const char *key, int v);
void sl_trace_end(sl_trace *t);

/* What a stream keeps for its next data and text lines: the sizes of the
   events one read brings (written when the read is done), and the text
   pieces the script reads (written when it has read all that came, when
   they fill 4 KiB, or when the stream ends). */
typedef struct sl_trace_pending {
  char *sizes, *pieces;
  size_t sizes_len, sizes_cap, pieces_len, pieces_cap;
} sl_trace_pending;

void sl_trace_size(sl_trace *t, sl_trace_pending *p, size_t size);
/* The data line of one read: the sizes gathered since the last one. */
void sl_trace_data(sl_trace *t, sl_trace_pending *p, unsigned long long stream, double at);
void sl_trace_piece(sl_trace *t, sl_trace_pending *p, const char *s, size_t len);
/* The text line of the pieces gathered so far, if any. */
void sl_trace_text(sl_trace *t, sl_trace_pending *p, unsigned long long stream);
/* Enough pieces gathered for a line of their own (4 KiB). */
static inline int sl_trace_pieces_full(const sl_trace_pending *p) { return p->pieces_len >= (4u << 10); }
void sl_trace_pending_free(sl_trace_pending *p);

#endif
