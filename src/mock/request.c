/*
** A generation request: the body's OpenAI fields and the "mock" overrides
** (X-Mock header, body field, then the reply of the --replies rule the chat
** request matched, the first to name a key winning) become a mock_gen, or an
** error answer. Every request gets a stats record. Bodies and the header are
** read with jansson.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mock.h"

#define MAX_KEYWORD 1024
#define MAX_NAME 256
#define MAX_NONSTREAM_ITEMS 1000000
#define MAX_NONSTREAM_BYTES (64.0 * 1024 * 1024)
#define MAX_SECONDS 1e6           /* ttft and ping_interval, as --ttft */
#define MAX_NS_PER_ITEM 1e12      /* a token per 1000 s is as good as a stall */
#define MAX_RETRY_AFTER 1e9

typedef struct options {
  const json_t *header, *body, *rule; /* the "mock" objects, by precedence; any may be NULL */
  json_t *fault_counts;             /* where fail_first counts; NULL: a check, no counting */
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
  char rule[MOCK_MAX_RULE_NAME + 16] = "";
  if (r->rule_name)
    snprintf(rule, sizeof rule, " rule=%s", r->rule_name);
  else if (r->rule >= 0)
    snprintf(rule, sizeof rule, " rule=%d", r->rule);
  fprintf(stderr, "INFO %s %s conn=%llu status=%d stream=%s tokens=%llu %s%s\n", r->id,
          r->path, (unsigned long long)r->conn, r->status, r->stream ? "true" : "false",
          (unsigned long long)r->tokens_sent, r->completed ? "completed" : "ended early", rule);
}

/* ---- reading options -------------------------------------------------- */

/* A member of an object, NULL when absent, null, or not an object at all. */
static const json_t *get(const json_t *object, const char *key) {
  const json_t *v = json_is_object(object) ? json_object_get(object, key) : NULL;
  return json_is_null(v) ? NULL : v;
}

static const json_t *opt(const options *o, const char *key) {
  const json_t *v = get(o->header, key);
  if (v == NULL)
    v = get(o->body, key);
  return v ? v : get(o->rule, key);
}

static int bad(const options *o, const char *key, const char *what) {
  snprintf(o->err, o->err_size, "mock.%s must be %s", key, what);
  return -1;
}

/* A non-negative integer option; MOCK_NONE when absent. */
static int opt_count(const options *o, const char *key, uint64_t *out) {
  const json_t *v = opt(o, key);
  *out = MOCK_NONE;
  if (v == NULL)
    return 0;
  double x = json_number_value(v);
  if (!json_is_number(v) || !(x >= 0) || x > 9007199254740992.0 || floor(x) != x)
    return bad(o, key, "a non-negative integer");
  *out = (uint64_t)x;
  return 0;
}

static int opt_number(const options *o, const char *key, double *out, double dflt) {
  const json_t *v = opt(o, key);
  *out = dflt;
  if (v == NULL)
    return 0;
  double x = json_number_value(v);
  if (!json_is_number(v) || !(x >= 0) || !isfinite(x))
    return bad(o, key, "a non-negative number");
  *out = x;
  return 0;
}

static int opt_bool(const options *o, const char *key, int *out) {
  const json_t *v = opt(o, key);
  *out = 0;
  if (v == NULL)
    return 0;
  if (!json_is_boolean(v))
    return bad(o, key, "true or false");
  *out = json_is_true(v);
  return 0;
}

static int opt_string(const options *o, const char *key, const json_t **out) {
  const json_t *v = opt(o, key);
  *out = NULL;
  if (v == NULL)
    return 0;
  if (!json_is_string(v))
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

static uint64_t words(const json_t *string) {
  return mock_count_words(json_string_value(string), json_string_length(string));
}

static uint64_t prompt_words(const json_t *root, int chat) {
  uint64_t n = 0;
  size_t i, k;
  const json_t *item, *part;
  if (chat) {
    const json_t *messages = get(root, "messages");
    json_array_foreach(messages, i, item) {
      const json_t *content = get(item, "content");
      if (json_is_string(content))
        n += words(content);
      else
        json_array_foreach(content, k, part) {
          const json_t *text = get(part, "text");
          if (json_is_string(text))
            n += words(text);
        }
    }
    return n;
  }
  const json_t *prompt = get(root, "prompt");
  if (json_is_string(prompt))
    return words(prompt);
  json_array_foreach(prompt, i, item) {
    if (json_is_string(item))
      n += words(item);
    else if (json_is_number(item))
      n++; /* a prompt of token ids */
    else if (json_is_array(item))
      n += json_array_size(item);
  }
  return n;
}

static int read_tool_calls(const options *o, mock_gen *g) {
  const json_t *calls = opt(o, "tool_calls");
  if (calls == NULL)
    return 0;
  if (!json_is_array(calls))
    return bad(o, "tool_calls", "an array of {\"name\":..., \"arguments\":...}");
  g->calls = mock_xcalloc(json_array_size(calls), sizeof *g->calls);
  uint64_t item = 0;
  size_t i;
  const json_t *c;
  json_array_foreach(calls, i, c) {
    const json_t *name = get(c, "name");
    /* "arguments": null is a mistake, not "no arguments" */
    const json_t *args = json_is_object(c) ? json_object_get(c, "arguments") : NULL;
    if (!json_is_string(name) || json_string_length(name) > MAX_NAME ||
        (args && !json_is_string(args)))
      return bad(o, "tool_calls", "an array of {\"name\": string, \"arguments\": string}");
    mock_tool_call *call = &g->calls[g->call_count++];
    call->name = escape(json_string_value(name), json_string_length(name), &call->name_len);
    call->fragments = args ? mock_tokens_fragments(json_string_value(args),
                                                   json_string_length(args), 5)
                           : mock_tokens_fragments("", 0, 5);
    call->first_item = item;
    item += 1 + call->fragments->count;
  }
  g->call_items = item;
  return 0;
}

/* mock.fail_first = N with mock.key = "K": the first N requests that carry
   key K get the faults asked for; the ones after are served plainly (a
   client's retry succeeds). The server counts per key. Returns -1 on misuse,
   1 when the faults are off for this request, else 0. */
static int fail_first(const options *o, mock_gen *g) {
  uint64_t first;
  const json_t *key;
  json_t *counts = o->fault_counts;
  json_int_t served;
  if (opt_count(o, "fail_first", &first) < 0 || opt_string(o, "key", &key) < 0) return -1;
  if (first == MOCK_NONE) return 0;
  if (!key) return bad(o, "fail_first", "used with mock.key, a string");
  if (!counts) return 0;
  served = json_integer_value(json_object_get(counts, json_string_value(key)));
  json_object_set_new(counts, json_string_value(key), json_integer(served + 1));
  if ((uint64_t)served < first) return 0;
  g->status = 0;  /* every fault off: the request is served as asked */
  g->error_after = g->error_event = g->malformed_after = g->reset_after = g->close_after =
      g->stall_after = MOCK_NONE;
  g->ping_only = g->no_done = g->no_finish = 0;
  return 1;
}

/* The "mock" options. Returns -1 with a message in o->err. */
static int read_mock(const options *o, mock_gen *g, const mock_config *cfg) {
  double tps, ttft, ping_interval, status;
  const json_t *text, *keyword, *reasoning, *error_body, *error_message, *location, *raw_body,
      *content_type, *retry_date;
  uint64_t keyword_at;
  if (opt_number(o, "tokens_per_sec", &tps, cfg->tokens_per_sec) < 0 ||
      opt_number(o, "ttft", &ttft, cfg->ttft) < 0 ||
      opt_number(o, "ping_interval", &ping_interval, 0) < 0 ||
      opt_number(o, "status", &status, 0) < 0 ||
      opt_string(o, "text", &text) < 0 || opt_string(o, "keyword", &keyword) < 0 ||
      opt_string(o, "reasoning", &reasoning) < 0 ||
      opt_string(o, "error_body", &error_body) < 0 ||
      opt_string(o, "error_message", &error_message) < 0 ||
      opt_string(o, "location", &location) < 0 ||
      opt_string(o, "raw_body", &raw_body) < 0 || opt_string(o, "content_type", &content_type) < 0 ||
      opt_bool(o, "hold", &g->hold) < 0 ||
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
  /* Times become uint64_t nanoseconds: a double past 2^64 would not fit. */
  if (ttft > MAX_SECONDS)
    return bad(o, "ttft", "a number of seconds from 0 to 1e6");
  if (ping_interval > MAX_SECONDS)
    return bad(o, "ping_interval", "a number of seconds from 0 to 1e6");
  g->status = status == 200 ? 0 : (int)status;
  if (fail_first(o, g) < 0) return -1;
  g->ns_per_item = tps > 0 ? 1e9 / tps : 0;
  if (g->ns_per_item > MAX_NS_PER_ITEM)
    g->ns_per_item = MAX_NS_PER_ITEM;
  g->ttft_ns = (uint64_t)(ttft * 1e9);
  if (ping_interval > 0 && ping_interval < 0.001)
    ping_interval = 0.001;
  if (g->ping_only && ping_interval == 0)
    ping_interval = 0.1;
  g->ping_ns = (uint64_t)(ping_interval * 1e9);
  if (error_body)
    g->error_body = mock_xstrndup(json_string_value(error_body),
                                  json_string_length(error_body));
  retry_date = opt(o, "retry_after");
  if (retry_date && json_is_string(retry_date)) {  /* an HTTP-date, sent as it is */
    const char *v = json_string_value(retry_date);
    size_t len = json_string_length(retry_date);
    if (len > 64 || strcspn(v, "\r\n") != len) return bad(o, "retry_after", "seconds or an HTTP-date");
    g->retry_text = mock_xstrndup(v, len);
  } else if (opt_number(o, "retry_after", &g->retry_after, -1) < 0) {
    return -1;
  } else if (g->retry_after > MAX_RETRY_AFTER) {  /* its digits must fit the headers */
    return bad(o, "retry_after", "seconds (at most 1e9) or an HTTP-date");
  }
  if (raw_body) {
    g->raw_len = json_string_length(raw_body);
    g->raw_body = mock_xstrndup(json_string_value(raw_body), g->raw_len);
  }
  if (content_type) {
    const char *v = json_string_value(content_type);
    size_t len = json_string_length(content_type);
    if (len > 256 || strcspn(v, "\r\n") != len)
      return bad(o, "content_type", "at most 256 bytes without CR or LF");
    g->raw_type = mock_xstrndup(v, len);
  }
  if (g->hold && !g->raw_body) return bad(o, "hold", "used with raw_body only");
  if (location) {
    const char *v = json_string_value(location);
    size_t len = json_string_length(location);
    if (len > 1024 || strcspn(v, "\r\n") != len)
      return bad(o, "location", "a URL of at most 1024 bytes without CR or LF");
    g->location = mock_xstrndup(v, len);
  }
  if (error_message) {
    if (json_string_length(error_message) > MAX_KEYWORD)
      return bad(o, "error_message", "at most 1024 bytes");
    g->error_message = escape(json_string_value(error_message),
                              json_string_length(error_message), &g->error_message_len);
  }
  if (keyword) {
    if (json_string_length(keyword) > MAX_KEYWORD)
      return bad(o, "keyword", "at most 1024 bytes");
    if (keyword_at == MOCK_NONE)
      return bad(o, "keyword_at", "set with mock.keyword");
    g->keyword = escape(json_string_value(keyword), json_string_length(keyword),
                        &g->keyword_len);
  }
  g->keyword_index = keyword_at;
  if (text)
    g->own_text = mock_tokens_split(json_string_value(text), json_string_length(text));
  if (reasoning && g->chat) {
    g->reasoning = mock_tokens_split(json_string_value(reasoning),
                                     json_string_length(reasoning));
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

/*
** The choices' lengths and finish reasons. A choice is cut by max_tokens
** ("length"); it ends on its own ("stop") at the end of mock.text, at its
** mock.choice_tokens entry, or, with neither and no max_tokens in the request,
** at the --max-tokens default. Returns -1 with a message in o->err.
*/
static int read_choices(const options *o, mock_gen *g, uint64_t max_tokens,
                        int explicit_max) {
  const json_t *lengths = opt(o, "choice_tokens");
  if (lengths && (!json_is_array(lengths) || json_array_size(lengths) != g->n))
    return bad(o, "choice_tokens", "an array of n non-negative integers, one per choice");
  if (lengths && g->call_count)
    return bad(o, "choice_tokens", "left out with mock.tool_calls");
  g->choices = mock_xcalloc(g->n, sizeof *g->choices);
  for (size_t i = 0; i < g->n; i++) {
    mock_choice *ch = &g->choices[i];
    uint64_t content;
    if (g->call_count > 0) {
      content = g->call_items;
      ch->finish_reason = "tool_calls";
    } else if (lengths) {
      const json_t *v = json_array_get(lengths, i);
      double x = json_number_value(v);
      if (!json_is_number(v) || !(x >= 0) || x > 1e15 || floor(x) != x)
        return bad(o, "choice_tokens", "an array of n non-negative integers, one per choice");
      uint64_t want = (uint64_t)x;
      content = want < max_tokens ? want : max_tokens;
      ch->finish_reason = want > max_tokens ? "length" : "stop";
    } else if (g->own_text) {
      content = g->own_text->count < max_tokens ? g->own_text->count : max_tokens;
      ch->finish_reason = g->own_text->count > max_tokens ? "length" : "stop";
    } else {
      content = max_tokens;
      ch->finish_reason = explicit_max ? "length" : "stop";
    }
    ch->total = g->reasoning_count + content;
    g->total += ch->total;
  }
  return 0;
}

/*
** Parses len bytes as a JSON object. Every value is accepted at first (so a
** number or a string is "not an object", not "not JSON"); numbers are read as
** doubles, and a \u0000 in a string is allowed. Returns the new reference or
** NULL with err set.
*/
static json_t *parse_object(const char *what, const char *data, size_t len, char *err,
                            size_t err_size) {
  json_error_t why;
  json_t *root = json_loadb(data, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL |
                                           JSON_ALLOW_NUL, &why);
  if (root == NULL) {
    snprintf(err, err_size, "%s is not valid JSON: %s", what, why.text);
    return NULL;
  }
  if (!json_is_object(root)) {
    snprintf(err, err_size, "%s must be a JSON object", what);
    json_decref(root);
    return NULL;
  }
  return root;
}

/* The most a non-streamed answer's body can take: every item as long as the
   longest escaped token it may be (a token of 64 control bytes escapes to
   384), the keyword and the wrapping once per choice. */
static double nonstream_bytes(const mock_gen *g) {
  return (double)g->total * (double)mock_gen_longest_piece(g) +
         (double)g->n * (double)(g->keyword_len + 512);
}

/* Fills g from the request; returns 0, or -1 with err set (a 400). */
static int read_request(mock_conn *c, mock_gen *g, char *err, size_t err_size) {
  const mock_config *cfg = &c->server->config;
  json_t *root = NULL, *header = NULL, *reply = NULL;
  options o = {NULL, NULL, NULL, c->server->fault_counts, err, err_size};
  int rc = -1;

  root = parse_object("the request body", c->body.data ? c->body.data : "", c->body.len,
                      err, err_size);
  if (root == NULL)
    goto out;
  if (c->xmock.len > 0 &&
      (header = parse_object("the X-Mock header", c->xmock.data, c->xmock.len, err,
                             err_size)) == NULL)
    goto out;
  o.header = header;
  o.body = json_object_get(root, "mock");
  if (o.body && !json_is_object(o.body)) {
    snprintf(err, err_size, "mock must be a JSON object");
    goto out;
  }
  if (g->chat && c->server->replies) {
    g->rec->rule = mock_replies_match(c->server->replies, root, &reply, &g->rec->rule_name);
    o.rule = reply;
  }

  g->stream = json_is_true(get(root, "stream"));
  g->rec->stream = g->stream;
  const json_t *stream_options = get(root, "stream_options");
  g->include_usage = json_is_true(get(stream_options, "include_usage"));
  g->continuous_usage = json_is_true(get(stream_options, "continuous_usage_stats"));
  g->prompt_tokens = prompt_words(root, g->chat);

  const json_t *model = get(root, "model");
  size_t model_len = json_string_length(model);
  if (json_is_string(model) && model_len > 0 && model_len <= MAX_NAME)
    g->model = escape(json_string_value(model), model_len, &g->model_len);
  else
    g->model = escape(cfg->model, strlen(cfg->model), &g->model_len);

  const json_t *max = get(root, "max_tokens");
  if (max == NULL && g->chat)
    max = get(root, "max_completion_tokens");
  int explicit_max = max != NULL;
  uint64_t max_tokens = cfg->max_tokens;
  if (explicit_max) {
    double x = json_number_value(max);
    if (!json_is_number(max) || !(x >= 0) || x > 1e15 || floor(x) != x) {
      snprintf(err, err_size, "max_tokens must be a non-negative integer");
      goto out;
    }
    max_tokens = (uint64_t)x;
  }
  g->rec->max_tokens = max_tokens;

  const json_t *n = get(root, "n");
  g->n = 1;
  if (n) {
    double x = json_number_value(n);
    if (!json_is_number(n) || floor(x) != x || !(x >= 1 && x <= MOCK_MAX_CHOICES)) {
      snprintf(err, err_size, "n must be an integer from 1 to %d", MOCK_MAX_CHOICES);
      goto out;
    }
    g->n = (size_t)x;
  }

  if (read_mock(&o, g, cfg) < 0 || read_choices(&o, g, max_tokens, explicit_max) < 0)
    goto out;
  g->text = g->own_text ? g->own_text : c->server->tokens;
  if (!g->stream && g->total > MAX_NONSTREAM_ITEMS) {
    snprintf(err, err_size, g->n == 1 ? "max_tokens above %d needs \"stream\": true"
                                      : "more than %d tokens over all choices need \"stream\": true",
             MAX_NONSTREAM_ITEMS);
    goto out;
  }
  if (!g->stream && nonstream_bytes(g) > MAX_NONSTREAM_BYTES) {
    snprintf(err, err_size, "an answer this long (over 64 MiB) needs \"stream\": true");
    goto out;
  }
  rc = 0;
out:
  json_decref(root);
  json_decref(header);
  json_decref(reply);
  return rc;
}

/* Unset positions and times, before the options are read. */
static void gen_defaults(mock_gen *g) {
  g->retry_after = -1;
  g->keyword_index = g->error_after = g->error_event = g->malformed_after =
      g->reset_after = g->close_after = g->stall_after = MOCK_NONE;
}

/* Every key read_mock, fail_first and read_choices read. */
static const char *const option_names[] = {
  "choice_tokens", "close_after", "content_type", "error_after", "error_body",
  "error_event", "error_message", "fail_first", "hold", "key", "keyword", "keyword_at",
  "location", "malformed_after", "ndjson", "no_done", "no_finish", "ping_interval",
  "ping_only", "raw_body", "reasoning", "reset_after", "retry_after", "stall_after",
  "status", "text", "tokens_per_sec", "tool_calls", "ttft",
};

/* Unlike a request's own mock object, a checked one names no unknown key:
   a misspelt option in a --replies file would go unnoticed otherwise. */
int mock_request_check(const json_t *mock, const mock_config *cfg, char *err,
                       size_t err_size) {
  const char *key;
  const json_t *value;
  json_object_foreach((json_t *)mock, key, value) {
    size_t i = 0, count = sizeof option_names / sizeof *option_names;
    while (i < count && strcmp(key, option_names[i]) != 0)
      i++;
    if (i == count) {
      snprintf(err, err_size, "unknown option mock.%.64s", key);
      return -1;
    }
  }
  options o = {NULL, NULL, mock, NULL, err, err_size};
  mock_gen *g = mock_xcalloc(1, sizeof *g);
  g->chat = 1;
  gen_defaults(g);
  g->rec = mock_xcalloc(1, sizeof *g->rec);
  g->rec->refs = 1;
  int rc = read_mock(&o, g, cfg);
  mock_gen_free(g);
  return rc;
}

/* ---- starting --------------------------------------------------------- */

static void answer(mock_conn *c, mock_gen *g, int status, const char *type,
                   const char *message, const char *body) {
  char headers[1600];
  int n = snprintf(headers, sizeof headers, "X-Request-Id: %s\r\n", g->rec->id);
  if (g->retry_text && n > 0 && (size_t)n < sizeof headers)
    n += snprintf(headers + n, sizeof headers - (size_t)n, "Retry-After: %s\r\n", g->retry_text);
  else if (g->retry_after >= 0 && n > 0 && (size_t)n < sizeof headers)
    n += snprintf(headers + n, sizeof headers - (size_t)n, "Retry-After: %.0f\r\n",
                  ceil(g->retry_after));
  if (g->location && n > 0 && (size_t)n < sizeof headers)
    snprintf(headers + n, sizeof headers - (size_t)n, "Location: %s\r\n", g->location);
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
  gen_defaults(g);
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
