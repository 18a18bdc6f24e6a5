/*
** A generation request: the body's OpenAI fields and the "mock" overrides
** (body field or X-Mock header, the header winning per key) become a
** mock_gen, or an error answer. Every request gets a stats record.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"

#define MAX_KEYWORD 1024
#define MAX_NAME 256
#define MAX_NONSTREAM_ITEMS 1000000

typedef struct options {
  const mock_json *header, *body;   /* the two "mock" objects, either may be NULL */
  char *err;
  size_t err_size;
} options;

const char *mock_error_type(int status) {
  switch (status) {
  case 400: case 422: return "invalid_request_error";
  case 401: return "authentication_error";
  case 403: return "permission_error";
  case 404: return "not_found_error";
  case 408: return "timeout_error";
  case 409: return "conflict_error";
  case 413: return "request_too_large";
  case 429: return "rate_limit_error";
  case 500: return "internal_error";
  case 503: return "service_unavailable_error";
  default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

void mock_request_log(mock_server *s, const mock_record *r) {
  if (s->config.quiet)
    return;
  fprintf(stderr, "INFO %s %s conn=%llu status=%d stream=%s tokens=%llu %s\n", r->id,
          r->path, (unsigned long long)r->conn, r->status, r->stream ? "true" : "false",
          (unsigned long long)r->tokens_sent, r->completed ? "completed" : "ended early");
}

/* ---- reading options -------------------------------------------------- */

static const mock_json *opt(const options *o, const char *key) {
  const mock_json *v = mock_json_get(o->header, key);
  if (v == NULL || v->type == MOCK_JSON_NULL)
    v = mock_json_get(o->body, key);
  return v && v->type != MOCK_JSON_NULL ? v : NULL;
}

static int bad(const options *o, const char *key, const char *what) {
  snprintf(o->err, o->err_size, "mock.%s must be %s", key, what);
  return -1;
}

/* A non-negative integer option; MOCK_NONE when absent. */
static int opt_count(const options *o, const char *key, uint64_t *out) {
  const mock_json *v = opt(o, key);
  *out = MOCK_NONE;
  if (v == NULL)
    return 0;
  if (v->type != MOCK_JSON_NUMBER || !(v->number >= 0) || v->number > 9007199254740992.0 ||
      floor(v->number) != v->number)
    return bad(o, key, "a non-negative integer");
  *out = (uint64_t)v->number;
  return 0;
}

static int opt_number(const options *o, const char *key, double *out, double dflt) {
  const mock_json *v = opt(o, key);
  *out = dflt;
  if (v == NULL)
    return 0;
  if (v->type != MOCK_JSON_NUMBER || !(v->number >= 0) || !isfinite(v->number))
    return bad(o, key, "a non-negative number");
  *out = v->number;
  return 0;
}

static int opt_bool(const options *o, const char *key, int *out) {
  const mock_json *v = opt(o, key);
  *out = 0;
  if (v == NULL)
    return 0;
  if (v->type != MOCK_JSON_TRUE && v->type != MOCK_JSON_FALSE)
    return bad(o, key, "true or false");
  *out = v->type == MOCK_JSON_TRUE;
  return 0;
}

static int opt_string(const options *o, const char *key, const mock_json **out) {
  const mock_json *v = opt(o, key);
  *out = NULL;
  if (v == NULL)
    return 0;
  if (v->type != MOCK_JSON_STRING)
    return bad(o, key, "a string");
  *out = v;
  return 0;
}

static char *escape(const char *s, size_t len, size_t *out_len) {
  char *e = mock_xmalloc(len * 6 + 1);
  *out_len = mock_json_escape(e, s, len);
  e[*out_len] = '\0';
  return e;
}

static uint64_t prompt_words(const mock_json *root, int chat) {
  uint64_t n = 0;
  if (chat) {
    const mock_json *messages = mock_json_get(root, "messages");
    if (messages == NULL || messages->type != MOCK_JSON_ARRAY)
      return 0;
    for (const mock_json *m = messages->child; m; m = m->next) {
      const mock_json *content = mock_json_get(m, "content");
      if (content && content->type == MOCK_JSON_STRING)
        n += mock_count_words(content->string, content->length);
      else if (content && content->type == MOCK_JSON_ARRAY)
        for (const mock_json *part = content->child; part; part = part->next) {
          const mock_json *text = mock_json_get(part, "text");
          if (text && text->type == MOCK_JSON_STRING)
            n += mock_count_words(text->string, text->length);
        }
    }
    return n;
  }
  const mock_json *prompt = mock_json_get(root, "prompt");
  if (prompt && prompt->type == MOCK_JSON_STRING)
    return mock_count_words(prompt->string, prompt->length);
  if (prompt && prompt->type == MOCK_JSON_ARRAY)
    for (const mock_json *p = prompt->child; p; p = p->next) {
      if (p->type == MOCK_JSON_STRING)
        n += mock_count_words(p->string, p->length);
      else if (p->type == MOCK_JSON_NUMBER)
        n++; /* a prompt of token ids */
      else if (p->type == MOCK_JSON_ARRAY)
        n += p->count;
    }
  return n;
}

static int read_tool_calls(const options *o, mock_gen *g) {
  const mock_json *calls = opt(o, "tool_calls");
  if (calls == NULL)
    return 0;
  if (calls->type != MOCK_JSON_ARRAY)
    return bad(o, "tool_calls", "an array of {\"name\":..., \"arguments\":...}");
  g->calls = mock_xcalloc(calls->count, sizeof *g->calls);
  uint64_t item = 0;
  for (const mock_json *c = calls->child; c; c = c->next) {
    const mock_json *name = mock_json_get(c, "name");
    const mock_json *args = mock_json_get(c, "arguments");
    if (c->type != MOCK_JSON_OBJECT || name == NULL || name->type != MOCK_JSON_STRING ||
        name->length > MAX_NAME || (args && args->type != MOCK_JSON_STRING))
      return bad(o, "tool_calls", "an array of {\"name\": string, \"arguments\": string}");
    mock_tool_call *call = &g->calls[g->call_count++];
    call->name = escape(name->string, name->length, &call->name_len);
    call->fragments = args ? mock_tokens_fragments(args->string, args->length, 5)
                           : mock_tokens_fragments("", 0, 5);
    call->first_item = item;
    item += 1 + call->fragments->count;
  }
  g->content_count = item;
  return 0;
}

/* The "mock" options. Returns -1 with a message in o->err. */
static int read_mock(const options *o, mock_gen *g, const mock_config *cfg) {
  double tps, ttft, ping_interval, status;
  const mock_json *text, *keyword, *reasoning, *error_body, *error_message;
  uint64_t keyword_at;
  if (opt_number(o, "tokens_per_sec", &tps, cfg->tokens_per_sec) < 0 ||
      opt_number(o, "ttft", &ttft, cfg->ttft) < 0 ||
      opt_number(o, "ping_interval", &ping_interval, 0) < 0 ||
      opt_number(o, "retry_after", &g->retry_after, -1) < 0 ||
      opt_number(o, "status", &status, 0) < 0 ||
      opt_string(o, "text", &text) < 0 || opt_string(o, "keyword", &keyword) < 0 ||
      opt_string(o, "reasoning", &reasoning) < 0 ||
      opt_string(o, "error_body", &error_body) < 0 ||
      opt_string(o, "error_message", &error_message) < 0 ||
      opt_count(o, "keyword_at", &keyword_at) < 0 ||
      opt_count(o, "error_after", &g->error_after) < 0 ||
      opt_count(o, "error_event", &g->error_event) < 0 ||
      opt_count(o, "malformed_after", &g->malformed_after) < 0 ||
      opt_count(o, "reset_after", &g->reset_after) < 0 ||
      opt_count(o, "close_after", &g->close_after) < 0 ||
      opt_count(o, "stall_after", &g->stall_after) < 0 ||
      opt_bool(o, "ping_only", &g->ping_only) < 0 ||
      opt_bool(o, "no_done", &g->no_done) < 0 ||
      opt_bool(o, "no_finish", &g->no_finish) < 0 ||
      opt_bool(o, "ndjson", &g->ndjson) < 0)
    return -1;
  if (status != 0 && (status != floor(status) || status < 200 || status > 599 ||
                      status == 204 || status == 304))
    return bad(o, "status", "an HTTP status from 200 to 599 (not 204 or 304)");
  g->status = status == 200 ? 0 : (int)status;
  g->ns_per_item = tps > 0 ? 1e9 / tps : 0;
  g->ttft_ns = (uint64_t)(ttft * 1e9);
  if (ping_interval > 0 && ping_interval < 0.001)
    ping_interval = 0.001;
  if (g->ping_only && ping_interval == 0)
    ping_interval = 0.1;
  g->ping_ns = (uint64_t)(ping_interval * 1e9);
  if (error_body)
    g->error_body = mock_xstrndup(error_body->string, error_body->length);
  if (error_message) {
    if (error_message->length > MAX_KEYWORD)
      return bad(o, "error_message", "at most 1024 bytes");
    g->error_message = escape(error_message->string, error_message->length,
                              &g->error_message_len);
  }
  if (keyword) {
    if (keyword->length > MAX_KEYWORD)
      return bad(o, "keyword", "at most 1024 bytes");
    if (keyword_at == MOCK_NONE)
      return bad(o, "keyword_at", "set with mock.keyword");
    g->keyword = escape(keyword->string, keyword->length, &g->keyword_len);
  }
  g->keyword_index = keyword_at;
  if (text)
    g->own_text = mock_tokens_split(text->string, text->length);
  if (reasoning && g->chat) {
    g->reasoning = mock_tokens_split(reasoning->string, reasoning->length);
    g->reasoning_count = g->reasoning->count;
  }
  if (g->chat && read_tool_calls(o, g) < 0)
    return -1;
  unsigned *f = &g->rec->faults;
  if (g->status) *f |= MOCK_FAULT_STATUS;
  if (g->error_after != MOCK_NONE) *f |= MOCK_FAULT_ERROR_AFTER;
  if (g->error_event != MOCK_NONE) *f |= MOCK_FAULT_ERROR_EVENT;
  if (g->malformed_after != MOCK_NONE) *f |= MOCK_FAULT_MALFORMED_AFTER;
  if (g->reset_after != MOCK_NONE) *f |= MOCK_FAULT_RESET_AFTER;
  if (g->close_after != MOCK_NONE) *f |= MOCK_FAULT_CLOSE_AFTER;
  if (g->stall_after != MOCK_NONE) *f |= MOCK_FAULT_STALL_AFTER;
  if (g->ping_only) *f |= MOCK_FAULT_PING_ONLY;
  if (g->no_done) *f |= MOCK_FAULT_NO_DONE;
  if (g->no_finish) *f |= MOCK_FAULT_NO_FINISH;
  return 0;
}

static int parse_object(const char *what, const char *data, size_t len,
                        mock_json_doc **doc, const mock_json **out, char *err,
                        size_t err_size) {
  char why[96];
  mock_json *root = mock_json_parse(data, len, doc, why, sizeof why);
  if (root == NULL) {
    snprintf(err, err_size, "%s is not valid JSON: %s", what, why);
    return -1;
  }
  if (root->type != MOCK_JSON_OBJECT) {
    snprintf(err, err_size, "%s must be a JSON object", what);
    return -1;
  }
  *out = root;
  return 0;
}

/* Fills g from the request; returns 0, or -1 with err set (a 400). */
static int read_request(mock_conn *c, mock_gen *g, char *err, size_t err_size) {
  const mock_config *cfg = &c->server->config;
  mock_json_doc *body_doc = NULL, *header_doc = NULL;
  const mock_json *root = NULL, *header = NULL;
  options o = {NULL, NULL, err, err_size};
  int rc = -1;

  if (parse_object("the request body", c->body.data ? c->body.data : "", c->body.len,
                   &body_doc, &root, err, err_size) < 0)
    goto out;
  if (c->xmock.len > 0 && parse_object("the X-Mock header", c->xmock.data, c->xmock.len,
                                       &header_doc, &header, err, err_size) < 0)
    goto out;
  o.header = header;
  o.body = mock_json_get(root, "mock");
  if (o.body && o.body->type != MOCK_JSON_OBJECT) {
    snprintf(err, err_size, "mock must be a JSON object");
    goto out;
  }

  g->stream = mock_json_is_true(mock_json_get(root, "stream"));
  g->rec->stream = g->stream;
  const mock_json *stream_options = mock_json_get(root, "stream_options");
  g->include_usage = mock_json_is_true(mock_json_get(stream_options, "include_usage"));
  g->continuous_usage =
      mock_json_is_true(mock_json_get(stream_options, "continuous_usage_stats"));
  g->prompt_tokens = prompt_words(root, g->chat);

  const mock_json *model = mock_json_get(root, "model");
  if (model && model->type == MOCK_JSON_STRING && model->length > 0 &&
      model->length <= MAX_NAME)
    g->model = escape(model->string, model->length, &g->model_len);
  else
    g->model = escape(cfg->model, strlen(cfg->model), &g->model_len);

  const mock_json *max = mock_json_get(root, "max_tokens");
  if ((max == NULL || max->type == MOCK_JSON_NULL) && g->chat)
    max = mock_json_get(root, "max_completion_tokens");
  int explicit_max = max != NULL && max->type != MOCK_JSON_NULL;
  uint64_t max_tokens = cfg->max_tokens;
  if (explicit_max) {
    if (max->type != MOCK_JSON_NUMBER || !(max->number >= 0) ||
        max->number > 1e15 || floor(max->number) != max->number) {
      snprintf(err, err_size, "max_tokens must be a non-negative integer");
      goto out;
    }
    max_tokens = (uint64_t)max->number;
  }
  g->rec->max_tokens = max_tokens;

  if (read_mock(&o, g, cfg) < 0)
    goto out;

  g->text = g->own_text ? g->own_text : c->server->tokens;
  if (g->call_count > 0) {
    g->finish_reason = "tool_calls";
  } else if (g->own_text) {
    g->content_count = g->own_text->count < max_tokens ? g->own_text->count : max_tokens;
    g->finish_reason = g->own_text->count > max_tokens ? "length" : "stop";
  } else {
    g->content_count = max_tokens;
    g->finish_reason = explicit_max ? "length" : "stop";
  }
  g->total = g->reasoning_count + g->content_count;
  if (!g->stream && g->total > MAX_NONSTREAM_ITEMS) {
    snprintf(err, err_size, "max_tokens above %d needs \"stream\": true", MAX_NONSTREAM_ITEMS);
    goto out;
  }
  rc = 0;
out:
  mock_json_free(body_doc);
  mock_json_free(header_doc);
  return rc;
}

/* ---- starting --------------------------------------------------------- */

static void answer(mock_conn *c, mock_gen *g, int status, const char *type,
                   const char *message, const char *body) {
  char headers[400];
  int n = snprintf(headers, sizeof headers, "X-Request-Id: %s\r\n", g->rec->id);
  if (g->retry_after >= 0 && n > 0 && (size_t)n < sizeof headers)
    snprintf(headers + n, sizeof headers - (size_t)n, "Retry-After: %.0f\r\n",
             ceil(g->retry_after));
  if (body)
    mock_conn_respond(c, status, "application/json", body, strlen(body), headers);
  else
    mock_conn_respond_error(c, status, type, message, headers);
  g->rec->status = status;
  g->rec->completed = !c->closing;
  mock_request_log(c->server, g->rec);
  mock_gen_free(g);
}

void mock_request_start(mock_conn *c, int chat) {
  mock_server *s = c->server;
  uint64_t now = uv_hrtime();
  char id[MAX_NAME + 32];
  s->request_counter++;
  if (c->request_id.len > 0) {
    size_t n = c->request_id.len < MAX_NAME ? c->request_id.len : MAX_NAME;
    for (size_t i = 0; i < n; i++) {
      unsigned char ch = (unsigned char)c->request_id.data[i];
      id[i] = ch < 0x20 || ch == 0x7f ? '_' : (char)ch;
    }
    id[n] = '\0';
  } else {
    snprintf(id, sizeof id, "%s-%llu", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)s->request_counter);
  }

  mock_gen *g = mock_xcalloc(1, sizeof *g);
  g->conn = c;
  g->server = s;
  g->chat = chat;
  g->serial = ++s->gen_counter;
  g->retry_after = -1;
  g->keyword_index = g->error_after = g->error_event = g->malformed_after =
      g->reset_after = g->close_after = g->stall_after = MOCK_NONE;
  g->rec = mock_stats_add(&s->stats, id, chat ? "/v1/chat/completions" : "/v1/completions");
  g->rec->conn = c->number;
  g->rec->started_at = now;

  char err[256];
  if (read_request(c, g, err, sizeof err) < 0) {
    answer(c, g, 400, "invalid_request_error", err, NULL);
    return;
  }
  if (g->status) {
    char message[64];
    snprintf(message, sizeof message, "mock error %d", g->status);
    answer(c, g, g->status, mock_error_type(g->status), message, g->error_body);
    return;
  }
  g->rec->status = 200;
  mock_gen_begin(g);
}
