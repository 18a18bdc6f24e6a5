/*
** The runtime and its scheduler: one libuv loop, one curl multi bridge, one Lua
** state. Every script coroutine is a task. A primitive that must wait registers
** the current task as the waiter of something and yields; libuv/curl callbacks
** only mark tasks ready; the scheduler resumes ready tasks from a uv_check
** callback, never from inside curl.
*/
#ifndef SL_TASK_H
#define SL_TASK_H

#include <lua.h>
#include <stdint.h>
#include <uv.h>

#include "list.h"
#include "loop.h"

typedef struct sl_runtime sl_runtime;
typedef struct sl_task sl_task;

/* Undoes a task's registration as a waiter (timer, stream, join lists). */
typedef void (*sl_wait_cleanup)(sl_task *t);

struct sl_task {
  sl_runtime *rt;
  lua_State *co;
  int co_ref;            /* registry: the coroutine */
  int self_ref;          /* registry: the task userdata, while the task runs */
  int result_ref;        /* registry: table.pack of results, or the error value */
  int nargs;             /* arguments waiting on co's stack for the first resume */
  unsigned started : 1, queued : 1, done : 1, failed : 1, cancelled : 1,
      joined : 1, timer_fired : 1,
      bare_yield : 1;     /* parked at a plain coroutine.yield(), not a wait */
  char *traceback;       /* of an uncaught error */
  char *cancel_reason;
  sl_wait_cleanup wait_cleanup;
  void *wait_data;
  uv_timer_t *timer;     /* sleep and next(timeout); heap, freed on close */
  sl_list ready_node;    /* in rt->ready */
  sl_list streams;       /* streams this task opened and still owns */
  sl_list joiners;       /* sl_joinwait nodes of tasks waiting for this one */
  sl_list all_node;      /* in rt->tasks */
};

typedef struct sl_joinwait {
  sl_list node;          /* in the target's joiners */
  sl_task *waiter;
} sl_joinwait;

/* Free lists of small blocks for Lua's allocator (see task.c). */
#define SL_POOL_GRAIN 16
#define SL_POOL_CLASSES 64     /* blocks up to 1 KiB */
typedef struct sl_pool {
  void *lists[SL_POOL_CLASSES];
  size_t kept;           /* bytes on the lists */
} sl_pool;

struct sl_runtime {
  uv_loop_t uv;
  sl_loop net;
  lua_State *L;
  sl_task *current;      /* the task being resumed, NULL between resumes */
  sl_task *main;
  sl_list ready;
  sl_list tasks;         /* unfinished tasks */
  sl_list streams;       /* unfinished streams, for shutdown */
  sl_list procs;         /* children of sluice.exec still running */
  uv_check_t check;
  uv_idle_t idle;
  uv_async_t wakeup;     /* a signal's way into the loop */
  struct sl_stdin *input; /* sluice.read_line's reader, created on first use */
  size_t queued_bytes;   /* in every stream's event queue together */
  uint64_t fd_limit;     /* RLIMIT_NOFILE at start; 0 if unknown */
  sl_pool pool;          /* Lua's small blocks */
  unsigned char warn_on, warn_cont;  /* warn(): enabled; inside a message */
  int exit_code;
  int stopping;
};

/* Stored in the Lua state's extra space so every thread can find it. */
static inline sl_runtime *sl_rt(lua_State *L) {
  return *(sl_runtime **)lua_getextraspace(L);
}

int  sl_runtime_init(sl_runtime *rt);
/* Runs `fn` (on L's top, with nargs arguments above it) as the main task and
   the loop until every task finished. Returns the process exit status. */
int  sl_runtime_run(sl_runtime *rt, int nargs);
void sl_runtime_cancel_streams(sl_runtime *rt, const char *reason);
void sl_runtime_close(sl_runtime *rt);
void sl_stdin_close(sl_runtime *rt);
void sl_exec_kill_all(sl_runtime *rt);

/* Task creation: the function and its nargs arguments are on L's top; pops
   them and pushes the task userdata. */
sl_task *sl_task_spawn(lua_State *L, int nargs);
void sl_task_wake(sl_task *t);
/* Cancels t's streams and makes its pending wait raise; returns 0 if t had
   already finished. */
int  sl_task_cancel(sl_task *t, const char *reason);
/* The calling task, or raises when called outside a task's own coroutine. */
sl_task *sl_task_current(lua_State *L, const char *what);
/* Registers the current task's wait and yields; k runs on resume. */
int  sl_task_wait(lua_State *L, sl_task *t, sl_wait_cleanup cleanup,
                  void *data, lua_KContext ctx, lua_KFunction k);
/* Pushes the value a wait in a nested coroutine yields (see init.lua). */
void sl_push_wait_sentinel(lua_State *L);
/* Starts t's timer: after `seconds`, t->timer_fired is set and t is woken. */
int  sl_task_timer(sl_task *t, double seconds);
void sl_task_timer_stop(sl_task *t);
/* Raises the cancellation error if t was cancelled; call at each (re)try. */
void sl_task_check_cancel(lua_State *L, sl_task *t);
/* Pushes join results (true, ... | false, err); t must be done. */
int  sl_task_push_results(lua_State *L, sl_task *t);
void sl_task_free(sl_task *t);

double sl_now(void);

#endif
