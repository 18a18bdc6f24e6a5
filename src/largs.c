/*
** Argument checks shared by every binding (see largs.h).
*/
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "largs.h"
#include "runtime.h"

int sl_argerror(lua_State *L, int arg, const char *fn, const char *fmt, ...) {
  va_list ap;
  luaL_where(L, 1);
  lua_pushfstring(L, "bad argument #%d to '%s' (%s: ", arg, fn, fn);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushliteral(L, ")");
  lua_concat(L, 4);
  return lua_error(L);
}

sl_opts sl_opts_begin(lua_State *L, int idx, int arg, const char *fn) {
  sl_opts o;
  idx = lua_absindex(L, idx);
  if (lua_isnoneornil(L, idx)) {
    lua_newtable(L);
    lua_replace(L, idx);
  }
  if (!lua_istable(L, idx))
    sl_argerror(L, arg, fn, "options must be a table, got %s", luaL_typename(L, idx));
  o.L = L;
  o.idx = idx;
  o.arg = arg;
  o.fn = fn;
  o.prefix = "";
  return o;
}

int sl_opts_error(const sl_opts *o, const char *key, const char *fmt, ...) {
  lua_State *L = o->L;
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return sl_argerror(L, o->arg, o->fn, "option '%s%s' %s", o->prefix, key, lua_tostring(L, -1));
}

void sl_opts_known(const sl_opts *o, const char *const known[]) {
  lua_State *L = o->L;
  lua_pushnil(L);
  while (lua_next(L, o->idx)) {
    int i, ok = 0;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    for (i = 0; k && known[i]; i++) ok |= strcmp(k, known[i]) == 0;
    if (!ok) {
      if (k) sl_argerror(L, o->arg, o->fn, "unknown option '%s%s'", o->prefix, k);
      sl_argerror(L, o->arg, o->fn, "option names are strings, got a %s key%s%s",
                  luaL_typename(L, -2), *o->prefix ? " in " : "", o->prefix);
    }
    lua_pop(L, 1);
  }
}

int sl_opts_nested(const sl_opts *o, const char *key, sl_opts *nested) {
  lua_State *L = o->L;
  lua_getfield(L, o->idx, key);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  if (!lua_istable(L, -1))
    sl_opts_error(o, key, "must be a table, got %s", luaL_typename(L, -1));
  *nested = *o;
  lua_pushfstring(L, "%s%s.", o->prefix, key);  /* alive until the caller pops both */
  nested->prefix = lua_tostring(L, -1);
  lua_insert(L, -2);
  nested->idx = lua_gettop(L);
  return 1;
}

int sl_opts_flag(const sl_opts *o, const char *key, int dflt) {
  lua_State *L = o->L;
  int t = lua_getfield(L, o->idx, key), v = dflt;
  if (t == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
  else if (t != LUA_TNIL)
    sl_opts_error(o, key, "must be true or false, got %s", luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

const char *sl_opts_string(const sl_opts *o, const char *key, size_t *len) {
  lua_State *L = o->L;
  int t = lua_getfield(L, o->idx, key);
  const char *v = NULL;
  if (t == LUA_TSTRING) v = lua_tolstring(L, -1, len);
  else if (t != LUA_TNIL) sl_opts_error(o, key, "must be a string, got %s", luaL_typename(L, -1));
  lua_pop(L, 1);  /* the string stays alive in the table */
  return v;
}

static double seconds_value(lua_State *L, int i, const char **why) {
  double v;
  *why = NULL;
  if (lua_type(L, i) != LUA_TNUMBER) {
    *why = "must be a number of seconds";
    return 0;
  }
  v = lua_tonumber(L, i);
  if (isnan(v)) *why = "must be a number of seconds, not NaN";
  else if (v < 0) *why = "must not be negative";
  else if (v >= SL_NO_LIMIT) v = HUGE_VAL;
  return v;
}

double sl_opts_seconds(const sl_opts *o, const char *key, double dflt) {
  lua_State *L = o->L;
  int t = lua_getfield(L, o->idx, key);
  double v = dflt;
  const char *why;
  if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    v = 0;
  } else if (t != LUA_TNIL) {
    v = seconds_value(L, -1, &why);
    if (why) {
      if (t == LUA_TNUMBER) sl_opts_error(o, key, "%s", why);
      sl_opts_error(o, key, "%s (or false), got %s", why, luaL_typename(L, -1));
    }
  }
  lua_pop(L, 1);
  return v;
}

lua_Integer sl_opts_integer(const sl_opts *o, const char *key, lua_Integer dflt,
                            lua_Integer min) {
  lua_State *L = o->L;
  int t = lua_getfield(L, o->idx, key), isint = 0;
  lua_Integer v = dflt;
  if (t != LUA_TNIL) {
    v = lua_tointegerx(L, -1, &isint);
    if (t != LUA_TNUMBER || !isint)
      sl_opts_error(o, key, "must be an integer, got %s", t == LUA_TNUMBER ? "a fraction"
                                                                     : luaL_typename(L, -1));
    if (v < min) sl_opts_error(o, key, "must be at least %I", min);
  }
  lua_pop(L, 1);
  return v;
}

double sl_check_seconds(lua_State *L, int idx, int arg, const char *fn) {
  const char *why;
  double v = seconds_value(L, idx, &why);
  if (why) sl_argerror(L, arg, fn, "seconds %s", why);
  return v;
}

int sl_has_crlf(const char *s, size_t len) {
  size_t i;
  for (i = 0; i < len; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 1;
  return 0;
}

int sl_is_token(const char *s, size_t len) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  size_t i;
  if (len == 0) return 0;
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c && strchr(extra, c))))
      return 0;
  }
  return 1;
}
