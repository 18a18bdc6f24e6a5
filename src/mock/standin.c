/*
** --stand-in llamacpp|vllm: the mock plays llama.cpp's llama-server or vLLM
** for a client that watches the server's own monitoring endpoints -- GET
** /slots and /metrics (llamacpp: series), or /metrics (vllm: series) -- in
** the shapes those projects document, filled from the mock's generations.
** --stop-delay keeps an aborted request busy a while, as a real server that
** notices a disconnect only at its next write.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"

#define DEFAULT_SLOTS 4
#define SLOT_N_CTX 4096 /* the mock has no context window; one llama-server might show */

static const char *const outcome_names[MOCK_OUTCOME_COUNT] = {"stop", "length", "abort"};

/*
** A request as the played server sees it: from its generation's begin until
** the server lets go of it -- when the generation ends, or with --stop-delay
** that much after its client left.
*/
struct mock_standin_request {
  mock_standin_request *prev, *next; /* on one of the lists below */
  mock_gen *gen;                     /* while the generation lives */
  mock_record *rec;                  /* a reference */
  int slot;                          /* llama.cpp: its slot, -1 while deferred */
  int64_t task;                      /* llama.cpp's id_task */
  int outcome;                       /* MOCK_OUTCOME_*, once the generation ended */
  uint64_t release_at;               /* lingering: when the server lets go */
};

typedef struct request_list {
  mock_standin_request *head, *tail;
  size_t count;
} request_list;

typedef struct slot {
  mock_standin_request *req; /* what it processes, or NULL */
  int64_t task;              /* its latest task, -1 before the first */
  uint64_t n_decoded;        /* of the latest task, once it is over */
  uint64_t max_tokens;       /* of the latest task; MOCK_NONE before the first */
  int stream;
  uint64_t freed_at;         /* a free slot is picked least recently used */
} slot;

struct mock_standin {
  mock_server *server;
  int kind;                  /* MOCK_STANDIN_* */
  uv_timer_t timer;          /* lets go of what lingers; starts the deferred */
  request_list running;      /* generations with a slot (vLLM: every one) */
  request_list deferred;     /* llama.cpp: waiting for a slot, in order */
  request_list lingering;    /* ended by an abort the server has not noticed yet */
  slot *slots;
  unsigned slot_count;
  int64_t next_task;
  uint64_t delay_ns;
  /* counters */
  uint64_t prompt_tokens, predicted_tokens, prompt_ns, predicted_ns, n_tokens_max;
  uint64_t outcomes[MOCK_OUTCOME_COUNT];
};

int mock_standin_parse(const char *name) {
  if (strcmp(name, "llamacpp") == 0)
    return MOCK_STANDIN_LLAMACPP;
  if (strcmp(name, "vllm") == 0)
    return MOCK_STANDIN_VLLM;
  return -1;
}

/* ---- lists ------------------------------------------------------------ */

static void list_push(request_list *l, mock_standin_request *r) {
  r->next = NULL;
  r->prev = l->tail;
  if (l->tail)
    l->tail->next = r;
  else
    l->head = r;
  l->tail = r;
  l->count++;
}

static void list_remove(request_list *l, mock_standin_request *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    l->head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else
    l->tail = r->prev;
  r->prev = r->next = NULL;
  l->count--;
}

static void request_free(mock_standin_request *r) {
  mock_record_unref(r->rec);
  free(r);
}

/* ---- slots and the timer ---------------------------------------------- */

/* The free slot used least recently (llama-server's fallback choice), or -1. */
static int free_slot(const mock_standin *st) {
  int best = -1;
  for (unsigned i = 0; i < st->slot_count; i++)
    if (st->slots[i].req == NULL && (best < 0 || st->slots[i].freed_at < st->slots[best].freed_at))
      best = (int)i;
  return best;
}

/* r goes running (in slot i for llama.cpp) and its prompt counts as processed. */
static void run(mock_standin *st, mock_standin_request *r, int i) {
  if (i >= 0) {
    slot *sl = &st->slots[i];
    sl->req = r;
    sl->task = r->task;
    sl->max_tokens = r->rec->max_tokens;
    sl->stream = r->rec->stream;
    r->slot = i;
  }
  list_push(&st->running, r);
  st->prompt_tokens += r->gen->prompt_tokens;
}

/* The server lets go of r: counted by how it ended, its slot freed. */
static void release(mock_standin *st, mock_standin_request *r) {
  st->outcomes[r->outcome]++;
  if (r->slot >= 0) {
    slot *sl = &st->slots[r->slot];
    sl->req = NULL;
    sl->n_decoded = r->rec->tokens_sent;
    sl->freed_at = uv_hrtime();
  }
  request_free(r);
}

static void on_timer(uv_timer_t *t);

/* Wakes the timer for what comes next: a deferred request that can have a
   slot now, or the first lingering one's release. */
static void schedule(mock_standin *st) {
  if (st->server->stopping)
    return;
  uint64_t ms;
  if (st->deferred.head && free_slot(st) >= 0) {
    ms = 0;
  } else if (st->lingering.head) {
    uint64_t now = uv_hrtime(), at = st->lingering.head->release_at;
    ms = at > now ? (at - now + 999999) / 1000000 : 0;
  } else {
    uv_timer_stop(&st->timer);
    return;
  }
  uv_timer_start(&st->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t) {
  mock_standin *st = t->data;
  uint64_t now = uv_hrtime();
  while (st->lingering.head && st->lingering.head->release_at <= now) {
    mock_standin_request *r = st->lingering.head;
    list_remove(&st->lingering, r);
    release(st, r);
  }
  int i;
  while (st->deferred.head && (i = free_slot(st)) >= 0) {
    mock_standin_request *r = st->deferred.head;
    list_remove(&st->deferred, r);
    run(st, r, i);
    mock_gen_start(r->gen); /* may end it, and r with it, at once */
  }
  schedule(st);
}

/* ---- generations begin and end ---------------------------------------- */

void mock_standin_init(mock_server *s) {
  const mock_config *cfg = &s->config;
  if (cfg->stand_in == MOCK_STANDIN_NONE)
    return;
  mock_standin *st = mock_xcalloc(1, sizeof *st);
  st->server = s;
  st->kind = cfg->stand_in;
  st->delay_ns = (uint64_t)(cfg->stop_delay * 1e9);
  if (st->kind == MOCK_STANDIN_LLAMACPP) {
    st->slot_count = cfg->slots ? cfg->slots : DEFAULT_SLOTS;
    st->slots = mock_xcalloc(st->slot_count, sizeof *st->slots);
    for (unsigned i = 0; i < st->slot_count; i++) {
      st->slots[i].task = -1;
      st->slots[i].max_tokens = MOCK_NONE;
      st->slots[i].stream = 1;
    }
  }
  uv_timer_init(s->loop, &st->timer);
  st->timer.data = st;
  s->standin = st;
}

/* Shutdown, once every connection is closed: nothing runs or waits now. */
void mock_standin_close(mock_server *s) {
  mock_standin *st = s->standin;
  if (st == NULL)
    return;
  while (st->lingering.head) {
    mock_standin_request *r = st->lingering.head;
    list_remove(&st->lingering, r);
    release(st, r);
  }
  uv_close((uv_handle_t *)&st->timer, NULL);
}

void mock_standin_free(mock_server *s) {
  if (s->standin == NULL)
    return;
  free(s->standin->slots);
  free(s->standin);
  s->standin = NULL;
}

int mock_standin_begin(mock_gen *g) {
  mock_standin *st = g->server->standin;
  mock_standin_request *r = mock_xcalloc(1, sizeof *r);
  r->gen = g;
  r->rec = g->rec;
  mock_record_ref(r->rec);
  r->slot = -1;
  r->task = st->next_task++;
  g->standin = r;
  int i = -1;
  /* behind those already waiting: a slot freed for them (started on the
     next loop pass) is not taken by a request that came after */
  if (st->kind == MOCK_STANDIN_LLAMACPP && (st->deferred.head || (i = free_slot(st)) < 0)) {
    list_push(&st->deferred, r);
    return 1;
  }
  run(st, r, i);
  return 0;
}

void mock_standin_end(mock_gen *g, int outcome) {
  mock_standin *st = g->server->standin;
  mock_standin_request *r = g->standin;
  mock_record *rec = r->rec;
  g->standin = NULL;
  r->gen = NULL;
  if (st->kind == MOCK_STANDIN_LLAMACPP && r->slot < 0) {
    list_remove(&st->deferred, r); /* its client left before it had a slot */
    request_free(r);
    return;
  }
  list_remove(&st->running, r);
  st->predicted_tokens += rec->tokens_sent;
  if (g->prompt_tokens + rec->tokens_sent > st->n_tokens_max)
    st->n_tokens_max = g->prompt_tokens + rec->tokens_sent;
  if (rec->first_token_at > g->t_headers) {
    st->prompt_ns += rec->first_token_at - g->t_headers;
    st->predicted_ns += rec->last_token_at - rec->first_token_at;
  }
  r->outcome = outcome;
  if (rec->client_closed && st->delay_ns > 0 && !st->server->stopping) {
    /* the generation stopped; the server is slow to say so */
    r->release_at = (rec->closed_at ? rec->closed_at : uv_hrtime()) + st->delay_ns;
    list_push(&st->lingering, r);
  } else {
    release(st, r);
  }
  schedule(st);
}

/* ---- documents -------------------------------------------------------- */


int mock_standin_serves(const mock_server *s, const char *path, size_t len) {
  const mock_standin *st = s->standin;
  if (st == NULL)
    return 0;
  return mock_path_is(path, len, "/metrics") || mock_path_is(path, len, "/health") ||
         (st->kind == MOCK_STANDIN_LLAMACPP && mock_path_is(path, len, "/slots"));
}

/* Whether the query of a request target (what follows path) names param. */
static int query_has(const char *query, const char *param) {
  if (*query != '?')
    return 0;
  size_t n = strlen(param), end = strcspn(query, "#");
  for (size_t i = 1; i + n <= end; i++) {
    if ((query[i - 1] == '?' || query[i - 1] == '&') && memcmp(query + i, param, n) == 0 &&
        (i + n == end || query[i + n] == '=' || query[i + n] == '&'))
      return 1;
  }
  return 0;
}

static void render_slots(const mock_standin *st, int state_form, mock_buf *b) {
  mock_buf_puts(b, "[");
  for (unsigned i = 0; i < st->slot_count; i++) {
    const slot *sl = &st->slots[i];
    int busy = sl->req != NULL;
    uint64_t decoded = busy ? sl->req->rec->tokens_sent : sl->n_decoded;
    long long predict = sl->max_tokens == MOCK_NONE ? -1 : (long long)sl->max_tokens;
    long long remain = predict < 0 ? -1
                       : (uint64_t)predict > decoded ? predict - (long long)decoded : 0;
    mock_buf_printf(b, "%s{\"id\":%u,\"id_task\":%lld,\"n_ctx\":%d,\"speculative\":false,",
                    i ? "," : "", i, (long long)sl->task, SLOT_N_CTX);
    if (state_form)
      mock_buf_printf(b, "\"state\":%d,", busy);
    else
      mock_buf_printf(b, "\"is_processing\":%s,", busy ? "true" : "false");
    mock_buf_printf(b, "\"params\":{\"n_predict\":%lld,\"max_tokens\":%lld,\"stream\":%s},"
                    "\"next_token\":{\"has_next_token\":%s,\"has_new_line\":false,"
                    "\"n_remain\":%lld,\"n_decoded\":%llu}}",
                    predict, predict, sl->stream ? "true" : "false", busy ? "true" : "false",
                    remain, (unsigned long long)decoded);
  }
  mock_buf_puts(b, "]");
}

static void route_slots(mock_conn *c, const char *query) {
  const mock_standin *st = c->server->standin;
  if (c->server->config.no_slots) {
    mock_conn_respond_error(c, 501, "not_supported_error",
                            "This server does not support slots endpoint. Start it with `--slots`",
                            NULL);
    return;
  }
  if (query_has(query, "fail_on_no_slot") && free_slot(st) < 0) {
    mock_conn_respond_error(c, 503, "unavailable_error", "no slot available", NULL);
    return;
  }
  mock_buf b;
  mock_buf_init(&b);
  render_slots(st, c->server->config.slots_state, &b);
  mock_conn_respond(c, 200, "application/json; charset=utf-8", b.data, b.len, NULL);
  mock_buf_free(&b);
}

/* "# HELP" and "# TYPE" of a series, as the Prometheus text format has them. */
static void series(mock_buf *b, const char *name, const char *type, const char *help) {
  mock_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static double per_second(uint64_t count, uint64_t ns) {
  return ns ? (double)count / ((double)ns / 1e9) : 0;
}

static void render_llamacpp(const mock_standin *st, mock_buf *b) {
  size_t busy = st->running.count + st->lingering.count;
  series(b, "llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.");
  mock_buf_printf(b, "llamacpp:prompt_tokens_total %llu\n", (unsigned long long)st->prompt_tokens);
  series(b, "llamacpp:prompt_seconds_total", "counter", "Prompt process time");
  mock_buf_printf(b, "llamacpp:prompt_seconds_total %.6f\n", (double)st->prompt_ns / 1e9);
  series(b, "llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed.");
  mock_buf_printf(b, "llamacpp:tokens_predicted_total %llu\n",
                  (unsigned long long)st->predicted_tokens);
  series(b, "llamacpp:tokens_predicted_seconds_total", "counter", "Predict process time");
  mock_buf_printf(b, "llamacpp:tokens_predicted_seconds_total %.6f\n",
                  (double)st->predicted_ns / 1e9);
  series(b, "llamacpp:prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.");
  mock_buf_printf(b, "llamacpp:prompt_tokens_seconds %.3f\n",
                  per_second(st->prompt_tokens, st->prompt_ns));
  series(b, "llamacpp:predicted_tokens_seconds", "gauge",
         "Average generation throughput in tokens/s.");
  mock_buf_printf(b, "llamacpp:predicted_tokens_seconds %.3f\n",
                  per_second(st->predicted_tokens, st->predicted_ns));
  series(b, "llamacpp:requests_processing", "gauge", "Number of requests processing.");
  mock_buf_printf(b, "llamacpp:requests_processing %zu\n", busy);
  series(b, "llamacpp:requests_deferred", "gauge", "Number of requests deferred.");
  mock_buf_printf(b, "llamacpp:requests_deferred %zu\n", st->deferred.count);
  series(b, "llamacpp:n_tokens_max", "counter", "Largest observed n_tokens.");
  mock_buf_printf(b, "llamacpp:n_tokens_max %llu\n", (unsigned long long)st->n_tokens_max);
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void label_value(mock_buf *b, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"')
      mock_buf_printf(b, "\\%c", *v);
    else if (*v == '\n')
      mock_buf_puts(b, "\\n");
    else
      mock_buf_append(b, v, 1);
  }
}

static void render_vllm(const mock_standin *st, const char *model, mock_buf *b) {
  mock_buf labels;
  mock_buf_init(&labels);
  mock_buf_puts(&labels, "model_name=\"");
  label_value(&labels, model);
  mock_buf_puts(&labels, "\"");
  const char *l = labels.data;
  uint64_t generated = st->predicted_tokens;
  for (const mock_standin_request *r = st->running.head; r; r = r->next)
    generated += r->rec->tokens_sent;

  series(b, "vllm:num_requests_running", "gauge", "Number of requests in model execution batches.");
  mock_buf_printf(b, "vllm:num_requests_running{engine=\"0\",%s} %zu.0\n", l,
                  st->running.count + st->lingering.count);
  series(b, "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.");
  mock_buf_printf(b, "vllm:num_requests_waiting{engine=\"0\",%s} 0.0\n", l);
  series(b, "vllm:request_success_total", "counter", "Count of successfully processed requests.");
  for (int i = 0; i < MOCK_OUTCOME_COUNT; i++)
    mock_buf_printf(b, "vllm:request_success_total{engine=\"0\",finished_reason=\"%s\",%s} %llu.0\n",
                    outcome_names[i], l, (unsigned long long)st->outcomes[i]);
  series(b, "vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.");
  mock_buf_printf(b, "vllm:prompt_tokens_total{engine=\"0\",%s} %llu.0\n", l,
                  (unsigned long long)st->prompt_tokens);
  series(b, "vllm:generation_tokens_total", "counter", "Number of generation tokens processed.");
  mock_buf_printf(b, "vllm:generation_tokens_total{engine=\"0\",%s} %llu.0\n", l,
                  (unsigned long long)generated);
  mock_buf_free(&labels);
}

void mock_standin_route(mock_conn *c, const char *path, size_t len) {
  const mock_standin *st = c->server->standin;
  int llama = st->kind == MOCK_STANDIN_LLAMACPP;
  if (mock_path_is(path, len, "/slots")) {
    route_slots(c, path + len);
  } else if (mock_path_is(path, len, "/health")) {
    /* llama-server answers a JSON status; vLLM an empty 200 */
    if (llama)
      mock_conn_respond(c, 200, "application/json; charset=utf-8", "{\"status\":\"ok\"}", 15, NULL);
    else
      mock_conn_respond(c, 200, "text/plain", "", 0, NULL);
  } else {
    mock_buf b;
    mock_buf_init(&b);
    if (llama)
      render_llamacpp(st, &b);
    else
      render_vllm(st, c->server->config.model, &b);
    mock_conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
    mock_buf_free(&b);
  }
}
