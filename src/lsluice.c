/*
** The module "sluice.core": the C primitives. Scripts `require "sluice"`,
** which is lua/sluice/init.lua: these primitives plus what is written in Lua.
*/
#include <limits.h>
#include <unistd.h>

#include <lauxlib.h>

#include "errors.h"
#include "lsluice.h"
#include "task.h"

/* sluice._error(kind, message [, status [, body]]) -> an error value */
static int l_error(lua_State *L) {
  size_t blen = 0;
  const char *body = luaL_optlstring(L, 4, NULL, &blen);
  sl_error_push(L, luaL_checkstring(L, 1), luaL_checkstring(L, 2),
                (long)luaL_optinteger(L, 3, 0), body, blen);
  return 1;
}

int luaopen_sluice_core(lua_State *L) {
  sl_error_open(L);
  lua_newtable(L);
  sl_open_stream(L);
  sl_open_task(L);
  sl_open_stdin(L);
  sl_open_exec(L);
  {  /* sluice.executable: sluice-mock is installed beside it */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
      lua_pushlstring(L, exe, (size_t)n);
      lua_setfield(L, -2, "executable");
    }
  }
  lua_pushcfunction(L, l_error);
  lua_setfield(L, -2, "error");
  sl_push_wait_sentinel(L);
  lua_setfield(L, -2, "_wait");
#ifdef SLUICE_VERSION
  lua_pushliteral(L, SLUICE_VERSION);
  lua_setfield(L, -2, "version");
#endif
  return 1;
}
