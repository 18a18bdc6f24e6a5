/*
** The scheduler. Tasks are Lua coroutines; a waiting primitive registers the
** current task (sl_task_wait) and yields; callbacks call sl_task_wake, which
** undoes the registration and queues the task; sl_task_run_ready resumes
** queued tasks once per loop pass, after curl and libuv callbacks returned.
** A task owns what it opened (its resource list): an error or a cancel
** closes the list, a normal return lets streams live on.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "errors.h"
#include "task.h"

#define TASK_MT "sluice.task"

/* ---- the task's timer: a resource of its own ------------------------------ */

struct sl_timer {
  sl_resource res;
  uv_timer_t handle;
  sl_task *task;
  int fired;
};

static void timer_freed(uv_handle_t *h) {
  free(sl_container_of(h, sl_timer, handle));
}

static void timer_close(sl_resource *r, sl_close_how how, const char *reason) {
  sl_timer *tm = sl_container_of(r, sl_timer, res);
  (void)how, (void)reason;
  sl_resource_unregister(r);
  if (tm->task) tm->task->timer = NULL;
  uv_close((uv_handle_t *)&tm->handle, timer_freed);
}

static const sl_resource_type timer_type = {"timers", timer_close};

static void on_task_timer(uv_timer_t *h) {
  sl_timer *tm = h->data;
  tm->fired = 1;
  sl_task_wake(tm->task);
}

int sl_task_timer(sl_task *t, double seconds) {
  sl_timer *tm = t->timer;
  uint64_t ms;
  int rc;
  if (!tm) {
    tm = malloc(sizeof *tm);
    if (!tm) return UV_ENOMEM;
    if ((rc = uv_timer_init(&t->rt->uv, &tm->handle)) != 0) {
      free(tm);
      return rc;
    }
    tm->handle.data = tm;
    tm->task = t;
    sl_resource_register(t->rt, &tm->res, &timer_type, t);
    t->timer = tm;
  }
  tm->fired = 0;
  if (!sl_seconds_to_ms(seconds, &ms)) return uv_timer_stop(&tm->handle);  /* no limit */
  return uv_timer_start(&tm->handle, on_task_timer, ms, 0);
}

int sl_task_timer_fired(const sl_task *t) { return t->timer && t->timer->fired; }

void sl_task_timer_stop(sl_task *t) {
  if (t->timer) uv_timer_stop(&t->timer->handle);  /* cannot fail */
}

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
  /* An active idle handle keeps the next loop pass from blocking in poll;
     uv_idle_start cannot fail on an initialised handle. */
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

/* A coroutine the task resumed (a generator, say) may wait too: its wait is
   passed up to the task by sluice's coroutine.resume/wrap. */
sl_task *sl_task_current(lua_State *L, const char *what) {
  sl_runtime *rt = sl_rt(L);
  sl_task *t = rt->current;
  if (!t)
    luaL_error(L, "%s must be called from a sluice task", what);
  if (!lua_isyieldable(L))
    luaL_error(L, "%s cannot wait here (not yieldable: a metamethod, require or "
                  "another C function is in the way)", what);
  return t;
}

static void push_cancel_error(lua_State *L, sl_task *t) {
  char msg[256];
  snprintf(msg, sizeof msg, "cancelled: %s",
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
  sl_task *t;
  if (rt->stopping) luaL_error(L, "cannot start a task: the runtime is shutting down");
  ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = NULL;
  luaL_setmetatable(L, TASK_MT);
  t = calloc(1, sizeof *t);
  if (!t) luaL_error(L, "out of memory");
  *ud = t;
  t->rt = rt;
  t->result_ref = LUA_NOREF;
  sl_list_init(&t->ready_node);
  sl_list_init(&t->resources);
  sl_list_init(&t->joiners);
  sl_list_push(&rt->tasks, &t->all_node);
  rt->foreground++;
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

static void finish_task(sl_task *t) {
  sl_runtime *rt = t->rt;
  lua_State *L = rt->L;
  t->done = 1;
  if (!t->background) rt->foreground--;
  sl_list_remove(&t->all_node);
  sl_list_remove(&t->ready_node);
  t->queued = 0;
  while (!sl_list_empty(&t->joiners)) {
    sl_joinwait *j = sl_container_of(t->joiners.next, sl_joinwait, node);
    sl_list_remove(&j->node);
    sl_task_wake(j->waiter);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
  t->co_ref = LUA_NOREF;
  t->co = NULL;
  if (t == rt->main && t->failed && !rt->stopping) {
    t->joined = 1;  /* reported here, not again as an unjoined task */
    if (t->traceback) {
      fprintf(stderr, "sluice: %s\n", t->traceback);
      fflush(stderr);
    }
    sl_runtime_set_exit(rt, 1, 0);
    rt->stop_asked = 1;  /* the other tasks are closed with the rest */
  } else if (rt->main->done && rt->foreground == 0) {
    rt->stop_asked = 1;  /* background tasks are closed with the rest */
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
  sl_resource_close_list(&t->resources, SL_CLOSE_CANCEL,
                         cancelled ? t->cancel_reason : "task failed");
  close_thread(co, L);       /* runs the task's pending <close> variables */
  finish_task(t);
}

/* Ends t as cancelled where it stands: its resources closed, its pending
   <close> variables run (unless it is the coroutine running now). */
static void close_cancelled(sl_task *t) {
  sl_runtime *rt = t->rt;
  lua_State *L = rt->L;
  if (t->wait_cleanup) {
    sl_wait_cleanup cleanup = t->wait_cleanup;
    t->wait_cleanup = NULL;
    cleanup(t);
  }
  sl_resource_close_list(&t->resources, SL_CLOSE_CANCEL, t->cancel_reason);
  if (t == rt->current) {
    /* running (os.exit where it cannot yield): the process ends next */
  } else if (t->started) {
    close_thread(t->co, L);
  } else {
    lua_settop(t->co, 0);
  }
  t->failed = 1;
  push_cancel_error(L, t);
  t->result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
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
    nargs = t->nargs;
    if (t->cancelled) {  /* cancelled before it ever ran */
      close_cancelled(t);
      return;
    }
    t->started = 1;
  }
  if (t->bare_yield && t->cancelled) {
    /* No sluice wait to raise from: close it where it stands. */
    close_cancelled(t);
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
    sl_resource_close_list(&t->resources, SL_CLOSE_RETURN, NULL);
    finish_task(t);
  } else {
    task_failed(t, t->cancelled && is_cancel_error(co));
  }
}

/* Resumes the tasks that were ready when the pass began; those woken meanwhile
   wait for the next pass, so tasks that keep yielding cannot starve I/O. */
void sl_task_run_ready(sl_runtime *rt) {
  sl_list *last = rt->ready.prev;
  int more = !sl_list_empty(&rt->ready);
  while (more && !rt->stop_asked && !rt->stopping && !rt->interrupted) {
    sl_task *t = sl_container_of(rt->ready.next, sl_task, ready_node);
    more = &t->ready_node != last;
    sl_list_remove(&t->ready_node);
    t->queued = 0;
    resume_task(t);
  }
  if (sl_list_empty(&rt->ready)) uv_idle_stop(&rt->idle);
}

static void set_cancelled(sl_task *t, const char *reason) {
  if (!t->cancelled) {
    t->cancelled = 1;
    t->cancel_reason = strdup(reason ? reason : "cancelled");
  }
}

int sl_task_cancel(sl_task *t, const char *reason) {
  if (t->done) return 0;
  set_cancelled(t, reason);
  sl_resource_close_list(&t->resources, SL_CLOSE_CANCEL, t->cancel_reason);
  if (t->wait_cleanup) sl_task_wake(t);  /* its pending wait raises */
  return 1;
}

void sl_task_close_all(sl_runtime *rt, const char *reason) {
  while (!sl_list_empty(&rt->tasks)) {
    sl_task *t = sl_container_of(rt->tasks.next, sl_task, all_node);
    set_cancelled(t, reason);
    close_cancelled(t);
  }
}

void sl_task_background(sl_task *t, int background) {
  sl_runtime *rt = t->rt;
  if (t->done || (int)t->background == background) return;
  t->background = (unsigned)background;
  rt->foreground += background ? -1 : 1;
  if (rt->main && rt->main->done && rt->foreground == 0) {
    rt->stop_asked = 1;
    uv_idle_start(&rt->idle, on_idle);  /* let the loop come round to the check */
  }
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

void sl_task_collected(sl_task *t) {
  if (t->done && t->failed && !t->joined && !t->cancelled && t->traceback) {
    fprintf(stderr, "sluice: a task failed and was never joined: %s\n", t->traceback);
    fflush(stderr);
    sl_runtime_set_exit(t->rt, 1, 0);
  }
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
  sl_resource_close_list(&t->resources, SL_CLOSE_SHUTDOWN, "shutdown");
  while (!sl_list_empty(&t->joiners)) sl_list_remove(t->joiners.next);
  if (t->result_ref != LUA_NOREF && rt->L) luaL_unref(rt->L, LUA_REGISTRYINDEX, t->result_ref);
  free(t->traceback);
  free(t->cancel_reason);
  free(t);
}
