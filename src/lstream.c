/*
** The Lua binding of streams: sluice.stream(opts), sluice.fetch(opts) and the
** stream methods. Shaped like liolib's file handle: the userdata exists before
** the transfer, close is idempotent (__close cancels; __gc cancels and frees),
** and events() returns the stream as the generic-for's closing value.
*/
#define _GNU_SOURCE  /* strptime, timegm */
#include <math.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <lauxlib.h>

#include "largs.h"
#include "openai_chunk.h"
#include "errors.h"
#include "lsluice.h"
#include "stream.h"
#include "task.h"

#define STREAM_MT "sluice.stream"
#define DEFAULT_MAX_EVENT (8u << 20)
#define DEFAULT_MAX_BODY (64u << 20)

/* The hot methods (next, next_text, the events() iterator) carry these
   upvalues, so a stream check and an event's fields need no string lookups. */
enum { UP_META = 1, UP_DATA, UP_EVENT, UP_ID, UP_MESSAGE, UP_ITER, N_UP };

static sl_stream *check_stream(lua_State *L, int i) {
  sl_stream **ud = lua_touserdata(L, i);
  int fast = ud && lua_getmetatable(L, i);
  if (fast) {
    fast = lua_rawequal(L, -1, lua_upvalueindex(UP_META));
    lua_pop(L, 1);
  }
  if (!fast) ud = luaL_checkudata(L, i, STREAM_MT);
  if (!*ud) luaL_error(L, "attempt to use a released stream");
  return *ud;
}

/* ---- options ---------------------------------------------------------------- */

static const char *const known_opts[] = {
    "url", "method", "headers", "body", "json", "framing", "timeouts", "max_event_bytes",
    "insecure", "ca_file", "proxy", "http2", "max_redirects", "tag", NULL};
static const char *const known_timeouts[] = {"connect", "first_byte", "idle", "total", NULL};

/* A connect timeout unless the script says otherwise: a server that never
   answers a SYN must not hold a stream or a fetch forever. */
#define DEFAULT_CONNECT 30.0

static int is_secret_header(const char *name) {
  return strcasecmp(name, "authorization") == 0 ||
         strcasecmp(name, "proxy-authorization") == 0 ||
         strcasecmp(name, "x-api-key") == 0 || strcasecmp(name, "api-key") == 0 ||
         strcasecmp(name, "cookie") == 0;
}

/* Keeps v (and, for "Bearer TOKEN", the token) to redact from errors. */
static void add_secret(sl_stream_opts *o, const char *v) {
  char **n;
  const char *sp = strchr(v, ' ');
  if (!*v) return;
  n = realloc(o->secrets, sizeof *n * (size_t)(o->nsecrets + 2));
  if (!n) return;
  o->secrets = n;
  o->secrets[o->nsecrets++] = strdup(v);
  if (sp && sp[1]) o->secrets[o->nsecrets++] = strdup(sp + 1);  /* the token */
}

static int has_header(struct curl_slist *h, const char *name) {
  size_t n = strlen(name);
  for (; h; h = h->next)
    if (strncasecmp(h->data, name, n) == 0 && h->data[n] == ':') return 1;
  return 0;
}

/* Raises unless u is an http:// or https:// URL without control characters.
   The URL is never echoed: it may carry credentials. */
static void check_url(const sl_opts *op, const char *key, const char *u, size_t len) {
  size_t i;
  for (i = 0; i < len; i++)
    if ((unsigned char)u[i] < 0x20 || u[i] == 0x7f)
      sl_opts_error(op, key, "must not contain control characters (CR, LF, NUL, ...)");
  if (strncasecmp(u, "http://", 7) != 0 && strncasecmp(u, "https://", 8) != 0)
    sl_opts_error(op, key, "must be an http:// or https:// URL");
}

/* The request's headers, checked: names are tokens, values carry no CR, LF
   or NUL (a value is never echoed: it may be a key). */
static void read_headers(lua_State *L, const sl_opts *op, sl_stream_opts *o) {
  int t;
  lua_getfield(L, op->idx, "headers");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  if (!lua_istable(L, -1)) sl_opts_error(op, "headers", "must be a table, got %s", luaL_typename(L, -1));
  t = lua_gettop(L);
  /* Checked first, built after: nothing below raises once C memory is ours. */
  lua_pushnil(L);
  while (lua_next(L, t)) {
    size_t nl, vl;
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nl) : NULL;
    int vt = lua_type(L, -1);
    if (!name) sl_opts_error(op, "headers", "must map names (strings) to values, got a %s key",
                             luaL_typename(L, -2));
    if (!sl_is_token(name, nl)) {
      char shown[64];
      size_t i;
      for (i = 0; i < nl && i < sizeof shown - 1; i++)
        shown[i] = (unsigned char)name[i] < 0x20 || name[i] == 0x7f ? '?' : name[i];
      shown[i] = '\0';
      sl_opts_error(op, "headers", "has a name that is not a token (letters, digits, "
                    "!#$%%&'*+-.^_`|~; no spaces, colons, CR, LF or NUL): '%s'", shown);
    }
    if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
      sl_opts_error(op, "headers", "value of '%s' must be a string, got %s", name,
                    luaL_typename(L, -1));
    if (vt == LUA_TSTRING) {
      const char *v = lua_tolstring(L, -1, &vl);
      if (sl_has_crlf(v, vl))
        sl_opts_error(op, "headers", "value of '%s' must not contain CR, LF or NUL", name);
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, t)) {
    const char *name = lua_tostring(L, -2);
    lua_pushvalue(L, -1);
    {
      const char *value = lua_tostring(L, -1);  /* a number becomes its text, on the copy */
      size_t n = strlen(name) + strlen(value) + 3;
      char *line = malloc(n);
      if (line) {
        snprintf(line, n, "%s: %s", name, value);
        o->headers = curl_slist_append(o->headers, line);
        free(line);
      }
      if (is_secret_header(name)) add_secret(o, value);
      else if (strcasecmp(name, "x-request-id") == 0) o->request_id = value;  /* alive in opts */
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
}

/* Reads opts (at index 1) into o. Raises on misuse; pushes the JSON body, if
   any, to keep it alive. */
static void read_opts(lua_State *L, sl_stream_opts *o, int fetch) {
  const char *fn = fetch ? "sluice.fetch" : "sluice.stream";
  const char *framing, *url;
  size_t len;
  int is_json;
  sl_opts op, to;
  memset(o, 0, sizeof *o);
  luaL_checktype(L, 1, LUA_TTABLE);
  op = sl_opts_begin(L, 1, 1, fn);
  sl_opts_known(&op, known_opts);
  url = sl_opts_string(&op, "url", &len);
  if (!url) {
    lua_getfield(L, 1, "url");
    if (lua_isnil(L, -1)) sl_opts_error(&op, "url", "is required");
  }
  check_url(&op, "url", url, len);
  o->url = url;
  if ((o->method = sl_opts_string(&op, "method", &len)) && !sl_is_token(o->method, len))
    sl_opts_error(&op, "method", "must be a method name such as \"POST\" (a token: no spaces, CR, LF or NUL)");
  o->ca_file = sl_opts_string(&op, "ca_file", NULL);
  if ((o->proxy = sl_opts_string(&op, "proxy", &len)) && sl_has_crlf(o->proxy, len))
    sl_opts_error(&op, "proxy", "must not contain CR, LF or NUL");
  o->insecure = sl_opts_flag(&op, "insecure", 0);
  o->http2 = sl_opts_flag(&op, "http2", 0);
  o->max_redirects = (long)sl_opts_integer(&op, "max_redirects", 0, 0);
  if ((o->tag = sl_opts_string(&op, "tag", &o->tag_len)) && sl_has_crlf(o->tag, o->tag_len))
    sl_opts_error(&op, "tag", "must not contain CR, LF or NUL");

  framing = sl_opts_string(&op, "framing", NULL);
  if (fetch) {
    if (framing) sl_opts_error(&op, "framing", "is not an option of sluice.fetch (it reads the whole body)");
    o->framing = SL_FRAMING_BODY;
  } else if (!framing || strcmp(framing, "sse") == 0) o->framing = SL_FRAMING_SSE;
  else if (strcmp(framing, "ndjson") == 0) o->framing = SL_FRAMING_NDJSON;
  else if (strcmp(framing, "raw") == 0) o->framing = SL_FRAMING_RAW;
  else sl_opts_error(&op, "framing", "must be \"sse\", \"ndjson\" or \"raw\"");

  /* for fetch: the whole body */
  o->max_event_bytes = (size_t)sl_opts_integer(&op, "max_event_bytes",
                                               fetch ? DEFAULT_MAX_BODY : DEFAULT_MAX_EVENT, 1);

  o->connect = DEFAULT_CONNECT;
  if (sl_opts_nested(&op, "timeouts", &to)) {
    sl_opts_known(&to, known_timeouts);
    o->connect = sl_opts_seconds(&to, "connect", DEFAULT_CONNECT);
    o->first_byte = sl_opts_seconds(&to, "first_byte", 0);
    o->idle = sl_opts_seconds(&to, "idle", 0);
    o->total = sl_opts_seconds(&to, "total", 0);
    lua_pop(L, 2);
  }
  /* HUGE_VAL (math.huge, 1e300) is no limit, as is 0 */
  if (isinf(o->connect)) o->connect = 0;
  if (isinf(o->first_byte)) o->first_byte = 0;
  if (isinf(o->idle)) o->idle = 0;
  if (isinf(o->total)) o->total = 0;

  o->body = sl_opts_string(&op, "body", &o->body_len);
  lua_getfield(L, 1, "json");
  if ((is_json = !lua_isnil(L, -1))) {
    if (o->body) sl_opts_error(&op, "json", "cannot be given with option 'body'");
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "encode");
    lua_remove(L, -2);
    lua_insert(L, -2);
    lua_call(L, 1, 1);  /* leaves the encoded body on the stack */
    o->body = lua_tolstring(L, -1, &o->body_len);
  } else {
    lua_pop(L, 1);
  }

  /* Headers last: from here on we own C memory, and nothing below raises. */
  read_headers(L, &op, o);
  if (is_json && !has_header(o->headers, "content-type"))
    o->headers = curl_slist_append(o->headers, "Content-Type: application/json");
  if (o->framing == SL_FRAMING_SSE && !has_header(o->headers, "accept"))
    o->headers = curl_slist_append(o->headers, "Accept: text/event-stream");
  /* No "Expect: 100-continue" round trip before large bodies. */
  o->headers = curl_slist_append(o->headers, "Expect:");
}

/* Leaves the new stream's userdata on the top of the stack. */
static void new_stream(lua_State *L, int fetch) {
  sl_runtime *rt = sl_rt(L);
  sl_stream_opts o;
  sl_stream **ud;
  char why[256];
  lua_settop(L, 1);
  if (rt->stopping) luaL_error(L, "cannot start a stream: the runtime is shutting down");
  if (sl_curlm_ensure(&rt->net, why, sizeof why) != 0)
    luaL_error(L, "cannot start a stream: %s", why);
  if (rt->net.transfers >= rt->gc_mark) sl_runtime_collect(rt, L);  /* dropped streams */
  read_opts(L, &o, fetch);  /* may leave the encoded JSON body at index 2 */
  ud = lua_newuserdatauv(L, sizeof *ud, 0);  /* exists before the transfer */
  *ud = NULL;
  luaL_setmetatable(L, STREAM_MT);
  if (!(*ud = sl_stream_start(rt, rt->current, &o, why, sizeof why)))
    luaL_error(L, "cannot start a stream: %s", why);
}

static int l_stream(lua_State *L) {
  new_stream(L, 0);
  return 1;
}

/* ---- reading ---------------------------------------------------------------- */

static void push_event(lua_State *L, sl_stream *s, const sl_event *ev) {
  /* Sized to the fields it gets: each slot more is memory the collector
     then sweeps, once per event. */
  int sse = s->framing == SL_FRAMING_SSE;
  lua_createtable(L, 0, sse ? 2 + (ev->id_len > 0) : 1);
  lua_pushvalue(L, lua_upvalueindex(UP_DATA));
  lua_pushlstring(L, ev->data, ev->data_len);
  lua_rawset(L, -3);
  if (sse) {
    lua_pushvalue(L, lua_upvalueindex(UP_EVENT));
    if (ev->event_len) lua_pushlstring(L, ev->event, ev->event_len);
    else lua_pushvalue(L, lua_upvalueindex(UP_MESSAGE));
    lua_rawset(L, -3);
    if (ev->id_len) {
      lua_pushvalue(L, lua_upvalueindex(UP_ID));
      lua_pushlstring(L, ev->id, ev->id_len);
      lua_rawset(L, -3);
    }
  }
}

/* Retry-After in seconds from now: "120", or an HTTP-date; -1 if neither. */
static double retry_after(const char *v) {
  struct tm tm;
  char *end;
  double secs = strtod(v, &end);
  if (end != v && *end == '\0' && secs >= 0) return floor(secs);
  memset(&tm, 0, sizeof tm);
  if (strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm)) {
    double d = difftime(timegm(&tm), time(NULL));
    return d > 0 ? ceil(d) : 0;
  }
  return -1;
}

/* Pushes the error value of a failed or cancelled stream. */
static void push_stream_error(lua_State *L, sl_stream *s) {
  if (s->state == SL_STATE_CANCELLED) {
    char msg[256];
    snprintf(msg, sizeof msg, "cancelled: %s",
             s->cancel_reason ? s->cancel_reason : "cancelled");
    sl_error_push(L, "cancelled", msg, 0, NULL, 0);
  } else {
    const char *v;
    sl_error_push(L, s->err_kind, s->err_message ? s->err_message : "failed",
                  s->headers_done ? s->status : 0,
                  s->http_error || s->not_stream ? s->body.p : NULL, s->body.len);
    if (!s->headers_done) return;
    if ((v = sl_stream_header(s, "content-type")) != NULL) {
      lua_pushstring(L, v);
      lua_setfield(L, -2, "content_type");
    }
    if ((v = sl_stream_header(s, "x-request-id")) != NULL ||
        (v = sl_stream_header(s, "request-id")) != NULL) {
      lua_pushstring(L, v);
      lua_setfield(L, -2, "request_id");
    }
    if ((v = sl_stream_header(s, "retry-after")) != NULL) {
      double after = retry_after(v);
      if (after >= 0) {
        lua_pushinteger(L, (lua_Integer)after);
        lua_setfield(L, -2, "retry_after");
      }
    }
  }
}

static void next_cleanup(sl_task *t) {
  sl_stream *s = t->wait_data;
  if (s->waiter == t) s->waiter = NULL;
  sl_task_timer_stop(t);
}

enum { MODE_NEXT, MODE_ITER, MODE_TEXT };

/* MODE_TEXT: a simple text chunk becomes just its text (no tables built). */
static int push_text(lua_State *L, const sl_event *ev) {
  sl_chunk_text text;
  if (ev->event_len || !sl_chunk_simple(ev->data, ev->data_len, &text)) return 0;
  if (!text.escaped) {
    lua_pushlstring(L, text.p, text.len);
  } else {
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, text.len);
    size_t n = sl_json_unescape(text.p, text.len, out);
    if (n == (size_t)-1) return 0;  /* let the full decoder report it */
    luaL_pushresultsize(&b, n);
  }
  return 1;
}

/* A text piece read goes into the stream's next text line, written once the
   script has read all that came (sl_stream_pop, or now when the queue is
   empty already) or when the line is full. */
static void trace_piece(sl_stream *s, const char *p, size_t len) {
  sl_trace_piece(s->rt->trace, &s->tp, p, len);
  if (s->queued == 0 || sl_trace_pieces_full(&s->tp)) sl_trace_text(s->rt->trace, &s->tp, s->id);
}

/* sluice._chunk_text(json) -> text | nil: the fast path alone, for tests. */
static int l_chunk_text(lua_State *L) {
  sl_event ev;
  size_t len;
  memset(&ev, 0, sizeof ev);
  ev.data = luaL_checklstring(L, 1, &len);
  ev.data_len = (uint32_t)len;
  if (!push_text(L, &ev)) lua_pushnil(L);
  return 1;
}

/* Stack: 1 = stream (already checked), 2 = timeout or control value,
   3 = deadline (next only). Continues after a wait, so status may be
   LUA_YIELD. */
static int next_k(lua_State *L, int status, lua_KContext mode) {
  /* The stream was checked before the first try and is still on this
     stack; only its release (a finalizer's doing) remains to be seen. */
  sl_stream *s = *(sl_stream **)lua_touserdata(L, 1);
  sl_task *t = sl_rt(L)->current;
  sl_event ev;
  int rc;
  if (!s) luaL_error(L, "attempt to use a released stream");
  if (status == LUA_YIELD) sl_task_check_cancel(L, t);
  if (sl_stream_peek(s, &ev)) {
    if (mode != MODE_TEXT || !push_text(L, &ev)) {
      push_event(L, s, &ev);
    } else if (s->rt->trace) {
      size_t len;
      const char *p = lua_tolstring(L, -1, &len);
      trace_piece(s, p, len);
    }
    sl_stream_pop(s);
    return 1;
  }
  if (s->state == SL_STATE_DONE) {
    lua_pushnil(L);
    lua_pushnil(L);
    return mode == MODE_ITER ? 1 : 2;
  }
  if (sl_stream_finished(s)) {
    if (mode == MODE_ITER) {
      if (s->state == SL_STATE_CANCELLED) {  /* the script's own stop */
        lua_pushnil(L);
        return 1;
      }
      push_stream_error(L, s);
      return lua_error(L);
    }
    lua_pushnil(L);
    push_stream_error(L, s);
    return 2;
  }
  if (mode != MODE_ITER && !lua_isnil(L, 3)) {
    double left = lua_tonumber(L, 3) - sl_now();
    if (left <= 0 || (status == LUA_YIELD && sl_task_timer_fired(t))) {
      lua_pushnil(L);
      lua_pushliteral(L, "timeout");
      return 2;
    }
    t = sl_task_current(L, "stream:next");
    sl_task_check_cancel(L, t);
    if ((rc = sl_task_timer(t, left)) != 0) luaL_error(L, "stream:next: uv_timer_start: %s", uv_strerror(rc));
  } else {
    t = sl_task_current(L, mode == MODE_ITER ? "the events() iterator" : "stream:next");
    sl_task_check_cancel(L, t);
  }
  if (s->waiter && s->waiter != t)
    luaL_error(L, "stream is already being read by another task");
  s->waiter = t;
  return sl_task_wait(L, t, next_cleanup, s, mode, next_k);
}

/* Stack for next_k: 1 = stream, 2 = timeout, 3 = its deadline or nil. */
static int start_next(lua_State *L, lua_KContext mode) {
  check_stream(L, 1);
  lua_settop(L, 2);
  if (lua_isnil(L, 2)) lua_pushnil(L);
  else lua_pushnumber(L, sl_now() + sl_check_seconds(L, 2, 1, "stream:next"));
  return next_k(L, LUA_OK, mode);
}

static int l_next(lua_State *L) { return start_next(L, MODE_NEXT); }

/* s:next_text([timeout]): like next(), but a simple OpenAI-compatible text
   chunk is returned as its text (a string) instead of an event table. The
   fast path of sluice.openai; any other event comes back whole. */
static int l_next_text(lua_State *L) { return start_next(L, MODE_TEXT); }

static int l_iter(lua_State *L) {
  check_stream(L, 1);
  lua_settop(L, 2);
  lua_pushnil(L);
  return next_k(L, LUA_OK, MODE_ITER);
}

static int l_events(lua_State *L) {
  check_stream(L, 1);
  lua_pushvalue(L, lua_upvalueindex(UP_ITER));
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  lua_pushvalue(L, 1);  /* to-be-closed: leaving the loop early closes it */
  return 4;
}

/* ---- control and inspection -------------------------------------------------- */

static int l_cancel(lua_State *L) {
  sl_stream *s = check_stream(L, 1);
  sl_stream_cancel(s, luaL_optstring(L, 2, "cancelled"));
  return 0;
}

static int l_close(lua_State *L) {
  sl_stream **ud = luaL_checkudata(L, 1, STREAM_MT);
  if (*ud) sl_stream_cancel(*ud, "closed");  /* nothing if already over */
  return 0;
}

static int l_gc(lua_State *L) {
  sl_stream **ud = luaL_checkudata(L, 1, STREAM_MT);
  if (*ud) {
    sl_stream_release(*ud);
    *ud = NULL;
  }
  return 0;
}

/* s:trace_text(piece): a text piece for the trace (what sluice.openai
   decoded itself); nothing without a trace. */
static int l_trace_text(lua_State *L) {
  sl_stream *s = check_stream(L, 1);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  if (s->rt->trace) trace_piece(s, p, len);
  return 0;
}

/* s:trace_note(fields): a note line about the stream (its strings, numbers
   and booleans; other values are left out); nothing without a trace. */
static int l_trace_note(lua_State *L) {
  sl_stream *s = check_stream(L, 1);
  sl_trace *t = s->rt->trace;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!t) return 0;
  sl_trace_text(t, &s->tp, s->id);  /* the note comes after what was read */
  sl_trace_begin(t, "note", s->id);
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    if (lua_type(L, -2) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -2);
      size_t len;
      switch (lua_type(L, -1)) {
      case LUA_TSTRING: {
        const char *v = lua_tolstring(L, -1, &len);
        sl_trace_str(t, k, v, len);
        break;
      }
      case LUA_TNUMBER:
        if (lua_isinteger(L, -1)) sl_trace_int(t, k, (long long)lua_tointeger(L, -1));
        else sl_trace_num(t, k, lua_tonumber(L, -1));
        break;
      case LUA_TBOOLEAN:
        sl_trace_bool(t, k, lua_toboolean(L, -1));
        break;
      default:
        break;
      }
    }
    lua_pop(L, 1);
  }
  sl_trace_end(t);
  return 0;
}

static int l_state(lua_State *L) {
  lua_pushstring(L, sl_state_name(check_stream(L, 1)->state));
  return 1;
}

static int l_status(lua_State *L) {
  sl_stream *s = check_stream(L, 1);
  if (s->headers_done) lua_pushinteger(L, s->status);
  else lua_pushnil(L);
  return 1;
}

static void push_headers(lua_State *L, sl_stream *s) {
  const char *p = s->resp_headers.p, *end = p + s->resp_headers.len;
  lua_newtable(L);
  while (p && p < end) {
    const char *name = p, *value = p + strlen(p) + 1;
    p = value + strlen(value) + 1;
    if (lua_getfield(L, -1, name) == LUA_TSTRING) {  /* repeated: join */
      lua_pushliteral(L, ", ");
      lua_pushstring(L, value);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushstring(L, value);
    }
    lua_setfield(L, -2, name);
  }
}

static int l_headers(lua_State *L) {
  push_headers(L, check_stream(L, 1));
  return 1;
}

/* s:header(name) -> the value of one response header (any case), or nil:
   no table built for a single lookup. */
static int l_header(lua_State *L) {
  sl_stream *s = check_stream(L, 1);
  size_t n, i;
  const char *name = luaL_checklstring(L, 2, &n);
  char low[128];
  const char *v;
  if (n >= sizeof low) {
    lua_pushnil(L);
    return 1;
  }
  for (i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)name[i]);
  low[n] = '\0';
  v = sl_stream_header(s, low);
  if (v) lua_pushstring(L, v);
  else lua_pushnil(L);
  return 1;
}

static void set_time(lua_State *L, const char *k, double v) {
  if (v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
  }
}

static int l_metrics(lua_State *L) {
  sl_stream *s = check_stream(L, 1);
  lua_createtable(L, 0, 12);
  set_time(L, "started", s->t_started);
  set_time(L, "connected", s->t_connected);
  set_time(L, "first_byte", s->t_first_byte);
  set_time(L, "first_event", s->t_first_event);
  set_time(L, "last_event", s->t_last_event);
  set_time(L, "ended", s->t_ended);
  set_time(L, "server_stopped_at", s->server_stopped_at);
  lua_pushinteger(L, (lua_Integer)s->events);
  lua_setfield(L, -2, "events");
  lua_pushinteger(L, (lua_Integer)s->id);
  lua_setfield(L, -2, "id");
  lua_pushinteger(L, (lua_Integer)s->bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushstring(L, sl_state_name(s->state));
  lua_setfield(L, -2, "state");
  if (s->local_port) {
    lua_pushinteger(L, s->local_port);
    lua_setfield(L, -2, "local_port");
  }
  if (s->headers_done) {
    lua_pushinteger(L, s->status);
    lua_setfield(L, -2, "status");
  }
  if (s->cancel_reason) {
    lua_pushstring(L, s->cancel_reason);
    lua_setfield(L, -2, "cancel_reason");
  }
  if (s->state == SL_STATE_FAILED) {
    push_stream_error(L, s);
    lua_setfield(L, -2, "error");
  }
  return 1;
}

static int l_tostring(lua_State *L) {
  sl_stream **ud = luaL_checkudata(L, 1, STREAM_MT);
  if (*ud) lua_pushfstring(L, "sluice.stream (%s): %p", sl_state_name((*ud)->state), *ud);
  else lua_pushliteral(L, "sluice.stream (released)");
  return 1;
}

/* ---- waiting for the end ------------------------------------------------------- */

static void wait_cleanup(sl_task *t) {
  sl_stream *s = t->wait_data;
  if (s->end_waiter == t) s->end_waiter = NULL;
  sl_task_timer_stop(t);
}

/* Stack: 1 = stream, 2 = timeout, 3 = its deadline or nil. */
static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  sl_stream *s = *(sl_stream **)lua_touserdata(L, 1);
  sl_task *t = sl_rt(L)->current;
  int rc;
  (void)ctx;
  if (!s) luaL_error(L, "attempt to use a released stream");
  if (status == LUA_YIELD) sl_task_check_cancel(L, t);
  if (sl_stream_finished(s)) {
    lua_pushstring(L, sl_state_name(s->state));
    return 1;
  }
  t = sl_task_current(L, "stream:wait");
  sl_task_check_cancel(L, t);
  if (!lua_isnil(L, 3)) {
    double left = lua_tonumber(L, 3) - sl_now();
    if (left <= 0 || (status == LUA_YIELD && sl_task_timer_fired(t))) {
      lua_pushnil(L);
      lua_pushliteral(L, "timeout");
      return 2;
    }
    if ((rc = sl_task_timer(t, left)) != 0) luaL_error(L, "stream:wait: uv_timer_start: %s", uv_strerror(rc));
  }
  if (s->end_waiter && s->end_waiter != t) luaL_error(L, "stream:wait: another task waits for this stream");
  s->end_waiter = t;
  return sl_task_wait(L, t, wait_cleanup, s, 0, wait_k);
}

/* s:wait([timeout]) -> state: waits until the stream is over (without
   reading it: its events stay queued for its reader); nil, "timeout". */
static int l_wait(lua_State *L) {
  check_stream(L, 1);
  lua_settop(L, 2);
  if (lua_isnil(L, 2)) lua_pushnil(L);
  else lua_pushnumber(L, sl_now() + sl_check_seconds(L, 2, 1, "stream:wait"));
  return wait_k(L, LUA_OK, 0);
}

/* ---- watching for the end, without holding the stream ------------------------- */

#define WATCH_MT "sluice.stream.watch"

void sl_watch_ended(sl_watch *w, sl_stream *s) {
  const char *rid = s->headers_done ? sl_stream_header(s, "x-request-id") : NULL;
  if (w->ended) return;
  w->ended = 1;
  w->state = s->state;
  w->ended_at = s->t_ended;
  if (rid) snprintf(w->request_id, sizeof w->request_id, "%s", rid);
  if (w->waiter) {
    if (!s->rt->stopping) sl_task_background(w->waiter, 0);  /* the exit waits for it now */
    sl_task_wake(w->waiter);
  }
}

static sl_watch *check_watch(lua_State *L) { return luaL_checkudata(L, 1, WATCH_MT); }

/* s:_watch() -> watch: one per stream (sluice.confirm's). */
static int l_watch(lua_State *L) {
  sl_stream *s = check_stream(L, 1);
  sl_watch *w;
  if (s->watch) luaL_error(L, "stream:_watch: the stream is watched already");
  w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  luaL_setmetatable(L, WATCH_MT);
  w->s = s;
  w->id = s->id;
  s->watch = w;
  if (sl_stream_finished(s)) sl_watch_ended(w, s);
  return 1;
}

static int watch_gc(lua_State *L) {
  sl_watch *w = check_watch(L);
  if (w->s) w->s->watch = NULL;
  w->s = NULL;
  return 0;
}

static void watch_cleanup(sl_task *t) {
  sl_watch *w = t->wait_data;
  if (w->waiter == t) w->waiter = NULL;
}

static int watch_wait_k(lua_State *L, int status, lua_KContext ctx) {
  sl_watch *w = lua_touserdata(L, 1);
  sl_task *t = sl_task_current(L, "watch:wait");
  (void)ctx;
  if (status == LUA_YIELD) sl_task_check_cancel(L, t);
  if (w->ended) {
    lua_pushstring(L, sl_state_name(w->state));
    lua_pushnumber(L, w->ended_at);
    if (w->request_id[0]) lua_pushstring(L, w->request_id);
    else lua_pushnil(L);
    return 3;
  }
  sl_task_check_cancel(L, t);
  sl_task_background(t, 1);  /* the script's exit does not wait for a stream's end */
  w->waiter = t;
  return sl_task_wait(L, t, watch_cleanup, w, 0, watch_wait_k);
}

/* watch:wait() -> state, ended_at, request_id|nil: waits, as a background
   task, until the stream is over (which makes the task a foreground one). */
static int l_watch_wait(lua_State *L) {
  check_watch(L);
  lua_settop(L, 1);
  return watch_wait_k(L, LUA_OK, 0);
}

/* watch:confirmed(t, how): the server's own word that it stopped, at t
   (sluice.now()'s clock): metrics().server_stopped_at if the stream is
   still there, and a confirm line in the trace. */
static int l_watch_confirmed(lua_State *L) {
  sl_watch *w = check_watch(L);
  sl_runtime *rt = sl_rt(L);
  size_t len;
  double at = luaL_checknumber(L, 2);
  const char *how = luaL_optlstring(L, 3, "", &len);
  if (w->s) w->s->server_stopped_at = at;
  if (rt->trace) {
    sl_trace_begin(rt->trace, "confirm", w->id);
    sl_trace_num(rt->trace, "server_stopped_at", at);
    if (len) sl_trace_str(rt->trace, "how", how, len);
    sl_trace_end(rt->trace);
  }
  return 0;
}

static const luaL_Reg watch_methods[] = {
    {"wait", l_watch_wait}, {"confirmed", l_watch_confirmed}, {NULL, NULL}};

/* ---- fetch: a plain request on the same loop --------------------------------- */

/* Stack: 1 = opts, ..., top = the stream userdata. */
static int fetch_k(lua_State *L, int status, lua_KContext ctx) {
  sl_stream *s = check_stream(L, -1);
  sl_task *t = sl_rt(L)->current;
  (void)ctx;
  if (status == LUA_YIELD) sl_task_check_cancel(L, t);
  if (s->state == SL_STATE_DONE) {
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, s->status);
    lua_setfield(L, -2, "status");
    push_headers(L, s);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, s->body.p ? s->body.p : "", s->body.len);
    lua_setfield(L, -2, "body");
    return 1;
  }
  if (sl_stream_finished(s)) {
    lua_pushnil(L);
    push_stream_error(L, s);
    return 2;
  }
  t = sl_task_current(L, "sluice.fetch");
  sl_task_check_cancel(L, t);
  s->waiter = t;
  return sl_task_wait(L, t, next_cleanup, s, 0, fetch_k);
}

static int l_fetch(lua_State *L) {
  new_stream(L, 1);
  return fetch_k(L, LUA_OK, 0);
}

static const luaL_Reg stream_methods[] = {
    {"next", l_next},       {"next_text", l_next_text}, {"events", l_events},   {"cancel", l_cancel},
    {"close", l_close},     {"state", l_state},     {"status", l_status},
    {"headers", l_headers}, {"header", l_header}, {"metrics", l_metrics}, {"trace_text", l_trace_text},
    {"trace_note", l_trace_note}, {"wait", l_wait}, {"_watch", l_watch}, {NULL, NULL}};

static const luaL_Reg stream_meta[] = {
    {"__gc", l_gc}, {"__close", l_close}, {"__tostring", l_tostring}, {NULL, NULL}};

/* sluice.trace(path) -> path: traces every stream from now on to path (one
   JSON line per event, appended); sluice.trace() -> the path, or nil. */
static int l_trace(lua_State *L) {
  sl_runtime *rt = sl_rt(L);
  const char *path = luaL_optstring(L, 1, NULL);
  char err[256];
  lua_getfield(L, LUA_REGISTRYINDEX, "sluice.trace path");
  if (!path || rt->trace) return 1;  /* already tracing: one file per run */
  lua_pop(L, 1);
  if (rt->stopping) luaL_error(L, "sluice.trace: the runtime is shutting down");
  if (!sl_trace_open(rt, path, err, sizeof err)) luaL_error(L, "sluice.trace: %s", err);
  lua_pushstring(L, path);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "sluice.trace path");
  return 1;
}

/* sluice._error_summary(body) -> the core's one line of an error body (a
   JSON document's message, an HTML page's title, a text's first line); "" if
   none. sluice._retry_after(value) -> seconds from now | nil: a Retry-After
   header, both forms. What sluice.openai uses for a fetch's errors, so that
   they read as the core's. */
static int l_error_summary(lua_State *L) {
  size_t len;
  const char *body = luaL_optlstring(L, 1, "", &len);
  char out[256];
  sl_error_summary(body, len, out, sizeof out);
  lua_pushstring(L, out);
  return 1;
}

static int l_retry_after(lua_State *L) {
  const char *v = luaL_optstring(L, 1, NULL);
  double after = v ? retry_after(v) : -1;
  if (after >= 0) lua_pushinteger(L, (lua_Integer)after);
  else lua_pushnil(L);
  return 1;
}

static const luaL_Reg stream_funcs[] = {
    {"stream", l_stream}, {"fetch", l_fetch}, {"_chunk_text", l_chunk_text}, {"trace", l_trace},
    {"_error_summary", l_error_summary}, {"_retry_after", l_retry_after}, {NULL, NULL}};

static void push_upvalues(lua_State *L, int meta) {
  lua_pushvalue(L, meta);
  lua_pushliteral(L, "data");
  lua_pushliteral(L, "event");
  lua_pushliteral(L, "id");
  lua_pushliteral(L, "message");
}

void sl_open_stream(lua_State *L) {
  int meta;
  luaL_newmetatable(L, STREAM_MT);
  meta = lua_gettop(L);
  luaL_setfuncs(L, stream_meta, 0);
  luaL_newlibtable(L, stream_methods);
  push_upvalues(L, meta);
  push_upvalues(L, meta);
  lua_pushcclosure(L, l_iter, N_UP - 2);  /* the iterator: upvalues 1..5 */
  luaL_setfuncs(L, stream_methods, N_UP - 1);
  lua_setfield(L, meta, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, WATCH_MT);
  lua_pushcfunction(L, watch_gc);
  lua_setfield(L, -2, "__gc");
  luaL_newlib(L, watch_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_setfuncs(L, stream_funcs, 0);  /* into the module table, on the top */
}
