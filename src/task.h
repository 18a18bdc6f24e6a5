/*
** Tasks: every script coroutine is one. A primitive that must wait registers
** the current task as the waiter of something and yields (sl_task_wait);
** libuv/curl callbacks only wake tasks (sl_task_wake); sl_task_run_ready
** resumes them once per loop pass, never from inside curl. A task owns the
** resources it opened: ending it closes its list.
*/
#ifndef SL_TASK_H
#define SL_TASK_H

#include <lua.h>

#include "list.h"
#include "runtime.h"

/* Undoes a task's registration as a waiter (timer, stream, join lists). */
typedef void (*sl_wait_cleanup)(sl_task *t);

typedef struct sl_timer sl_timer;

struct sl_task {
  sl_runtime *rt;
  lua_State *co;
  int co_ref;            /* registry: the coroutine */
  int self_ref;          /* registry: the task userdata, while the task runs */
  int result_ref;        /* registry: table.pack of results, or the error value */
  int nargs;             /* arguments waiting on co's stack for the first resume */
  unsigned started : 1, queued : 1, done : 1, failed : 1, cancelled : 1,
      joined : 1,
      background : 1,     /* does not keep the runtime alive (see sl_task_background) */
      bare_yield : 1;     /* parked at a plain coroutine.yield(), not a wait */
  char *traceback;       /* of an uncaught error */
  char *cancel_reason;
  sl_wait_cleanup wait_cleanup;
  void *wait_data;
  sl_timer *timer;       /* sleep and next(timeout); made on first use */
  sl_list ready_node;    /* in rt->ready */
  sl_list resources;     /* what this task opened and still owns */
  sl_list joiners;       /* sl_joinwait nodes of tasks waiting for this one */
  sl_list all_node;      /* in rt->tasks while unfinished */
};

typedef struct sl_joinwait {
  sl_list node;          /* in the target's joiners */
  sl_task *waiter;
} sl_joinwait;

/* Task creation: the function and its nargs arguments are on L's top; pops
   them and pushes the task userdata. */
sl_task *sl_task_spawn(lua_State *L, int nargs);
void sl_task_wake(sl_task *t);
/* Cancels t's resources and makes its pending wait raise; returns 0 if t had
   already finished. */
int  sl_task_cancel(sl_task *t, const char *reason);
/* The calling task, or raises when called outside a task's own coroutine. */
sl_task *sl_task_current(lua_State *L, const char *what);
/* Registers the current task's wait and yields; k runs on resume. */
int  sl_task_wait(lua_State *L, sl_task *t, sl_wait_cleanup cleanup,
                  void *data, lua_KContext ctx, lua_KFunction k);
/* Pushes the value a wait in a nested coroutine yields (see init.lua). */
void sl_push_wait_sentinel(lua_State *L);
/* Starts t's timer: after `seconds` (>= 0; HUGE_VAL never), t is woken and
   sl_task_timer_fired(t) is true. Returns 0 or a libuv error code. */
int  sl_task_timer(sl_task *t, double seconds);
int  sl_task_timer_fired(const sl_task *t);
void sl_task_timer_stop(sl_task *t);
/* Raises the cancellation error if t was cancelled or the runtime is
   stopping; call at each (re)try. */
void sl_task_check_cancel(lua_State *L, sl_task *t);
/* Pushes join results (true, ... | false, err); t must be done. */
int  sl_task_push_results(lua_State *L, sl_task *t);
void sl_task_free(sl_task *t);
/* Called when a task's userdata is collected: a failure nobody joined is
   reported, and makes the exit status 1. */
void sl_task_collected(sl_task *t);

/* A background task does not keep the script running: once the main task and
   every foreground task have finished, the runtime shuts down (closing it). */
void sl_task_background(sl_task *t, int background);

/* The scheduler's pass: resumes the tasks that were ready when it began. */
void sl_task_run_ready(sl_runtime *rt);
/* Shutdown: closes every unfinished task (its <close> variables run). */
void sl_task_close_all(sl_runtime *rt, const char *reason);

#endif
