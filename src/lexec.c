/*
** The Lua binding of child processes: sluice.exec(argv, opts) runs a program
** without blocking other tasks and returns { code | signal, stdout, stderr,
** truncated } or nil, err. No shell unless opts.shell = true. opts: cwd, env,
** stdin (a string), timeout, max_output, stdout/stderr ("pipe" or
** "inherit"). The child itself is exec.c's: a resource of the calling task.
*/
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "errors.h"
#include "exec.h"
#include "largs.h"
#include "lsluice.h"
#include "task.h"

#define DEFAULT_MAX_OUTPUT (8u << 20)
#define PROC_MT "sluice.process"  /* a box holding the sl_proc while the task waits */

static const char *const known_opts[] = {"shell", "cwd", "timeout", "env", "stdin",
                                         "max_output", "stdout", "stderr", NULL};

/* opts.stdout / opts.stderr: "pipe" (collected, the default) or "inherit"
   (the child writes to sluice's own, as it goes). */
static int read_inherit(const sl_opts *op, const char *key) {
  const char *v = sl_opts_string(op, key, NULL);
  if (!v || strcmp(v, "pipe") == 0) return 0;
  if (strcmp(v, "inherit") == 0) return 1;
  return sl_opts_error(op, key, "must be \"pipe\" or \"inherit\"");
}

static void exec_cleanup(sl_task *t) {
  sl_proc *p = t->wait_data;
  if (p->waiter == t) p->waiter = NULL;
}

/* The box's __gc (and the cancelled task's unwinding): the wait is abandoned;
   the child is killed if it still runs, and freed when libuv is done. */
static int box_gc(lua_State *L) {
  sl_proc **box = luaL_checkudata(L, 1, PROC_MT);
  if (*box) {
    sl_proc_abandon(*box);
    *box = NULL;
  }
  return 0;
}

/* Stack: 1 = argv, 2 = opts, 3 = the box. */
static int exec_k(lua_State *L, int status, lua_KContext ctx) {
  sl_proc *p = *(sl_proc **)luaL_checkudata(L, 3, PROC_MT);
  sl_task *t = sl_task_current(L, "sluice.exec");
  (void)ctx;
  if (status == LUA_YIELD && t->cancelled) {
    sl_proc_kill(p);  /* at once; the box's __gc frees the state later */
    sl_task_check_cancel(L, t);
  }
  if (!sl_proc_finished(p)) {
    p->waiter = t;
    return sl_task_wait(L, t, exec_cleanup, p, 0, exec_k);
  }
  if (p->timed_out) {
    lua_pushnil(L);
    sl_error_push(L, "timeout", "the program ran out of time and was killed", 0, NULL, 0);
    return 2;
  }
  lua_createtable(L, 0, 5);
  if (p->term_signal) {
    lua_pushinteger(L, p->term_signal);
    lua_setfield(L, -2, "signal");
  } else {
    lua_pushinteger(L, p->exit_status);
    lua_setfield(L, -2, "code");
  }
  lua_pushlstring(L, p->output[0] ? p->output[0] : "", p->len[0]);
  lua_setfield(L, -2, "stdout");
  lua_pushlstring(L, p->output[1] ? p->output[1] : "", p->len[1]);
  lua_setfield(L, -2, "stderr");
  if (p->truncated) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "truncated");
  }
  return 1;
}

/* A NULL-terminated array of "name=value" for opts.env, its strings kept
   alive in a table pushed below it; NULL (nothing pushed) without env. */
static char **build_env(lua_State *L, const sl_opts *op) {
  int e, count = 0, k;
  char **env;
  lua_getfield(L, op->idx, "env");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (!lua_istable(L, -1)) sl_opts_error(op, "env", "must be a table, got %s", luaL_typename(L, -1));
  e = lua_gettop(L);
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, e)) {
    size_t kl, vl;
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &kl) : NULL;
    const char *value = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vl) : NULL;
    if (!name || !value)
      sl_opts_error(op, "env", "must map names to values, both strings");
    if (!kl || strlen(name) != kl || strchr(name, '=') || strlen(value) != vl)
      sl_opts_error(op, "env", "has a name that is empty or holds '=' or NUL, or a value with NUL");
    lua_pushvalue(L, -2);
    lua_pushliteral(L, "=");
    lua_pushvalue(L, -3);
    lua_concat(L, 3);
    lua_rawseti(L, e + 1, ++count);
    lua_pop(L, 1);
  }
  env = lua_newuserdatauv(L, sizeof *env * (size_t)(count + 1), 0);
  for (k = 1; k <= count; k++) {
    lua_rawgeti(L, e + 1, k);
    env[k - 1] = (char *)lua_tostring(L, -1);  /* alive in the table */
    lua_pop(L, 1);
  }
  env[count] = NULL;
  return env;
}

static int l_exec(lua_State *L) {
  sl_runtime *rt = sl_rt(L);
  sl_task *t = sl_task_current(L, "sluice.exec");
  sl_exec_opts eo;
  sl_opts op;
  sl_proc *p, **box;
  const char **args;
  int i, n, rc;

  lua_settop(L, 2);
  op = sl_opts_begin(L, 2, 2, "sluice.exec");
  sl_opts_known(&op, known_opts);
  if (sl_opts_flag(&op, "shell", 0)) {  /* a line for /bin/sh */
    size_t len;
    const char *line = lua_tolstring(L, 1, &len);
    if (lua_type(L, 1) != LUA_TSTRING)
      sl_argerror(L, 1, "sluice.exec", "a command line (string) expected with shell = true, got %s",
                  luaL_typename(L, 1));
    if (strlen(line) != len) sl_argerror(L, 1, "sluice.exec", "a command line must not contain NUL");
    lua_createtable(L, 3, 0);
    lua_pushliteral(L, "/bin/sh");
    lua_rawseti(L, -2, 1);
    lua_pushliteral(L, "-c");
    lua_rawseti(L, -2, 2);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 3);
    lua_replace(L, 1);
  }
  if (lua_type(L, 1) != LUA_TTABLE)
    sl_argerror(L, 1, "sluice.exec", "argv (a table of strings) expected, got %s%s", luaL_typename(L, 1),
                lua_type(L, 1) == LUA_TSTRING ? " (a command line needs shell = true)" : "");
  memset(&eo, 0, sizeof eo);
  eo.cwd = sl_opts_string(&op, "cwd", NULL);
  eo.timeout = sl_opts_seconds(&op, "timeout", 0);
  eo.input = sl_opts_string(&op, "stdin", &eo.input_len);
  eo.max_output = (size_t)sl_opts_integer(&op, "max_output", DEFAULT_MAX_OUTPUT, 0);
  eo.inherit[0] = read_inherit(&op, "stdout");
  eo.inherit[1] = read_inherit(&op, "stderr");
  n = (int)luaL_len(L, 1);
  if (n < 1) sl_argerror(L, 1, "sluice.exec", "argv is empty");
  args = lua_newuserdatauv(L, sizeof *args * (size_t)(n + 1), 0);  /* index 3 */
  for (i = 1; i <= n; i++) {
    size_t len;
    if (lua_rawgeti(L, 1, i) != LUA_TSTRING) sl_argerror(L, 1, "sluice.exec", "argv[%d] is not a string", i);
    args[i - 1] = lua_tolstring(L, -1, &len);
    if (strlen(args[i - 1]) != len) sl_argerror(L, 1, "sluice.exec", "argv[%d] contains NUL", i);
    lua_pop(L, 1);  /* alive in argv */
  }
  args[n] = NULL;
  eo.argv = args;
  eo.env = build_env(L, &op);
  sl_task_check_cancel(L, t);
  if (rt->stopping) luaL_error(L, "sluice.exec: the runtime is shutting down");

  box = lua_newuserdatauv(L, sizeof *box, 0);  /* from here on __gc owns p */
  *box = NULL;
  luaL_setmetatable(L, PROC_MT);
  p = sl_proc_spawn(rt, t, &eo, &rc);
  if (!p) {
    lua_pushnil(L);
    if (rc == UV_ENOMEM) return luaL_error(L, "sluice.exec: out of memory");
    lua_pushfstring(L, "cannot run %s: %s", args[0], uv_strerror(rc));
    sl_error_push(L, "exec", lua_tostring(L, -1), 0, NULL, 0);
    lua_remove(L, -2);
    return 2;
  }
  *box = p;
  lua_replace(L, 3);  /* the box takes the args' place */
  lua_settop(L, 3);
  return exec_k(L, LUA_OK, 0);
}

static const luaL_Reg exec_funcs[] = {{"exec", l_exec}, {NULL, NULL}};

void sl_open_exec(lua_State *L) {
  luaL_newmetatable(L, PROC_MT);
  lua_pushcfunction(L, box_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_setfuncs(L, exec_funcs, 0);
}
