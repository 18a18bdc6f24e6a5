/*
** sluice-mock: an OpenAI-compatible upstream for tests and demos. One libuv
** loop; each connection parses requests with http_parser and streams at most
** one generation at a time. mock.c is main and the listener, conn.c the
** connection and its routes, request.c turns a request into a generation,
** gen.c writes it, replies.c picks a chat request's reply by --replies rules,
** standin.c plays llama.cpp's or vLLM's monitoring endpoints (--stand-in).
*/
#ifndef MOCK_H
#define MOCK_H

#include <stdint.h>
#include <string.h>

#include <http_parser.h>
#include <uv.h>

#include "buf.h"
#include "escape.h"
#include "stats.h"
#include "text.h"

#define MOCK_MAX_BODY (16u * 1024 * 1024)
#define MOCK_BLOCK_SIZE (64u * 1024)     /* payload of one write when unpaced */
#define MOCK_CHUNK_HEAD 10               /* room for "ffffffff\r\n" */
#define MOCK_PACED_QUEUE_LIMIT (64u * 1024)
#define MOCK_NONE UINT64_MAX             /* an unset token position */
#define MOCK_MAX_CHOICES 128             /* the largest n a request may ask for */
#define MOCK_MAX_RULE_NAME 256           /* bytes of a --replies rule's name */

typedef struct mock_config {
  const char *host;
  int port;
  double tokens_per_sec;
  double ttft;
  const char *text_file;
  uint64_t max_tokens;
  const char *model;
  int quiet;
  int busy_poll;          /* --busy-poll: spin instead of sleeping in poll */
  int no_accept;          /* --no-accept: never accept (connects hang) */
  int exit_with_parent;   /* --exit-with-parent: SIGTERM when the parent dies */
  const char *url_file;   /* --url-file: where to write the base URL once listening */
  const char *replies_file; /* --replies: scripted conversations */
  int stand_in;           /* --stand-in: MOCK_STANDIN_* */
  unsigned slots;         /* --slots: llama.cpp's slots (0: the default, 4) */
  int no_slots;           /* --no-slots: /slots answers 501, as llama-server's flag */
  int slots_state;        /* --slots-state: older llama-server's "state" 0/1 */
  double stop_delay;      /* --stop-delay: seconds an aborted request stays busy */
} mock_config;

enum { MOCK_STANDIN_NONE, MOCK_STANDIN_LLAMACPP, MOCK_STANDIN_VLLM };

typedef struct mock_conn mock_conn;
typedef struct mock_gen mock_gen;
typedef struct mock_replies mock_replies;
typedef struct mock_standin mock_standin;
typedef struct mock_standin_request mock_standin_request;

/* A write handed to libuv: a copy of what uv_try_write could not take, or a
** pooled block when streaming unpaced. */
typedef struct mock_write {
  uv_write_t req;
  mock_conn *conn;
  struct mock_write *next_free;
  uint64_t gen_serial;     /* which generation's tokens these are */
  uint32_t tokens;
  int pooled;
  size_t len;
  char *owned;             /* a caller's buffer written without a copy */
  char data[];
} mock_write;

typedef struct mock_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_signal_t sigint, sigterm;
  mock_config config;
  mock_tokens *tokens;          /* the default text */
  mock_stats stats;
  struct json_t *fault_counts;  /* mock.key -> requests that carried it */
  mock_replies *replies;        /* --replies rules, or NULL */
  mock_standin *standin;        /* --stand-in's state, or NULL */
  mock_conn *conns;             /* every open connection */
  uint64_t conn_counter, request_counter, gen_counter;
  uint64_t connections_open, connections_total, active;
  mock_write *free_blocks;
  size_t free_block_count;
  int stopping;
  http_parser_settings settings;
  char read_buffer[64 * 1024];  /* reads are consumed before the next one */
  char scratch[MOCK_CHUNK_HEAD + MOCK_BLOCK_SIZE + 16];
} mock_server;

/* How a connection goes on after a response has been handed over. */
typedef enum mock_after {
  MOCK_AFTER_NEXT,       /* keep-alive: read the next request */
  MOCK_AFTER_CLOSE,      /* close (FIN) once the writes are out */
  MOCK_AFTER_RESET       /* reset (RST) once the writes are out */
} mock_after;

struct mock_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;             /* the generation's pace, ttft and pings */
  http_parser parser;
  mock_server *server;
  mock_conn *prev, *next;
  uint64_t number;
  int open_handles;
  unsigned closing : 1, in_parse : 1, message_done : 1, keep_alive : 1,
      in_value : 1, discard : 1, expect_continue : 1, draining : 1;
  mock_after after_drain;
  int request_error;            /* a status to answer before anything else */
  int header_kind;
  char field[32];
  size_t field_len;
  const char *request_error_message;
  mock_buf url, body, request_id, xmock;
  mock_buf pending;             /* bytes read during a response, not parsed yet */
  size_t pending_off;
  unsigned writes_pending;
  size_t queued_bytes;
  mock_gen *gen;                /* the generation in progress, or NULL */
};

typedef struct mock_tool_call {
  char *name;                   /* escaped */
  size_t name_len;
  mock_tokens *fragments;
  uint64_t first_item;          /* item index of its header delta */
} mock_tool_call;

/*
** One of the n choices. Choice i's text is the generation's text from token i
** on, so the choices differ; each has its own length and finish reason.
*/
typedef struct mock_choice {
  uint64_t total;               /* its items: reasoning, then content or tool deltas */
  const char *finish_reason;
  mock_buf content_open;        /* chunk head + this choice up to the token */
  size_t call_cursor;           /* the tool call its next delta belongs to */
} mock_choice;

/*
** Streaming interleaves the choices round robin, one choice per chunk: step s
** holds item s of every choice that has one (in index order), and a choice's
** finish chunk takes its place in the step after its last item. Steps are
** paced (tokens_per_sec is each choice's pace); faults count items over all
** choices.
*/
struct mock_gen {
  mock_conn *conn;
  mock_server *server;
  mock_record *rec;
  uint64_t serial;
  int chat, stream, ndjson, chunked, fast;
  double ns_per_item;
  uint64_t t_headers, t_first, ttft_ns;
  /* items: reasoning tokens, then content tokens or tool-call deltas */
  uint64_t reasoning_count, call_items;
  uint64_t total;               /* items over all choices */
  mock_choice *choices;
  size_t n;
  const mock_tokens *text;
  mock_tokens *own_text, *reasoning;
  mock_tool_call *calls;
  size_t call_count;
  char *keyword;                /* escaped */
  size_t keyword_len;
  uint64_t keyword_index;
  uint64_t error_after, error_event, malformed_after, reset_after, close_after,
      stall_after;
  int malformed_done, ping_only, no_done, no_finish;
  int include_usage, continuous_usage;
  uint64_t ping_ns, next_ping;
  uint64_t prompt_tokens;
  char *model;                  /* escaped, as the client named it */
  size_t model_len;
  int64_t created;
  int status;                   /* the status fault, or 0 */
  char *error_body;
  char *error_message;          /* escaped; for error_after / error_event */
  size_t error_message_len;
  double retry_after;
  char *retry_text;             /* mock.retry_after as an HTTP-date */
  char *location;               /* a Location header for the status fault */
  char *raw_body;               /* mock.raw_body: the whole body, sent as it is */
  size_t raw_len;
  char *raw_type;               /* its Content-Type (default text/event-stream) */
  int hold;                     /* mock.hold: after raw_body, keep the response open */
  /* pre-formatted pieces of a chunk */
  mock_buf head;                /* [data: ]{"id":..,"choices":[ */
  mock_buf content_close;       /* after the token up to the choices' ']' */
  const char *event_end;        /* "\n\n" or "\n" */
  size_t event_end_len;
  size_t max_item;
  /* progress */
  int phase, blocked, nonstream_action, keyword_hold;
  uint64_t emitted, nonstream_at;
  uint64_t step;                /* the step being written */
  size_t slot, finished, roles_sent;  /* choice within the step; choices ended; role chunks out */
  mock_standin_request *standin; /* what --stand-in shows of it, or NULL */
};

/* conn.c */
void mock_conn_parser_settings(http_parser_settings *settings);
void mock_conn_accept(mock_server *s);
/* Frees what a server holds besides itself, its loop, listener and tokens:
   the write blocks kept for reuse, the stand-in, the records, the replies. */
void mock_server_free_state(mock_server *s);
void mock_conn_close(mock_conn *c, mock_after how);
int mock_conn_alive(mock_conn *c);
int mock_conn_write(mock_conn *c, const char *data, size_t len, uint32_t tokens);
int mock_conn_write_owned(mock_conn *c, char *data, size_t len);
mock_write *mock_conn_block(mock_conn *c);
int mock_conn_write_block(mock_conn *c, mock_write *w, size_t off, size_t len,
                          uint32_t tokens);
void mock_conn_release_block(mock_server *s, mock_write *w);
int mock_conn_respond(mock_conn *c, int status, const char *content_type,
                      const char *body, size_t len, const char *extra_headers);
int mock_conn_respond_error(mock_conn *c, int status, const char *type,
                             const char *message, const char *extra_headers);
void mock_conn_response_done(mock_conn *c, mock_after how);
const char *mock_status_text(int status);

/* request.c: parses the body and starts the generation (or answers). */
void mock_request_start(mock_conn *c, int chat);
const char *mock_error_type(int status);
void mock_request_log(mock_server *s, const mock_record *r);
/* Reads a mock options object as a chat request's would be, without a
   request, and refuses unknown keys: 0, or -1 with a message in err. */
int mock_request_check(const struct json_t *mock, const mock_config *cfg, char *err,
                       size_t err_size);

/* replies.c */
/* Reads and checks --replies FILE; NULL with a message in err. */
mock_replies *mock_replies_load(const char *path, const mock_config *cfg, char *err,
                                size_t err_size);
void mock_replies_free(mock_replies *r);
/* The index of the first rule a chat request (its parsed body) satisfies, with
   *reply a new reference to the rule's reply, placeholders filled in, and
   *name the rule's name or NULL; -1 when no rule does. */
int mock_replies_match(const mock_replies *r, const struct json_t *request,
                       struct json_t **reply, const char **name);

/* gen.c */
/* Registers a generation on its connection and starts it, unless the
   stand-in makes it wait for a slot (it starts later, by mock_gen_start). */
void mock_gen_begin(mock_gen *g);
void mock_gen_start(mock_gen *g);
void mock_gen_on_timer(uv_timer_t *t);
void mock_gen_on_drain(mock_gen *g);
void mock_gen_free(mock_gen *g);
/* The longest escaped piece one item may carry (a token, a tool call's name
   or argument fragment). */
size_t mock_gen_longest_piece(const mock_gen *g);
void mock_gen_finish(mock_gen *g, int completed, mock_after how);

/* standin.c: --stand-in llamacpp|vllm. A stand-in watches the generations
   begin and end and serves what llama-server or vLLM would report of them. */
int mock_standin_parse(const char *name);   /* MOCK_STANDIN_*, or -1 */
void mock_standin_init(mock_server *s);     /* once the loop exists */
void mock_standin_close(mock_server *s);    /* shutdown: its timer, what lingers */
void mock_standin_free(mock_server *s);     /* after the loop is closed */
/* A generation begins: 1 when it has to wait for a free slot. */
int mock_standin_begin(mock_gen *g);
/* Is the request target's path (len bytes) want? */
static inline int mock_path_is(const char *path, size_t len, const char *want) {
  return strlen(want) == len && memcmp(path, want, len) == 0;
}

/* A begun generation ends; outcome is vLLM's finished_reason. */
enum { MOCK_OUTCOME_STOP, MOCK_OUTCOME_LENGTH, MOCK_OUTCOME_ABORT, MOCK_OUTCOME_COUNT };
void mock_standin_end(mock_gen *g, int outcome);
/* Whether the stand-in serves path (/slots, /metrics, /health), and a GET of it. */
int mock_standin_serves(const mock_server *s, const char *path, size_t len);
void mock_standin_route(mock_conn *c, const char *path, size_t len);

#endif
