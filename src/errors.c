/*
** Error values shared by every part of the core: one metatable, one
** constructor. Scripts compare err.kind; tostring(err) reads "kind: message".
*/
#include <lauxlib.h>

#include "errors.h"

static int error_tostring(lua_State *L) {
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  lua_pushfstring(L, "%s: %s", luaL_optstring(L, -2, "error"),
                  luaL_optstring(L, -1, "(no message)"));
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
