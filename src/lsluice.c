/*
** The module "sluice.core": the C primitives. Scripts `require "sluice"`,
** which is lua/sluice/init.lua: these primitives plus what is written in Lua.
*/
#include <dirent.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <lauxlib.h>

#include "errors.h"
#include "largs.h"
#include "lsluice.h"
#include "redact.h"
#include "runtime.h"
#include "task.h"

/* sluice.error(kind, message [, status [, body]]) -> an error value */
static int l_error(lua_State *L) {
  size_t blen = 0;
  const char *body = luaL_optlstring(L, 4, NULL, &blen);
  sl_error_push(L, luaL_checkstring(L, 1), luaL_checkstring(L, 2),
                (long)luaL_optinteger(L, 3, 0), body, blen);
  return 1;
}

/* sluice.redact(text, secrets) -> text with every secret (a string, or a
   list of strings) replaced by "[redacted]", in one pass. */
static int l_redact(lua_State *L) {
  size_t len, outlen;
  const char *text = luaL_checklstring(L, 1, &len);
  const char **secrets;
  char *out;
  int n, i;
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 1);
    lua_replace(L, 2);
  } else if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 1);
    return 1;
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  n = (int)luaL_len(L, 2);
  secrets = lua_newuserdatauv(L, sizeof *secrets * (size_t)(n ? n : 1), 0);
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 2, i) != LUA_TSTRING) sl_argerror(L, 2, "sluice.redact", "secrets must be strings");
    secrets[i - 1] = lua_tostring(L, -1);  /* alive in the table */
    lua_pop(L, 1);
  }
  out = sl_redact(text, len, secrets, n, &outlen);
  if (!out) return luaL_error(L, "sluice.redact: out of memory");
  lua_pushlstring(L, out, outlen);
  free(out);
  return 1;
}

/* Descriptors this process has open, from /proc/self/fd (-1 if unknown). */
static lua_Integer open_fds(void) {
  lua_Integer n = -1;
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    struct dirent *e;
    n = 0;
    while ((e = readdir(d)) != NULL)
      if (e->d_name[0] != '.') n++;
    closedir(d);
    n--;  /* the directory's own */
  }
  return n;
}

/* sluice._census() -> { streams, fetches, children, timers, stdin, tasks,
   fds, connections, open_fds }: what is alive. fds counts the descriptors
   the runtime holds (connections, children's pipes); open_fds every
   descriptor of the process. Tests assert it is back to its baseline. */
static int l_census(lua_State *L) {
  static const char *const kinds[] = {"streams", "fetches", "children", "timers", "stdin", NULL};
  int i;
  lua_createtable(L, 0, 9);
  for (i = 0; kinds[i]; i++) {
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, kinds[i]);
  }
  sl_runtime_census(sl_rt(L), L);
  lua_pushinteger(L, open_fds());
  lua_setfield(L, -2, "open_fds");
  return 1;
}

/* sluice._fds() -> { [fd] = what it is (readlink of /proc/self/fd/N) }:
   for a test to say which descriptor was left behind. */
static int l_fds(lua_State *L) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  lua_newtable(L);
  if (!d) return 1;
  while ((e = readdir(d)) != NULL) {
    char path[300], target[PATH_MAX];
    ssize_t n;
    if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d)) continue;
    snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    n = readlink(path, target, sizeof target - 1);
    if (n < 0) continue;
    lua_pushlstring(L, target, (size_t)n);
    lua_rawseti(L, -2, atoi(e->d_name));
  }
  closedir(d);
  return 1;
}

/* sluice.isatty(fd) -> boolean: is descriptor fd (0, 1, 2...) a terminal? */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* sluice._drop_connections() -> n: closes the connections kept alive for
   reuse, when no transfer is live (tests start each case from none). */
static int l_drop_connections(lua_State *L) {
  lua_pushinteger(L, sl_curlm_drop_idle(&sl_rt(L)->net));
  return 1;
}

/* sluice._h2_multiplex() -> boolean: do HTTP/2 streams share connections
   with the libcurl loaded (see curlm.c)? Tests assert accordingly. */
static int l_h2_multiplex(lua_State *L) {
  sl_curlm *m = &sl_rt(L)->net;
  char err[256];
  if (sl_curlm_ensure(m, err, sizeof err) != 0) return luaL_error(L, "%s", err);
  lua_pushboolean(L, m->multiplex);
  return 1;
}

/* sluice._trim(): gives the heap's free pages back to the system, so that
   RSS measures what is in use (the soak test compares it to a baseline). */
static int l_trim(lua_State *L) {
  (void)L;
#ifdef __GLIBC__
  malloc_trim(0);
#endif
  return 0;
}

static const luaL_Reg core_funcs[] = {{"error", l_error},
                                      {"redact", l_redact},
                                      {"isatty", l_isatty},
                                      {"_census", l_census},
                                      {"_fds", l_fds},
                                      {"_drop_connections", l_drop_connections},
                                      {"_trim", l_trim},
                                      {"_h2_multiplex", l_h2_multiplex},
                                      {NULL, NULL}};

int luaopen_sluice_core(lua_State *L) {
  sl_error_open(L);
  luaL_newlib(L, core_funcs);
  sl_open_stream(L);
  sl_open_task(L);
  sl_open_stdin(L);
  sl_open_exec(L);
  sl_open_idset(L);
  {  /* sluice.executable: sluice-mock is installed beside it */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
      lua_pushlstring(L, exe, (size_t)n);
      lua_setfield(L, -2, "executable");
    }
  }
  sl_push_wait_sentinel(L);
  lua_setfield(L, -2, "_wait");
#ifdef SLUICE_VERSION
  lua_pushliteral(L, SLUICE_VERSION);
  lua_setfield(L, -2, "version");
#endif
  return 1;
}
