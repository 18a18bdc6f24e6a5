/*
** The Lua binding of tasks: sluice.spawn, task:join, task:cancel, sluice.sleep,
** sluice.now, and the wait-for-any primitive that sluice.first is built on.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "errors.h"
#include "largs.h"
#include "lsluice.h"
#include "task.h"

#define TASK_MT "sluice.task"

static sl_task *check_task(lua_State *L, int i) {
  return *(sl_task **)luaL_checkudata(L, i, TASK_MT);
}

static int l_spawn(lua_State *L) {
  if (lua_type(L, 1) != LUA_TFUNCTION) {  /* or a value with __call */
    if (luaL_getmetafield(L, 1, "__call") == LUA_TNIL)
      sl_argerror(L, 1, "sluice.spawn", "function expected, got %s", luaL_typename(L, 1));
    lua_pop(L, 1);
  }
  sl_task_spawn(L, lua_gettop(L) - 1);
  return 1;
}

/* ---- waiting for tasks ---------------------------------------------------------- */

typedef struct join_set {
  int n;
  sl_joinwait nodes[1];
} join_set;

static void join_cleanup(sl_task *t) {
  join_set *js = t->wait_data;
  int i;
  for (i = 0; i < js->n; i++) sl_list_remove(&js->nodes[i].node);
  free(js);
}

/* Waits until one of the tasks at stack indices [first, first+n) is done. */
static int wait_tasks(lua_State *L, int first, int n, lua_KContext ctx,
                      lua_KFunction k) {
  sl_task *me = sl_task_current(L, "join");
  join_set *js;
  int i;
  sl_task_check_cancel(L, me);
  js = malloc(sizeof *js + sizeof js->nodes[0] * (size_t)(n > 0 ? n - 1 : 0));
  if (!js) luaL_error(L, "out of memory");
  js->n = n;
  for (i = 0; i < n; i++) {
    sl_task *target = check_task(L, first + i);
    js->nodes[i].waiter = me;
    sl_list_push(&target->joiners, &js->nodes[i].node);
  }
  return sl_task_wait(L, me, join_cleanup, js, ctx, k);
}

static int join_k(lua_State *L, int status, lua_KContext ctx) {
  sl_task *t = check_task(L, 1);
  (void)ctx;
  if (status == LUA_YIELD) sl_task_check_cancel(L, sl_rt(L)->current);
  if (t->done) return sl_task_push_results(L, t);
  if (t == sl_rt(L)->current) luaL_error(L, "a task cannot join itself");
  return wait_tasks(L, 1, 1, 0, join_k);
}

static int l_join(lua_State *L) {
  lua_settop(L, 1);
  return join_k(L, LUA_OK, 0);
}

/* sluice._wait_any(list) -> i: the index of a finished task, waiting if none is. */
static int wait_any_k(lua_State *L, int status, lua_KContext ctx) {
  int n = (int)luaL_len(L, 1), i;
  if (status == LUA_YIELD) {
    sl_task_check_cancel(L, sl_rt(L)->current);
    lua_settop(L, 1);
  }
  luaL_checkstack(L, n, "too many tasks");
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    if (check_task(L, -1)->done) {
      lua_pushinteger(L, i);
      return 1;
    }
  }
  if (n == 0) luaL_argerror(L, 1, "empty list of tasks");
  return wait_tasks(L, 2, n, ctx, wait_any_k);
}

static int l_wait_any(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  return wait_any_k(L, LUA_OK, 0);
}

static int l_cancel(lua_State *L) {
  sl_task *t = check_task(L, 1);
  lua_pushboolean(L, sl_task_cancel(t, luaL_optstring(L, 2, "cancelled")));
  return 1;
}

static int l_status(lua_State *L) {
  sl_task *t = check_task(L, 1);
  const char *st = !t->done ? (t->cancelled ? "cancelling" : "running")
                   : !t->failed ? "done" : t->cancelled ? "cancelled" : "failed";
  lua_pushstring(L, st);
  return 1;
}

static int l_gc(lua_State *L) {
  sl_task **ud = luaL_checkudata(L, 1, TASK_MT);
  sl_task *t = *ud;
  if (!t) return 0;
  *ud = NULL;
  sl_task_collected(t);  /* a failure nobody joined: reported, exit status 1 */
  sl_task_free(t);
  return 0;
}

static int l_tostring(lua_State *L) {
  lua_pushfstring(L, "sluice.task: %p", (void *)check_task(L, 1));
  return 1;
}

/* ---- time ------------------------------------------------------------------------ */

static void sleep_cleanup(sl_task *t) { sl_task_timer_stop(t); }

/* Stack: 1 = the deadline (HUGE_VAL: sleeps until cancelled). */
static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  sl_task *t = sl_task_current(L, "sluice.sleep");
  double left = lua_tonumber(L, 1) - sl_now();
  int rc;
  (void)ctx;
  sl_task_check_cancel(L, t);
  if (status == LUA_YIELD && (sl_task_timer_fired(t) || left <= 0)) return 0;
  if ((rc = sl_task_timer(t, left > 0 ? left : 0)) != 0)
    luaL_error(L, "sluice.sleep: uv_timer_start: %s", uv_strerror(rc));
  return sl_task_wait(L, t, sleep_cleanup, NULL, 0, sleep_k);
}

static int l_sleep(lua_State *L) {
  double s = sl_check_seconds(L, 1, 1, "sluice.sleep");
  lua_settop(L, 0);
  lua_pushnumber(L, sl_now() + s);
  return sleep_k(L, LUA_OK, 0);
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, sl_now());
  return 1;
}

/* ---- os.exit ----------------------------------------------------------------------
** Goes through the shutdown walk, as every exit does: streams closed, children
** killed and reaped, every suspended task closed so its <close> variables
** run, this one's too, and the Lua state closed (its finalizers run). The
** calling task simply never resumes. */

static void exit_cleanup(sl_task *t) { (void)t; }

static int exit_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return sl_task_wait(L, sl_rt(L)->current, exit_cleanup, NULL, ctx, exit_k);
}

static int l_os_exit(lua_State *L) {
  sl_runtime *rt = sl_rt(L);
  sl_task *t = rt->current;
  int status;
  if (lua_isboolean(L, 1)) status = lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE;
  else status = (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
  if (rt->stopping) {
    /* From a <close> handler the shutdown walk runs: the status is the
       script's to say (batch's "1: interrupted"); the walk goes on. */
    rt->exit_code = status;
    rt->exit_fixed = 1;
    return luaL_error(L, "os.exit(%d) while shutting down", status);
  }
  sl_runtime_set_exit(rt, status, 1);
  rt->stop_asked = 1;
  if (t && (L == t->co || lua_isyieldable(L)))
    return sl_task_wait(L, t, exit_cleanup, NULL, 0, exit_k);
    /* Not from a task, or where it cannot yield (a metamethod, a C function in
     the way): the walk now, and the end. */
  sl_runtime_shutdown(rt, "exit");
  fflush(NULL);
  exit(rt->exit_code);
  return 0;
}

/* task:background([flag]) -> task: a background task (true, the default)
   does not keep the script running: when the main task and every other
   foreground task have finished, it is closed with the rest. */
static int l_background(lua_State *L) {
  sl_task *t = check_task(L, 1);
  int flag = lua_isnoneornil(L, 2) ? 1 : (luaL_checktype(L, 2, LUA_TBOOLEAN), lua_toboolean(L, 2));
  sl_task_background(t, flag);
  lua_settop(L, 1);
  return 1;
}

static const luaL_Reg task_methods[] = {
    {"join", l_join}, {"cancel", l_cancel}, {"status", l_status}, {"background", l_background},
    {NULL, NULL}};

static const luaL_Reg task_meta[] = {{"__gc", l_gc}, {"__tostring", l_tostring}, {NULL, NULL}};

static const luaL_Reg task_funcs[] = {{"spawn", l_spawn},
                                      {"sleep", l_sleep},
                                      {"now", l_now},
                                      {"_wait_any", l_wait_any},
                                      {NULL, NULL}};

void sl_open_task(lua_State *L) {
  luaL_newmetatable(L, TASK_MT);
  luaL_setfuncs(L, task_meta, 0);
  luaL_newlib(L, task_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_setfuncs(L, task_funcs, 0);  /* into the module table, on the top */
}

/* Replaces os.exit with one that goes through the shutdown walk. */
void sl_open_exit(lua_State *L) {
  lua_getglobal(L, "os");
  if (lua_istable(L, -1)) {
    lua_pushcfunction(L, l_os_exit);
    lua_setfield(L, -2, "exit");
  }
  lua_pop(L, 1);
}
