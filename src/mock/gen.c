/*
** Writing a generation: chunks shaped like vLLM's, paced by one timer per
** connection (all tokens due at a tick go out in one write), or unpaced as
** 64 KiB blocks with at most two writes in flight. Faults are positions in
** the item sequence: reasoning tokens, then content tokens or tool deltas.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mock.h"

enum { PHASE_ITEMS, PHASE_STALL, PHASE_PING_ONLY, PHASE_NONSTREAM };

typedef enum step {
  STEP_FULL,     /* the buffer is full; more is due now */
  STEP_WAIT,     /* nothing due until *wake */
  STEP_IDLE,     /* nothing due ever (a stall without pings) */
  STEP_DONE,     /* the response is complete */
  STEP_CLOSE,    /* close the connection here */
  STEP_RESET     /* reset the connection here */
} step;

enum { NONSTREAM_ANSWER, NONSTREAM_ERROR, NONSTREAM_MALFORMED, NONSTREAM_CLOSE,
       NONSTREAM_RESET, NONSTREAM_STALL };

#define LIT(s) s, sizeof(s) - 1

static inline char *put(char *d, const char *s, size_t n) {
  memcpy(d, s, n);
  return d + n;
}

/* ---- chunk pieces ----------------------------------------------------- */

static char *put_usage(const mock_gen *g, char *d, uint64_t completion) {
  d = put(d, LIT(",\"usage\":{\"prompt_tokens\":"));
  d += mock_format_u64(d, g->prompt_tokens);
  d = put(d, LIT(",\"completion_tokens\":"));
  d += mock_format_u64(d, completion);
  d = put(d, LIT(",\"total_tokens\":"));
  d += mock_format_u64(d, g->prompt_tokens + completion);
  return put(d, "}", 1);
}

/* After the choices' ']': usage when streamed continuously, '}', event end. */
static char *end_event(const mock_gen *g, char *d, uint64_t completion) {
  if (g->continuous_usage)
    d = put_usage(g, d, completion);
  d = put(d, "}", 1);
  return put(d, g->event_end, g->event_end_len);
}

/* {"index":i, */
static char *put_index(char *d, size_t choice) {
  d = put(d, LIT("{\"index\":"));
  d += mock_format_u64(d, choice);
  return put(d, ",", 1);
}

static char *put_delta(const mock_gen *g, char *d, size_t choice, const char *open,
                       size_t open_len, const char *tok, size_t tok_len, const char *close,
                       size_t close_len, uint64_t completion) {
  d = put(d, g->head.data, g->head.len);
  d = put_index(d, choice);
  d = put(d, LIT("\"delta\":{"));
  d = put(d, open, open_len);
  d = put(d, tok, tok_len);
  d = put(d, close, close_len);
  d = put(d, LIT("},\"logprobs\":null,\"finish_reason\":null}]"));
  return end_event(g, d, completion);
}

static char *put_role(const mock_gen *g, char *d, size_t choice) {
  return put_delta(g, d, choice, LIT("\"role\":\"assistant\",\"content\":\"\""), "", 0, "", 0, 0);
}

/* Content token j of a choice: the text from token `choice` on, or the keyword. */
static const char *content_token(const mock_gen *g, size_t choice, uint64_t j, size_t *len) {
  if (j == g->keyword_index && g->keyword) {
    *len = g->keyword_len;
    return g->keyword;
  }
  return mock_token(g->text, j + choice, len);
}

/* Item k of a choice; the completion count it reports is one more than emitted. */
static char *put_item(mock_gen *g, char *d, size_t choice, uint64_t k, int *keyword) {
  const char *tok;
  size_t len;
  uint64_t completion = g->emitted + 1;
  if (k < g->reasoning_count) {
    tok = mock_token(g->reasoning, k, &len);
    return put_delta(g, d, choice, LIT("\"reasoning_content\":\""), tok, len, LIT("\""),
                     completion);
  }
  uint64_t j = k - g->reasoning_count;
  if (g->call_count > 0) {
    size_t *cursor = &g->choices[choice].call_cursor;
    while (*cursor + 1 < g->call_count && g->calls[*cursor + 1].first_item <= j)
      (*cursor)++;
    const mock_tool_call *call = &g->calls[*cursor];
    char index[24];
    size_t index_len = mock_format_u64(index, *cursor);
    char open[320];
    char *o = put(open, LIT("\"tool_calls\":[{\"index\":"));
    o = put(o, index, index_len);
    if (j == call->first_item) {
      o = put(o, LIT(",\"id\":\"call_"));
      o = put(o, index, index_len);
      o = put(o, LIT("\",\"type\":\"function\",\"function\":{\"name\":\""));
      d = put_delta(g, d, choice, open, (size_t)(o - open), call->name, call->name_len,
                    LIT("\",\"arguments\":\"\"}}]"), completion);
    } else {
      o = put(o, LIT(",\"function\":{\"arguments\":\""));
      tok = mock_token(call->fragments, j - call->first_item - 1, &len);
      d = put_delta(g, d, choice, open, (size_t)(o - open), tok, len, LIT("\"}}]"),
                    completion);
    }
    return d;
  }
  if (j == g->keyword_index)
    *keyword = 1;
  tok = content_token(g, choice, j, &len);
  const mock_buf *open = &g->choices[choice].content_open;
  d = put(d, open->data, open->len);
  d = put(d, tok, len);
  d = put(d, g->content_close.data, g->content_close.len);
  if (g->continuous_usage)
    return end_event(g, d, completion);
  d = put(d, "}", 1);
  return put(d, g->event_end, g->event_end_len);
}

/* A choice's finish chunk. */
static char *put_finish(mock_gen *g, char *d, size_t choice) {
  d = put(d, g->head.data, g->head.len);
  d = put_index(d, choice);
  if (g->chat)
    d = put(d, LIT("\"delta\":{},\"logprobs\":null,\"finish_reason\":\""));
  else
    d = put(d, LIT("\"text\":\"\",\"logprobs\":null,\"finish_reason\":\""));
  const char *reason = g->choices[choice].finish_reason;
  d = put(d, reason, strlen(reason));
  d = put(d, LIT("\"}]"));
  return end_event(g, d, g->emitted);
}

/* After every choice's finish: the usage chunk and [DONE], as configured. */
static char *put_tail(mock_gen *g, char *d) {
  if (g->include_usage) {
    d = put(d, g->head.data, g->head.len);
    d = put(d, "]", 1);
    d = put_usage(g, d, g->emitted);
    d = put(d, "}", 1);
    d = put(d, g->event_end, g->event_end_len);
  }
  if (!g->no_done && !g->ndjson)
    d = put(d, LIT("data: [DONE]\n\n"));
  return d;
}

static char *put_error(mock_gen *g, char *d, int as_event) {
  char msg[80];
  int n = snprintf(msg, sizeof msg, "mock error %safter %llu tokens",
                   as_event ? "event " : "", (unsigned long long)g->emitted);
  if (!g->ndjson) {
    if (as_event)
      d = put(d, LIT("event: error\n"));
    d = put(d, LIT("data: "));
  }
  d = put(d, LIT("{\"error\":{\"message\":\""));
  d = g->error_message ? put(d, g->error_message, g->error_message_len)
                       : put(d, msg, (size_t)n);
  d = put(d, LIT("\",\"type\":\"internal_error\",\"code\":500}}"));
  return g->ndjson ? put(d, "\n", 1) : put(d, LIT("\n\n"));
}

/* ---- the item sequence ------------------------------------------------ */

/* Moves to the next choice of the step; returns 1 when a new step begins. */
static int next_slot(mock_gen *g) {
  if (++g->slot < g->n)
    return 0;
  g->slot = 0;
  g->step++;
  return 1;
}

/*
** Writes what is due at now into dst (at most cap bytes). A fault at
** position N fires once N items are out, without waiting for item N's time;
** a finish chunk goes out without waiting either.
*/
static step fill(mock_gen *g, char *dst, size_t cap, uint64_t now, size_t *out_len,
                 uint32_t *items, int *keyword, uint64_t *wake) {
  char *d = dst, *end = dst + cap;
  step st;
  *items = 0;
  *keyword = 0;
  *wake = 0;
  for (;;) {
    if ((size_t)(end - d) < 4 * g->max_item) {
      st = STEP_FULL;
      break;
    }
    if (g->ping_ns && now >= g->next_ping) {
      d = g->ndjson ? put(d, "\n", 1) : put(d, LIT(": ping\n\n"));
      g->next_ping += g->ping_ns;
      if (g->next_ping <= now)
        g->next_ping = now + g->ping_ns;
    }
    if (g->phase != PHASE_ITEMS) {
      st = g->ping_ns ? STEP_WAIT : STEP_IDLE;
      *wake = g->next_ping;
      break;
    }
    if (now < g->t_first) {
      st = STEP_WAIT;
      *wake = g->t_first;
      break;
    }
    uint64_t k = g->emitted;
    if (k == g->error_after || k == g->error_event) {
      d = put_error(g, d, k != g->error_after);
      st = STEP_DONE;
      break;
    }
    if (k == g->malformed_after && !g->malformed_done) {
      d = g->ndjson ? put(d, LIT("{\"id\":\"broken\", \"choices\": [\n"))
                    : put(d, LIT("data: {\"id\":\"broken\", \"choices\": [\n\n"));
      g->malformed_done = 1;
      continue;
    }
    if (k == g->close_after) {
      st = STEP_CLOSE;
      break;
    }
    if (k == g->reset_after) {
      st = STEP_RESET;
      break;
    }
    if (k == g->stall_after) {
      g->phase = PHASE_STALL;
      continue;
    }
    if (g->finished == g->n) {
      if (!g->no_finish)
        d = put_tail(g, d);
      st = STEP_DONE;
      break;
    }
    size_t choice = g->slot;
    uint64_t total = g->choices[choice].total;
    int ends = g->step == total;
    if (g->step <= total) { /* else it ended in an earlier step */
      if (!ends && g->ns_per_item > 0) {
        uint64_t due = g->t_first + (uint64_t)((double)g->step * g->ns_per_item);
        if (now < due) {
          st = STEP_WAIT;
          *wake = due;
          break;
        }
      }
      /* a chat stream opens with every choice's role chunk */
      if (g->chat && g->roles_sent < g->n && !(ends && g->no_finish)) {
        d = put_role(g, d, g->roles_sent++);
        continue;
      }
      if (ends) {
        if (!g->no_finish)
          d = put_finish(g, d, choice);
        g->finished++;
      } else {
        int was_keyword = *keyword;
        d = put_item(g, d, choice, g->step, keyword);
        g->emitted = k + 1;
        (*items)++;
        if (*keyword && !was_keyword && g->ns_per_item > 0) {
          /* A paced stream that fell behind catches up in bursts, but never
             past the keyword's step: the next step is due one interval after
             it, so "tokens after the keyword" counts only what the client let
             the server make. */
          g->t_first = now - (uint64_t)((double)g->step * g->ns_per_item);
          g->keyword_hold = 1;
        }
      }
    }
    if (next_slot(g) && g->keyword_hold) {
      g->keyword_hold = 0;
      st = STEP_WAIT;
      *wake = now + (uint64_t)g->ns_per_item;
      break;
    }
  }
  if (st == STEP_WAIT && g->ping_ns && g->next_ping < *wake)
    *wake = g->next_ping;
  *out_len = (size_t)(d - dst);
  return st;
}

static void schedule(mock_gen *g, uint64_t wake) {
  uint64_t now = uv_hrtime();
  uint64_t ms = wake > now ? (wake - now + 999999) / 1000000 : 0;
  uv_timer_start(&g->conn->timer, mock_gen_on_timer, ms, 0);
}

/* Frames payload (at base + MOCK_CHUNK_HEAD) as one HTTP chunk; returns its start. */
static size_t frame(char *base, size_t *len, int last) {
  size_t off = MOCK_CHUNK_HEAD;
  char *payload = base + MOCK_CHUNK_HEAD;
  if (*len > 0) {
    static const char hex[] = "0123456789abcdef";
    char digits[16];
    size_t n = 0;
    for (size_t v = *len; v; v >>= 4)
      digits[n++] = hex[v & 15];
    off -= n + 2;
    for (size_t i = 0; i < n; i++)
      base[off + i] = digits[n - 1 - i];
    base[off + n] = '\r';
    base[off + n + 1] = '\n';
    payload[(*len)++] = '\r';
    payload[(*len)++] = '\n';
  }
  if (last) {
    memcpy(payload + *len, "0\r\n\r\n", 5);
    *len += 5;
  }
  *len += MOCK_CHUNK_HEAD - off;
  return off;
}

/*
** Writes everything due, block by block, until the sequence has to wait, the
** socket pushes back, or the response ends. g may be freed on return.
*/
static void pump(mock_gen *g) {
  mock_conn *c = g->conn;
  mock_server *s = g->server;
  int fast = g->ns_per_item == 0;
  for (int round = 0; round < 4; round++) {
    if (fast ? c->writes_pending >= 2 : c->queued_bytes > MOCK_PACED_QUEUE_LIMIT) {
      g->blocked = 1; /* on_drain goes on */
      return;
    }
    g->blocked = 0;
    if (!fast && !mock_conn_alive(c))
      return; /* paced: a close that came meanwhile goes first */
    uint64_t now = uv_hrtime();
    mock_write *w = fast ? mock_conn_block(c) : NULL;
    char *base = w ? w->data : s->scratch;
    size_t len;
    uint32_t items;
    int keyword;
    uint64_t wake;
    step st = fill(g, base + MOCK_CHUNK_HEAD, MOCK_BLOCK_SIZE, now, &len, &items,
                   &keyword, &wake);
    mock_record *r = g->rec;
    mock_record_tokens(r, now, items);
    if (keyword && r->keyword_at == 0)
      r->keyword_at = now;
    size_t off = MOCK_CHUNK_HEAD;
    if (g->chunked)
      off = frame(base, &len, st == STEP_DONE);
    if (len > 0) {
      int rc = w ? mock_conn_write_block(c, w, off, len, items)
                 : mock_conn_write(c, base + off, len, items);
      w = NULL;
      if (rc < 0)
        return; /* the client is gone and g with it */
    }
    if (w)
      mock_conn_release_block(s, w);
    switch (st) {
    case STEP_FULL:
      continue;
    case STEP_WAIT:
      schedule(g, wake);
      return;
    case STEP_IDLE:
      return;
    case STEP_DONE:
      mock_gen_finish(g, 1, g->chunked ? MOCK_AFTER_NEXT : MOCK_AFTER_CLOSE);
      return;
    case STEP_CLOSE:
      mock_gen_finish(g, 0, MOCK_AFTER_CLOSE);
      return;
    case STEP_RESET:
      mock_gen_finish(g, 0, MOCK_AFTER_RESET);
      return;
    }
  }
  /* a long burst: let the other connections have the loop */
  uv_timer_start(&c->timer, mock_gen_on_timer, 0, 0);
}

void mock_gen_on_drain(mock_gen *g) {
  if (g->phase == PHASE_NONSTREAM || g->raw_body)
    return;  /* written whole at the start */
  if (g->blocked || g->ns_per_item == 0)
    pump(g);
}

/* ---- non-streaming ---------------------------------------------------- */

static void append_content(mock_gen *g, mock_buf *b, size_t choice) {
  uint64_t count = g->choices[choice].total - g->reasoning_count;
  for (uint64_t j = 0; j < count; j++) {
    size_t len;
    const char *tok = content_token(g, choice, j, &len);
    mock_buf_append(b, tok, len);
  }
}

static void append_message(mock_gen *g, mock_buf *b, size_t choice) {
  mock_buf_puts(b, "\"message\":{\"role\":\"assistant\",\"content\":");
  if (g->call_count) {
    mock_buf_puts(b, "null");
  } else {
    mock_buf_puts(b, "\"");
    append_content(g, b, choice);
    mock_buf_puts(b, "\"");
  }
  if (g->reasoning) {
    mock_buf_puts(b, ",\"reasoning_content\":\"");
    for (uint64_t k = 0; k < g->reasoning_count; k++) {
      size_t len;
      const char *tok = mock_token(g->reasoning, k, &len);
      mock_buf_append(b, tok, len);
    }
    mock_buf_puts(b, "\"");
  }
  if (g->call_count) {
    mock_buf_puts(b, ",\"tool_calls\":[");
    for (size_t i = 0; i < g->call_count; i++) {
      const mock_tool_call *call = &g->calls[i];
      mock_buf_printf(b, "%s{\"id\":\"call_%zu\",\"type\":\"function\",\"function\":"
                      "{\"name\":\"", i ? "," : "", i);
      mock_buf_append(b, call->name, call->name_len);
      mock_buf_puts(b, "\",\"arguments\":\"");
      for (size_t k = 0; k < call->fragments->count; k++) {
        size_t len;
        const char *tok = mock_token(call->fragments, k, &len);
        mock_buf_append(b, tok, len);
      }
      mock_buf_puts(b, "\"}}");
    }
    mock_buf_puts(b, "]");
  }
  mock_buf_puts(b, "}");
}

static void nonstream_body(mock_gen *g, mock_buf *b) {
  mock_buf_printf(b, "{\"id\":\"");
  mock_buf_reserve(b, strlen(g->rec->id) * 6);
  b->len += mock_json_escape(b->data + b->len, g->rec->id, strlen(g->rec->id));
  mock_buf_printf(b, "\",\"object\":\"%s\",\"created\":%lld,\"model\":\"",
                  g->chat ? "chat.completion" : "text_completion", (long long)g->created);
  mock_buf_append(b, g->model, g->model_len);
  mock_buf_puts(b, "\",\"choices\":[");
  for (size_t i = 0; i < g->n; i++) {
    mock_buf_printf(b, "%s{\"index\":%zu,", i ? "," : "", i);
    if (g->chat) {
      append_message(g, b, i);
    } else {
      mock_buf_puts(b, "\"text\":\"");
      append_content(g, b, i);
      mock_buf_puts(b, "\"");
    }
    mock_buf_printf(b, ",\"logprobs\":null,\"finish_reason\":\"%s\"}",
                    g->choices[i].finish_reason);
  }
  mock_buf_printf(b, "],\"usage\":{\"prompt_tokens\":%llu,\"completion_tokens\":%llu,"
                  "\"total_tokens\":%llu}}",
                  (unsigned long long)g->prompt_tokens, (unsigned long long)g->total,
                  (unsigned long long)(g->prompt_tokens + g->total));
}

/*
** The steps it takes to send p items (each step sends one item of every
** choice that has one left): the least s with sum over choices of
** min(total, s) >= p. For n = 1 that is p.
*/
static uint64_t steps_for(const mock_gen *g, uint64_t p) {
  uint64_t lo = 0, hi = 0;
  for (size_t i = 0; i < g->n; i++)
    if (g->choices[i].total > hi)
      hi = g->choices[i].total;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2, sent = 0;
    for (size_t i = 0; i < g->n; i++)
      sent += g->choices[i].total < mid ? g->choices[i].total : mid;
    if (sent >= p)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/* Where a non-streaming request stops, and how: the first fault, or the end. */
static void nonstream_plan(mock_gen *g) {
  struct { uint64_t at; int action; } faults[] = {
    {g->error_after, NONSTREAM_ERROR},   {g->error_event, NONSTREAM_ERROR},
    {g->malformed_after, NONSTREAM_MALFORMED}, {g->close_after, NONSTREAM_CLOSE},
    {g->reset_after, NONSTREAM_RESET},   {g->stall_after, NONSTREAM_STALL},
  };
  g->nonstream_at = g->total;
  g->nonstream_action = NONSTREAM_ANSWER;
  uint64_t first = MOCK_NONE;
  for (size_t i = 0; i < sizeof faults / sizeof *faults; i++)
    if (faults[i].at <= g->total && (first == MOCK_NONE || faults[i].at < first)) {
      first = faults[i].at;
      g->nonstream_at = first;
      g->nonstream_action = faults[i].action;
    }
  if (g->ping_only) {
    g->nonstream_at = 0;
    g->nonstream_action = NONSTREAM_STALL;
  }
}

static void nonstream_fire(mock_gen *g) {
  mock_conn *c = g->conn;
  mock_record *r = g->rec;
  char headers[320];
  snprintf(headers, sizeof headers, "X-Request-Id: %s\r\n", r->id);
  uint64_t now = uv_hrtime();
  int rc = 0;
  switch (g->nonstream_action) {
  case NONSTREAM_ANSWER: {
    mock_buf b;
    mock_buf_init(&b);
    nonstream_body(g, &b);
    mock_record_tokens(r, now, g->total);
    for (size_t i = 0; i < g->n && g->call_count == 0; i++)
      if (g->keyword_index < g->choices[i].total - g->reasoning_count)
        r->keyword_at = now;
    rc = mock_conn_respond(c, 200, "application/json", b.data, b.len, headers);
    mock_buf_free(&b);
    break;
  }
  case NONSTREAM_ERROR: {
    char message[80];
    snprintf(message, sizeof message, "mock error after %llu tokens",
             (unsigned long long)g->nonstream_at);
    r->status = 500;
    rc = mock_conn_respond_error(c, 500, "internal_error", message, headers);
    break;
  }
  case NONSTREAM_MALFORMED:
    rc = mock_conn_respond(c, 200, "application/json", LIT("{\"id\":\"broken\", \"choices\": ["),
                           headers);
    break;
  case NONSTREAM_CLOSE:
    mock_gen_finish(g, 0, MOCK_AFTER_CLOSE);
    return;
  case NONSTREAM_RESET:
    mock_gen_finish(g, 0, MOCK_AFTER_RESET);
    return;
  default:
    return; /* a stall: wait for the client to give up */
  }
  if (rc == 0)
    mock_gen_finish(g, 1, MOCK_AFTER_NEXT);
}

/* ---- lifecycle -------------------------------------------------------- */

void mock_gen_on_timer(uv_timer_t *t) {
  mock_conn *c = t->data;
  mock_gen *g = c->gen;
  if (g == NULL || c->closing)
    return;
  if (g->phase == PHASE_NONSTREAM)
    nonstream_fire(g);
  else
    pump(g);
}

size_t mock_gen_longest_piece(const mock_gen *g) {
  size_t longest = g->text->max_escaped;
  if (g->reasoning && g->reasoning->max_escaped > longest)
    longest = g->reasoning->max_escaped;
  for (size_t i = 0; i < g->call_count; i++) {
    if (g->calls[i].name_len > longest)
      longest = g->calls[i].name_len;
    if (g->calls[i].fragments->max_escaped > longest)
      longest = g->calls[i].fragments->max_escaped;
  }
  return longest;
}

static size_t max_item_size(const mock_gen *g) {
  size_t longest = mock_gen_longest_piece(g);
  if (g->keyword_len > longest)
    longest = g->keyword_len;
  if (g->error_message_len > longest)
    longest = g->error_message_len;
  /* head, choice and delta wrappers, a tool-call header, usage, event end */
  return g->head.len + longest + 512;
}

static void build_pieces(mock_gen *g) {
  mock_buf *h = &g->head;
  mock_buf_init(h);
  if (!g->ndjson)
    mock_buf_puts(h, "data: ");
  mock_buf_puts(h, "{\"id\":\"");
  mock_buf_reserve(h, strlen(g->rec->id) * 6);
  h->len += mock_json_escape(h->data + h->len, g->rec->id, strlen(g->rec->id));
  mock_buf_printf(h, "\",\"object\":\"%s\",\"created\":%lld,\"model\":\"",
                  g->chat ? "chat.completion.chunk" : "text_completion",
                  (long long)g->created);
  mock_buf_append(h, g->model, g->model_len);
  mock_buf_puts(h, "\",\"choices\":[");
  for (size_t i = 0; i < g->n; i++) {
    mock_buf *open = &g->choices[i].content_open;
    mock_buf_init(open);
    mock_buf_append(open, h->data, h->len);
    mock_buf_printf(open, g->chat ? "{\"index\":%zu,\"delta\":{\"content\":\""
                                  : "{\"index\":%zu,\"text\":\"", i);
  }
  mock_buf_init(&g->content_close);
  mock_buf_puts(&g->content_close, g->chat ? "\"},\"logprobs\":null,\"finish_reason\":null}]"
                                           : "\",\"logprobs\":null,\"finish_reason\":null}]");
  g->event_end = g->ndjson ? "\n" : "\n\n";
  g->event_end_len = g->ndjson ? 1 : 2;
  g->max_item = max_item_size(g);
}

void mock_gen_begin(mock_gen *g) {
  g->conn->gen = g;
  g->server->active++;
  if (g->server->standin && mock_standin_begin(g))
    return; /* every slot is busy: it starts when one is free */
  mock_gen_start(g);
}

void mock_gen_start(mock_gen *g) {
  mock_conn *c = g->conn;
  g->created = (int64_t)time(NULL);
  g->t_headers = uv_hrtime();
  g->t_first = g->t_headers + g->ttft_ns;
  g->next_ping = g->t_headers + g->ping_ns;

  g->chunked = c->parser.http_major > 1 ||
               (c->parser.http_major == 1 && c->parser.http_minor >= 1);
  if (g->raw_body) {  /* a hand-written response: as it is, then end or hold */
    mock_buf b;
    mock_buf_init(&b);
    mock_buf_printf(&b,
                    "HTTP/1.1 200 OK\r\nServer: sluice-mock\r\nContent-Type: %s\r\n"
                    "X-Request-Id: %s\r\n%sConnection: %s\r\n\r\n",
                    g->raw_type ? g->raw_type : "text/event-stream", g->rec->id,
                    g->chunked ? "Transfer-Encoding: chunked\r\n" : "",
                    g->chunked && c->keep_alive ? "keep-alive" : "close");
    if (g->raw_len && g->chunked) mock_buf_printf(&b, "%zx\r\n", g->raw_len);
    mock_buf_append(&b, g->raw_body, g->raw_len);
    if (g->raw_len && g->chunked) mock_buf_puts(&b, "\r\n");
    if (!g->hold && g->chunked) mock_buf_puts(&b, "0\r\n\r\n");
    /* recorded first: a write that fails frees g */
    mock_record_tokens(g->rec, uv_hrtime(), 1);  /* the body counts as one token */
    g->phase = PHASE_STALL;
    int rc = mock_conn_write(c, b.data, b.len, 1);
    mock_buf_free(&b);
    if (rc == 0 && !g->hold) mock_gen_finish(g, 1, g->chunked ? MOCK_AFTER_NEXT : MOCK_AFTER_CLOSE);
    return;  /* held: until the client closes */
  }
  if (!g->stream) {
    g->phase = PHASE_NONSTREAM;
    nonstream_plan(g);
    if (g->nonstream_action != NONSTREAM_STALL)
      uv_timer_start(&c->timer, mock_gen_on_timer,
                     (g->ttft_ns +
                      (uint64_t)((double)steps_for(g, g->nonstream_at) * g->ns_per_item) +
                      999999) / 1000000, 0);
    return;
  }

  build_pieces(g);
  g->phase = g->ping_only ? PHASE_PING_ONLY : PHASE_ITEMS;
  char headers[512];
  int n = snprintf(headers, sizeof headers,
                   "HTTP/1.1 200 OK\r\nServer: sluice-mock\r\nContent-Type: %s\r\n"
                   "Cache-Control: no-cache\r\nX-Request-Id: %s\r\n%sConnection: %s\r\n\r\n",
                   g->ndjson ? "application/x-ndjson" : "text/event-stream", g->rec->id,
                   g->chunked ? "Transfer-Encoding: chunked\r\n" : "",
                   g->chunked && c->keep_alive ? "keep-alive" : "close");
  if (mock_conn_write(c, headers, (size_t)n, 0) < 0)
    return;
  pump(g);
}

/*
** How a real server's engine files the end of a generation (vLLM's
** finished_reason): a generation that ran to its finish chunks (or its whole
** answer) by its first choice's reason, "length" or else "stop"; one the
** client left, or a fault cut short, "abort".
*/
static int gen_outcome(const mock_gen *g) {
  int finished;
  if (g->rec->client_closed || !g->rec->completed)
    return MOCK_OUTCOME_ABORT;
  if (g->raw_body)
    return MOCK_OUTCOME_STOP; /* a hand-written response, as it was meant */
  if (g->phase == PHASE_NONSTREAM)
    finished = g->nonstream_action == NONSTREAM_ANSWER;
  else
    finished = g->finished == g->n;
  if (!finished)
    return MOCK_OUTCOME_ABORT;
  return strcmp(g->choices[0].finish_reason, "length") == 0 ? MOCK_OUTCOME_LENGTH : MOCK_OUTCOME_STOP;
}

/* Frees g; when it is the connection's running generation, stops it. (A
   generation read only to check options has no connection.) */
void mock_gen_free(mock_gen *g) {
  mock_conn *c = g->conn;
  if (c && c->gen == g) {
    c->gen = NULL;
    g->server->active--;
    uv_timer_stop(&c->timer);
    if (g->standin)
      mock_standin_end(g, gen_outcome(g));
  }
  mock_tokens_free(g->own_text);
  mock_tokens_free(g->reasoning);
  for (size_t i = 0; i < g->call_count; i++) {
    free(g->calls[i].name);
    mock_tokens_free(g->calls[i].fragments);
  }
  free(g->calls);
  free(g->keyword);
  free(g->location);
  free(g->raw_body);
  free(g->raw_type);
  free(g->retry_text);
  free(g->error_body);
  free(g->error_message);
  free(g->model);
  mock_buf_free(&g->head);
  for (size_t i = 0; g->choices && i < g->n; i++)
    mock_buf_free(&g->choices[i].content_open);
  free(g->choices);
  mock_buf_free(&g->content_close);
  mock_record_unref(g->rec);
  free(g);
}

/* The generation has handed over all it will; the connection goes on (or not). */
void mock_gen_finish(mock_gen *g, int completed, mock_after how) {
  mock_conn *c = g->conn;
  g->rec->completed = completed;
  mock_request_log(g->server, g->rec);
  mock_gen_free(g);
  mock_conn_response_done(c, how);
}
