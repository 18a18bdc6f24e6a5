/*
** Error values shared by every part of the core: one metatable, one
** constructor; and the one-line summary of an error body. Scripts compare
** err.kind; tostring(err) reads the message once.
*/
#define _GNU_SOURCE  /* memmem */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>

#include "errors.h"
#include "openai_chunk.h"

static int error_tostring(lua_State *L) {
  size_t klen;
  const char *kind, *msg;
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  kind = luaL_optlstring(L, -2, "error", &klen);
  msg = luaL_optstring(L, -1, "(no message)");
  if (strncmp(msg, kind, klen) == 0 && (msg[klen] == ' ' || msg[klen] == ':'))
    lua_pushstring(L, msg);  /* "http 503: ..." already says what it is */
  else
    lua_pushfstring(L, "%s: %s", kind, msg);
  return 1;
}

void sl_error_open(lua_State *L) {
  if (luaL_newmetatable(L, SL_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}

void sl_error_push(lua_State *L, const char *kind, const char *message,
                   long status, const char *body, size_t body_len) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, message);
  lua_setfield(L, -2, "message");
  if (status > 0) {
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
  }
  if (body) {
    lua_pushlstring(L, body, body_len);
    lua_setfield(L, -2, "body");
  }
  luaL_setmetatable(L, SL_ERROR_MT);
}

/* ---- summaries of error bodies -------------------------------------------------- */

/* Appends s (len bytes) to out with runs of whitespace as one space and
   control characters dropped; "..." when it does not fit. */
static void put_collapsed(char *out, size_t n, const char *s, size_t len) {
  size_t w = strlen(out), i;
  int space = w > 0 && out[w - 1] == ' ';
  for (i = 0; i < len && w + 1 < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (isspace(c)) {
      if (!space && w > 0) out[w++] = ' ', space = 1;
    } else if (c >= 0x20 && c != 0x7f) {
      out[w++] = (char)c;
      space = 0;
    }
  }
  if (i < len && n > 4) {  /* cut */
    w = w > n - 4 ? n - 4 : w;
    memcpy(out + w, "...", 3);
    w += 3;
  }
  while (w > 0 && out[w - 1] == ' ') w--;
  out[w] = '\0';
}

/* The JSON string value of the first "key": "..." in body, unescaped into
   buf; its length, or 0. A scan, not a parse: good for error documents. */
static size_t json_string_field(const char *body, size_t len, const char *key, char *buf,
                                size_t cap) {
  char quoted[32];
  size_t qlen = (size_t)snprintf(quoted, sizeof quoted, "\"%s\"", key);
  const char *p = body, *end = body + len;
  while ((p = memmem(p, (size_t)(end - p), quoted, qlen)) != NULL) {
    const char *q = p + qlen, *v;
    p = q;
    while (q < end && isspace((unsigned char)*q)) q++;
    if (q >= end || *q != ':') continue;
    q++;
    while (q < end && isspace((unsigned char)*q)) q++;
    if (q >= end || *q != '"') continue;
    v = ++q;
    while (q < end && *q != '"') q += *q == '\\' ? 2 : 1;
    if (q >= end) return 0;
    if ((size_t)(q - v) >= cap) q = v + cap / 2;  /* a long message: its start */
    {
      size_t n = sl_json_unescape(v, (size_t)(q - v), buf);
      return n == (size_t)-1 ? 0 : n;
    }
  }
  return 0;
}

void sl_error_excerpt(const char *s, size_t len, char *out, size_t n) {
  if (n == 0) return;
  out[0] = '\0';
  if (s) put_collapsed(out, n, s, len);
}

void sl_error_summary(const char *body, size_t len, char *out, size_t n) {
  char buf[1024];
  size_t m, i = 0;
  out[0] = '\0';
  if (!body || n == 0) return;
  while (i < len && isspace((unsigned char)body[i])) i++;
  body += i;
  len -= i;
  if (len && (body[0] == '{' || body[0] == '[')) {  /* JSON: its message */
    if ((m = json_string_field(body, len, "message", buf, sizeof buf)) > 0 ||
        (m = json_string_field(body, len, "error", buf, sizeof buf)) > 0 ||
        (m = json_string_field(body, len, "detail", buf, sizeof buf)) > 0)
      put_collapsed(out, n, buf, m);
    return;
  }
  if (len && body[0] == '<') {  /* HTML: its title, else its first text */
    const char *t = memmem(body, len, "<title>", 7), *e;
    if (!t) t = memmem(body, len, "<TITLE>", 7);
    if (t && (e = memchr(t + 7, '<', len - (size_t)(t + 7 - body))) != NULL) {
      put_collapsed(out, n, t + 7, (size_t)(e - t - 7));
      if (out[0]) return;
    }
    for (i = 0; i < len && !out[0];) {  /* the first text between tags */
      const char *gt = memchr(body + i, '>', len - i), *lt;
      if (!gt) break;
      i = (size_t)(gt - body) + 1;
      lt = memchr(body + i, '<', len - i);
      put_collapsed(out, n, body + i, lt ? (size_t)(lt - body) - i : len - i);
      if (lt) i = (size_t)(lt - body);
    }
    return;
  }
  {  /* text: its first line */
    const char *nl = memchr(body, '\n', len);
    put_collapsed(out, n, body, nl ? (size_t)(nl - body) : len);
  }
}
