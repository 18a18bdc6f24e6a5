/*
** The scheduler. Tasks are Lua coroutines; a waiting primitive registers the
** current task (sl_task_wait) and yields; callbacks call sl_task_wake, which
** undoes the registration and queues the task; on_check resumes queued tasks
** once per loop pass, after curl and libuv callbacks have returned.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>

#include <lauxlib.h>

#include "errors.h"
#include "task.h"
#include "stream.h"

#define TASK_MT "sluice.task"

double sl_now(void) { return (double)uv_hrtime() / 1e9; }

static void free_handle(uv_handle_t *h) { free(h); }

static void shutdown_runtime(sl_runtime *rt);

/* ---- waking and waiting -------------------------------------------------- */

static void on_idle(uv_idle_t *h) { (void)h; }

void sl_task_wake(sl_task *t) {
  sl_runtime *rt = t->rt;
  if (t->done || t->queued) return;
  if (t->wait_cleanup) {
    sl_wait_cleanup cleanup = t->wait_cleanup;
    t->wait_cleanup = NULL;
    cleanup(t);
  }
  t->wait_data = NULL;
  t->queued = 1;
  sl_list_push(&rt->ready, &t->ready_node);
  /* An active idle handle keeps the next loop pass from blocking in poll. */
  uv_idle_start(&rt->idle, on_idle);
}

/* The value a wait inside a nested coroutine yields: the coroutine.resume and
   wrap of lua/sluice/init.lua pass it up to the task, which yields it to us. */
static char wait_sentinel;

void sl_push_wait_sentinel(lua_State *L) { lua_pushlightuserdata(L, &wait_sentinel); }

int sl_task_wait(lua_State *L, sl_task *t, sl_wait_cleanup cleanup, void *data,
                 lua_KContext ctx, lua_KFunction k) {
  t->wait_cleanup = cleanup;
  t->wait_data = data;
  if (L == t->co) return lua_yieldk(L, 0, ctx, k);
  sl_push_wait_sentinel(L);
  return lua_yieldk(L, 1, ctx, k);
}

static void on_task_timer(uv_timer_t *h) {
  sl_task *t = h->data;
  t->timer_fired = 1;
  sl_task_wake(t);
}

int sl_task_timer(sl_task *t, double seconds) {
  double ms = seconds * 1000.0;
  if (!t->timer) {
    t->timer = malloc(sizeof *t->timer);
    if (!t->timer || uv_timer_init(&t->rt->uv, t->timer) != 0) {
      free(t->timer);
      t->timer = NULL;
      return -1;
    }
    t->timer->data = t;
  }
  t->timer_fired = 0;
  if (ms < 0) ms = 0;
  return uv_timer_start(t->timer, on_task_timer, (uint64_t)(ms + 0.999), 0);
}

void sl_task_timer_stop(sl_task *t) {
  if (t->timer) uv_timer_stop(t->timer);
}

/* A coroutine the task resumed (a generator, say) may wait too: its wait is
   passed up to the task by sluice's coroutine.resume/wrap. */
sl_task *sl_task_current(lua_State *L, const char *what) {
  sl_runtime *rt = sl_rt(L);
  sl_task *t = rt->current;
  if (!t)
    luaL_error(L, "%s must be called from a sluice task", what);
  if (t->co != L && !lua_isyieldable(L))
    luaL_error(L, "%s cannot wait here (not yieldable: a metamethod or a C "
                  "function is in the way)", what);
  return t;
}

static void push_cancel_error(lua_State *L, sl_task *t) {
  char msg[256];
  snprintf(msg, sizeof msg, "task cancelled: %s",
           t->cancel_reason ? t->cancel_reason : "cancelled");
  sl_error_push(L, "cancelled", msg, 0, NULL, 0);
}

void sl_task_check_cancel(lua_State *L, sl_task *t) {
  if (t->cancelled) {
    push_cancel_error(L, t);
    lua_error(L);
  }
}

/* ---- task lifecycle -------------------------------------------------------- */

sl_task *sl_task_spawn(lua_State *L, int nargs) {
  sl_runtime *rt = sl_rt(L);
  sl_task **ud;
  sl_task *t = calloc(1, sizeof *t);
  if (!t) luaL_error(L, "out of memory");
  ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = t;
  luaL_setmetatable(L, TASK_MT);
  t->rt = rt;
  t->result_ref = LUA_NOREF;
  sl_list_init(&t->ready_node);
  sl_list_init(&t->streams);
  sl_list_init(&t->joiners);
  sl_list_push(&rt->tasks, &t->all_node);
  t->co = lua_newthread(L);
  t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* stack: fn args... ud  ->  ud fn args..., then move fn and args to co */
  lua_rotate(L, -(nargs + 2), 1);
  lua_xmove(L, t->co, nargs + 1);
  t->nargs = nargs;
  sl_task_wake(t);
  return t;
}

/* Ends t's streams (error or cancel) or lets them live on (normal return). */
static void release_streams(sl_task *t, int cancel, const char *reason) {
  while (!sl_list_empty(&t->streams)) {
    sl_stream *s = sl_container_of(t->streams.next, sl_stream, owner_node);
    if (cancel) sl_stream_cancel(s, reason);  /* unlinks s */
    else {
      sl_list_remove(&s->owner_node);
      s->owner = NULL;
    }
  }
}

static void finish_task(sl_task *t) {
  sl_runtime *rt = t->rt;
  lua_State *L = rt->L;
  t->done = 1;
  sl_list_remove(&t->all_node);
  while (!sl_list_empty(&t->joiners)) {
    sl_joinwait *j = sl_container_of(t->joiners.next, sl_joinwait, node);
    sl_list_remove(&j->node);
    sl_task_wake(j->waiter);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
  t->co_ref = LUA_NOREF;
  t->co = NULL;
  if (t == rt->main && t->failed) {
    t->joined = 1;  /* reported here, not again as an unjoined task */
    fprintf(stderr, "sluice: %s\n", t->traceback ? t->traceback : "error");
    fflush(stderr);
    if (!rt->stopping) rt->exit_code = 1;  /* a signal's 130/143 stands */
    shutdown_runtime(rt);
  } else if (rt->main->done && sl_list_empty(&rt->tasks)) {
    shutdown_runtime(rt);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, t->self_ref);  /* may be collected now */
  t->self_ref = LUA_NOREF;
}

static void close_thread(lua_State *co, lua_State *from) {
#if LUA_VERSION_RELEASE_NUM >= 50406
  lua_closethread(co, from);
#else
  (void)from;
  lua_resetthread(co);
#endif
}

static int safe_tostring(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

static void task_failed(sl_task *t, int cancelled) {
  sl_runtime *rt = t->rt;
  lua_State *L = rt->L, *co = t->co;
  const char *msg;
  t->failed = 1;
  if (cancelled) {  /* report the task's cancellation, whatever it raised */
    push_cancel_error(L, t);
  } else {
    /* The message, without trusting the error object's __tostring. */
    lua_pushcfunction(L, safe_tostring);
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushfstring(L, "(error object is a %s value)", luaL_typename(co, -1));
    }
    msg = lua_tostring(L, -1);
    luaL_traceback(L, co, msg, 0);
    t->traceback = strdup(lua_tostring(L, -1));
    lua_pop(L, 2);
    lua_pushvalue(co, -1);   /* the error value */
    lua_xmove(co, L, 1);
  }
  t->result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  release_streams(t, 1, cancelled ? (t->cancel_reason ? t->cancel_reason : "cancelled")
                                  : "task failed");
  close_thread(co, L);       /* runs the task's pending <close> variables */
  finish_task(t);
}

static int is_cancel_error(lua_State *co) {
  int r = 0;
  if (lua_istable(co, -1)) {
    lua_getfield(co, -1, "kind");
    r = lua_isstring(co, -1) && strcmp(lua_tostring(co, -1), "cancelled") == 0;
    lua_pop(co, 1);
  }
  return r;
}

static void resume_task(sl_task *t) {
  sl_runtime *rt = t->rt;
  lua_State *co = t->co, *L = rt->L;
  int nres = 0, st, nargs = 0;
  if (!t->started) {
    t->started = 1;
    nargs = t->nargs;
    if (t->cancelled) {  /* cancelled before it ever ran */
      lua_settop(co, 0);
      t->failed = 1;
      push_cancel_error(L, t);
      t->result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
      finish_task(t);
      return;
    }
  }
  if (t->bare_yield && t->cancelled) {
    /* No sluice wait to raise from: close it where it stands (its <close>
       variables run) and report it cancelled. */
    release_streams(t, 1, t->cancel_reason);
    close_thread(co, L);
    t->failed = 1;
    push_cancel_error(L, t);
    t->result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    finish_task(t);
    return;
  }
  t->bare_yield = 0;
  rt->current = t;
  st = lua_resume(co, L, nargs, &nres);
  rt->current = NULL;
  if (st == LUA_YIELD) {
    lua_pop(co, nres);
    /* A bare coroutine.yield() at task level: let the others run first. */
    if (!t->wait_cleanup && !t->queued) {
      t->bare_yield = 1;
      sl_task_wake(t);
    }
  } else if (st == LUA_OK) {
    int i;
    lua_createtable(L, nres + 1, 1);
    lua_pushboolean(L, 1);
    lua_rawseti(L, -2, 1);
    lua_xmove(co, L, nres);
    for (i = nres; i >= 1; i--) lua_rawseti(L, -1 - i, i + 1);
    lua_pushinteger(L, nres + 1);
    lua_setfield(L, -2, "n");
    t->result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    release_streams(t, 0, NULL);
    finish_task(t);
  } else {
    task_failed(t, t->cancelled && is_cancel_error(co));
  }
}

/* Resumes the tasks that were ready when the pass began; those woken meanwhile
   wait for the next pass, so tasks that keep yielding cannot starve I/O. */
static void on_check(uv_check_t *h) {
  sl_runtime *rt = h->data;
  sl_list *last = rt->ready.prev;
  int more = !sl_list_empty(&rt->ready);
  while (more && !rt->stopping) {
    sl_task *t = sl_container_of(rt->ready.next, sl_task, ready_node);
    more = &t->ready_node != last;
    sl_list_remove(&t->ready_node);
    t->queued = 0;
    resume_task(t);
  }
  if (sl_list_empty(&rt->ready)) uv_idle_stop(&rt->idle);
}

int sl_task_cancel(sl_task *t, const char *reason) {
  if (t->done) return 0;
  if (!t->cancelled) {
    t->cancelled = 1;
    t->cancel_reason = strdup(reason ? reason : "cancelled");
  }
  release_streams(t, 1, t->cancel_reason);
  if (t->wait_cleanup) sl_task_wake(t);  /* its pending wait raises */
  return 1;
}

int sl_task_push_results(lua_State *L, sl_task *t) {
  int n, i;
  t->joined = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->result_ref);
  if (t->failed) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_getfield(L, -1, "n");
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n, "too many results");
  for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -n - 1);
  return n;
}

void sl_task_free(sl_task *t) {
  sl_runtime *rt = t->rt;
  if (t->wait_cleanup) {
    sl_wait_cleanup cleanup = t->wait_cleanup;
    t->wait_cleanup = NULL;
    cleanup(t);
  }
  sl_list_remove(&t->ready_node);
  sl_list_remove(&t->all_node);
  release_streams(t, 1, "shutdown");
  while (!sl_list_empty(&t->joiners)) sl_list_remove(t->joiners.next);
  if (t->result_ref != LUA_NOREF && rt->L) luaL_unref(rt->L, LUA_REGISTRYINDEX, t->result_ref);
  if (t->timer) uv_close((uv_handle_t *)t->timer, free_handle);
  free(t->traceback);
  free(t->cancel_reason);
  free(t);
}

/* ---- the runtime ------------------------------------------------------------ */

void sl_runtime_cancel_streams(sl_runtime *rt, const char *reason) {
  while (!sl_list_empty(&rt->streams)) {
    sl_stream *s = sl_container_of(rt->streams.next, sl_stream, live_node);
    sl_stream_cancel(s, reason);
  }
}

static void shutdown_runtime(sl_runtime *rt) {
  if (rt->stopping) return;
  rt->stopping = 1;
  sl_runtime_cancel_streams(rt, "shutdown");
  sl_exec_kill_all(rt);
  uv_check_stop(&rt->check);
  uv_idle_stop(&rt->idle);
  uv_stop(&rt->uv);
}

/* ---- SIGINT and SIGTERM ------------------------------------------------------
** Like lua.c: the handler sets a hook on the running coroutine, so a script
** busy in a loop that never waits is interrupted too; and it wakes the loop,
** for the usual case of a script waiting. Either way every stream is closed
** before the process ends with 128 + the signal. A second signal while that
** is under way gets the default action. */

static sl_runtime *signal_rt;           /* the handler's only way in */
static volatile sig_atomic_t signal_seen;

static void interrupt(sl_runtime *rt) {
  if (rt->stopping) return;
  rt->exit_code = 128 + signal_seen;
  shutdown_runtime(rt);  /* streams closed, children killed, loop stopped */
}

static void on_signal_hook(lua_State *L, lua_Debug *ar) {
  sl_runtime *rt = sl_rt(L);
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  if (rt->stopping) return;
  interrupt(rt);
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
  if (rt->current && rt->current->co)
    lua_sethook(rt->current->co, on_signal_hook,
                LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  uv_async_send(&rt->wakeup);
}

static void on_wakeup(uv_async_t *h) { interrupt(h->data); }

/* ---- Lua's allocator ----------------------------------------------------------
** Streaming makes Lua allocate a few small blocks per event (the table, its
** slots, the data string) and the collector frees them in bursts, which
** malloc handles slowly (it coalesces and sorts its bins). Small blocks are
** kept on per-size free lists instead, up to a budget; Lua passes each
** block's size back when it frees it, so a block needs no header. The state
** is made with this allocator from its first block, so every block Lua frees
** has the size its class promises. */

#define POOL_MAX (SL_POOL_GRAIN * SL_POOL_CLASSES)   /* larger: plain malloc */
#if defined(__SANITIZE_ADDRESS__)
#define POOL_KEEP 0            /* let ASan see every block come and go */
#else
#define POOL_KEEP (1u << 20)   /* bytes kept on the lists at most */
#endif

/* Class c holds blocks of (c + 1) * SL_POOL_GRAIN bytes; n > 0. */
static size_t pool_class(size_t n) { return (n - 1) / SL_POOL_GRAIN; }

static void *pool_get(sl_pool *p, size_t n) {
  size_t c;
  void *b;
  if (n > POOL_MAX) return malloc(n);
  c = pool_class(n);
  if (!(b = p->lists[c])) return malloc((c + 1) * SL_POOL_GRAIN);
  p->lists[c] = *(void **)b;
  p->kept -= (c + 1) * SL_POOL_GRAIN;
  return b;
}

static void pool_put(sl_pool *p, void *b, size_t n) {
  size_t c;
  if (n > POOL_MAX || p->kept + n > POOL_KEEP) {
    free(b);
    return;
  }
  c = pool_class(n);
  *(void **)b = p->lists[c];
  p->lists[c] = b;
  p->kept += (c + 1) * SL_POOL_GRAIN;
}

static void *pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sl_pool *p = ud;
  void *b;
  if (!ptr) return nsize ? pool_get(p, nsize) : NULL;  /* osize is a type tag */
  if (nsize == 0) {
    pool_put(p, ptr, osize);
    return NULL;
  }
  if (osize > POOL_MAX && nsize > POOL_MAX) return realloc(ptr, nsize);
  if (osize <= POOL_MAX && nsize <= POOL_MAX && pool_class(osize) == pool_class(nsize))
    return ptr;
  if (!(b = pool_get(p, nsize))) return nsize < osize ? ptr : NULL;  /* ptr is big enough */
  memcpy(b, ptr, osize < nsize ? osize : nsize);
  pool_put(p, ptr, osize);
  return b;
}

static void pool_free(sl_pool *p) {
  size_t c;
  for (c = 0; c < SL_POOL_CLASSES; c++)
    while (p->lists[c]) {
      void *b = p->lists[c];
      p->lists[c] = *(void **)b;
      free(b);
    }
  p->kept = 0;
}

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

int sl_runtime_init(sl_runtime *rt) {
  memset(rt, 0, sizeof *rt);
  sl_list_init(&rt->ready);
  sl_list_init(&rt->tasks);
  sl_list_init(&rt->streams);
  sl_list_init(&rt->procs);
  {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
      rt->fd_limit = rl.rlim_cur;
  }
  if (uv_loop_init(&rt->uv) != 0) return -1;
  if (sl_loop_init(&rt->net, &rt->uv, sl_stream_on_done, sl_stream_on_socket) != 0) return -1;
  uv_check_init(&rt->uv, &rt->check);
  uv_idle_init(&rt->uv, &rt->idle);
  uv_async_init(&rt->uv, &rt->wakeup, on_wakeup);
  rt->check.data = rt->wakeup.data = rt;
  uv_check_start(&rt->check, on_check);
  {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    signal_rt = rt;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
  }
  rt->L = lua_newstate(pool_alloc, &rt->pool);
  if (!rt->L) return -1;
  lua_atpanic(rt->L, on_panic);
  lua_setwarnf(rt->L, on_warn, rt);
  *(sl_runtime **)lua_getextraspace(rt->L) = rt;
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

/* Shutdown order: streams, Lua (its __gc frees streams and tasks), curl while
   the loop exists, then the loop until every handle is closed. */
void sl_runtime_close(sl_runtime *rt) {
  signal_rt = NULL;  /* from here on a signal takes its default action */
  sl_runtime_cancel_streams(rt, "shutdown");
  if (rt->L) {
    lua_close(rt->L);
    rt->L = NULL;
  }
  pool_free(&rt->pool);
  sl_loop_close(&rt->net);
  sl_stdin_close(rt);
  uv_close((uv_handle_t *)&rt->check, NULL);
  uv_close((uv_handle_t *)&rt->idle, NULL);
  uv_close((uv_handle_t *)&rt->wakeup, NULL);
  uv_run(&rt->uv, UV_RUN_DEFAULT);
  if (uv_loop_close(&rt->uv) != 0) {
    uv_run(&rt->uv, UV_RUN_DEFAULT);
    uv_loop_close(&rt->uv);
  }
}
