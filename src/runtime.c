/*
** The runtime: the loop and its three handles (the scheduler's check, an idle
** that keeps poll from sleeping while tasks are ready, the signals' async),
** the list of live resources, and the shutdown walk. Every exit path ends in
** sl_runtime_shutdown: end of script, uncaught error, os.exit, SIGINT,
** SIGTERM, SIGHUP, SIGQUIT, and sl_runtime_close for embedders.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>

#include <lauxlib.h>

#include "runtime.h"
#include "task.h"

double sl_now(void) { return (double)uv_hrtime() / 1e9; }

/* ---- resources ----------------------------------------------------------- */

void sl_resource_init(sl_resource *r) {
  sl_list_init(&r->rt_node);
  sl_list_init(&r->task_node);
  r->owner = NULL;
}

void sl_resource_register(sl_runtime *rt, sl_resource *r, const sl_resource_type *type,
                          sl_task *owner) {
  r->type = type;
  r->rt = rt;
  r->owner = owner;
  r->fds = 0;
  sl_list_push(&rt->resources, &r->rt_node);
  if (owner) sl_list_push(&owner->resources, &r->task_node);
  else sl_list_init(&r->task_node);
}

void sl_resource_unregister(sl_resource *r) {
  sl_list_remove(&r->rt_node);
  sl_list_remove(&r->task_node);
  r->owner = NULL;
}

void sl_resource_disown(sl_resource *r) {
  sl_list_remove(&r->task_node);
  r->owner = NULL;
}

void sl_resource_close_list(sl_list *list, sl_close_how how, const char *reason) {
  while (!sl_list_empty(list)) {
    sl_resource *r = sl_container_of(list->next, sl_resource, task_node);
    r->type->close(r, how, reason);
    if (list->next == &r->task_node) sl_resource_disown(r);  /* always progress */
  }
}

static void close_resources(sl_runtime *rt, const char *reason) {
  while (!sl_list_empty(&rt->resources)) {
    sl_resource *r = sl_container_of(rt->resources.next, sl_resource, rt_node);
    r->type->close(r, SL_CLOSE_SHUTDOWN, reason);
    if (rt->resources.next == &r->rt_node) sl_resource_unregister(r);
  }
}

void sl_runtime_census(sl_runtime *rt, lua_State *L) {
  sl_list *n;
  int tasks = 0, sockets = sl_curlm_sockets(&rt->net), fds = sockets;
  for (n = rt->resources.next; n != &rt->resources; n = n->next) {
    sl_resource *r = sl_container_of(n, sl_resource, rt_node);
    lua_Integer count = lua_getfield(L, -1, r->type->name) == LUA_TNUMBER ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    lua_pushinteger(L, count + 1);
    lua_setfield(L, -2, r->type->name);
    fds += r->fds;
  }
  for (n = rt->tasks.next; n != &rt->tasks; n = n->next) tasks++;
  lua_pushinteger(L, tasks);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, fds);
  lua_setfield(L, -2, "fds");
  lua_pushinteger(L, sockets);
  lua_setfield(L, -2, "connections");
}

/* ---- exit status and the shutdown walk ------------------------------------ */

void sl_runtime_set_exit(sl_runtime *rt, int code, int fixed) {
  if (rt->exit_fixed) return;
  rt->exit_code = code;
  rt->exit_fixed = fixed;
}

void sl_runtime_shutdown(sl_runtime *rt, const char *reason) {
  if (rt->stopping) return;
  rt->stopping = 1;
  rt->stop_asked = 1;
  close_resources(rt, reason);
  if (rt->L) sl_task_close_all(rt, reason);  /* their <close> variables run */
  close_resources(rt, reason);               /* what those may have opened */
  uv_check_stop(&rt->check);
  uv_idle_stop(&rt->idle);
  uv_stop(&rt->uv);
}

/*
** Streams a script dropped while open are closed by the collector, which sees
** a small userdata, not the socket and the queue behind it. In the
** generational mode an old one waits for a major collection, which the Lua
** heap alone may not bring for minutes: a soak of 1,000 streams came to hold
** 14,000 dropped ones (14,000 sockets, 1 GB). So the runtime runs a full
** collection when the live transfers have doubled since the last one (from
** 256: amortized, a constant cost per stream), and when the queued events
** reach the limit that pauses every stream (at most once a second).
*/
#define GC_MARK_MIN 256

void sl_runtime_collect(sl_runtime *rt, lua_State *L) {
  lua_gc(L, LUA_GCCOLLECT);
  rt->gc_wanted = 0;
  rt->gc_last = sl_now();
  rt->gc_mark = 2 * rt->net.transfers > GC_MARK_MIN ? 2 * rt->net.transfers : GC_MARK_MIN;
}

static void on_check(uv_check_t *h) {
  sl_runtime *rt = h->data;
  if (rt->gc_wanted && rt->L && !rt->stopping && sl_now() - rt->gc_last >= 1) sl_runtime_collect(rt, rt->L);
  sl_task_run_ready(rt);
  if (rt->stop_asked && !rt->interrupted) sl_runtime_shutdown(rt, "shutdown");
}

/* ---- signals -----------------------------------------------------------------
** Like lua.c: the handler sets a hook on the running coroutine, so a script
** busy in a loop that never waits is interrupted too; and it wakes the loop,
** for the usual case of a script waiting. Either way the shutdown walk runs
** before the process ends with 128 + the signal. A second signal while that
** is under way gets the default action. */

static const int handled_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
static sl_runtime *signal_rt;           /* the handler's only way in */
static volatile sig_atomic_t signal_seen;

/* Raised at every count while Lua runs, so a pcall cannot swallow it. */
static void on_signal_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  luaL_error(L, "interrupted by signal %d", (int)signal_seen);
}

static void on_signal(int signum) {
  sl_runtime *rt = signal_rt;
  if (signal_seen || !rt) {  /* a second one, or the loop is gone: default action */
    signal(signum, SIG_DFL);
    raise(signum);
    return;
  }
  signal_seen = signum;
  rt->interrupted = 1;
  if (rt->current && rt->current->co)
    lua_sethook(rt->current->co, on_signal_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  uv_async_send(&rt->wakeup);
}

static void on_wakeup(uv_async_t *h) {
  sl_runtime *rt = h->data;
  sl_list *n;
  if (!signal_seen || rt->stopping) return;
  /* The hook has done its work (the busy task yielded or ended): the
     <close> variables that run now must not be interrupted too. */
  for (n = rt->tasks.next; n != &rt->tasks; n = n->next) {
    sl_task *t = sl_container_of(n, sl_task, all_node);
    if (t->co) lua_sethook(t->co, NULL, 0, 0);
  }
  sl_runtime_set_exit(rt, 128 + signal_seen, 1);
  sl_runtime_shutdown(rt, "interrupted");
}

static void handle_signals(sl_runtime *rt) {
  struct sigaction sa;
  size_t i;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  signal_rt = rt;
  for (i = 0; i < sizeof handled_signals / sizeof handled_signals[0]; i++)
    sigaction(handled_signals[i], &sa, NULL);
}

/* ---- the Lua state ------------------------------------------------------------ */

/* lua_newstate leaves out what luaL_newstate adds: these behave as the stock
   lua does. An error outside any protected call ends the process. */
static int on_panic(lua_State *L) {
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                   : "error object is not a string";
  fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n", msg);
  fflush(stderr);
  return 0;
}

/* Warnings are off until warn("@on"); a message may come in pieces (tocont),
   printed on one line. */
static void on_warn(void *ud, const char *msg, int tocont) {
  sl_runtime *rt = ud;
  if (!rt->warn_cont && !tocont && msg[0] == '@') {  /* a control message */
    if (strcmp(msg, "@on") == 0) rt->warn_on = 1;
    else if (strcmp(msg, "@off") == 0) rt->warn_on = 0;
    return;
  }
  if (!rt->warn_on) return;
  if (!rt->warn_cont) fputs("Lua warning: ", stderr);
  fputs(msg, stderr);
  if (!tocont) fputs("\n", stderr);
  fflush(stderr);
  rt->warn_cont = (unsigned char)tocont;
}

/* ---- life of the runtime ------------------------------------------------------ */

int sl_runtime_init(sl_runtime *rt) {
  memset(rt, 0, sizeof *rt);
  rt->gc_mark = GC_MARK_MIN;
  sl_list_init(&rt->ready);
  sl_list_init(&rt->tasks);
  sl_list_init(&rt->resources);
  {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
      rt->fd_limit = rl.rlim_cur;
  }
  if (uv_loop_init(&rt->uv) != 0) return -1;
  if (sl_curlm_init(&rt->net, &rt->uv) != 0 || uv_check_init(&rt->uv, &rt->check) != 0 ||
      uv_idle_init(&rt->uv, &rt->idle) != 0 ||
      uv_async_init(&rt->uv, &rt->wakeup, on_wakeup) != 0)
    return -1;
  rt->check.data = rt->wakeup.data = rt;
  if (uv_check_start(&rt->check, on_check) != 0) return -1;
  rt->L = lua_newstate(sl_pool_alloc, &rt->pool);
  if (!rt->L) return -1;
  lua_atpanic(rt->L, on_panic);
  lua_setwarnf(rt->L, on_warn, rt);
  *(sl_runtime **)lua_getextraspace(rt->L) = rt;
  handle_signals(rt);
  return 0;
}

int sl_runtime_run(sl_runtime *rt, int nargs) {
  lua_State *L = rt->L;
  const char *busy = getenv("SLUICE_BUSY_POLL");
  rt->main = sl_task_spawn(L, nargs);
  lua_pop(L, 1);
  if (busy && *busy && strcmp(busy, "0") != 0) {
    /* Opt-in: never sleep in poll, so a packet costs no wake-up (about 45 us
       per hop on a VM); spins one CPU for as long as the script runs. */
    while (!rt->stopping && uv_run(&rt->uv, UV_RUN_NOWAIT) != 0) {
    }
  } else {
    uv_run(&rt->uv, UV_RUN_DEFAULT);
  }
  return rt->exit_code;
}

/* Shutdown order: the walk, Lua (its __gc frees what is left), curl while the
   loop exists, then the loop until every handle is closed and every child
   killed by the walk has been reaped. */
int sl_runtime_close(sl_runtime *rt) {
  if (rt->L) {
    sl_runtime_shutdown(rt, "shutdown");
    lua_close(rt->L);
    rt->L = NULL;
  }
  signal_rt = NULL;  /* from here on a signal takes its default action */
  close_resources(rt, "shutdown");
  sl_pool_free(&rt->pool);
  sl_curlm_close(&rt->net);
  uv_close((uv_handle_t *)&rt->check, NULL);
  uv_close((uv_handle_t *)&rt->idle, NULL);
  uv_close((uv_handle_t *)&rt->wakeup, NULL);
  uv_run(&rt->uv, UV_RUN_DEFAULT);
  if (uv_loop_close(&rt->uv) != 0) {
    uv_run(&rt->uv, UV_RUN_DEFAULT);
    if (uv_loop_close(&rt->uv) != 0) fprintf(stderr, "sluice: the loop did not close\n");
  }
  return rt->exit_code;
}
