/*
** The runtime: one libuv loop, one curl-multi bridge, one Lua state, the list
** of every resource alive, and the one shutdown walk that every exit path
** takes. It knows no kind of resource by name: a stream, a child process, the
** stdin reader, a timer each embed an sl_resource and register themselves.
*/
#ifndef SL_RUNTIME_H
#define SL_RUNTIME_H

#include <lua.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <uv.h>

#include "alloc.h"
#include "curlm.h"
#include "list.h"

typedef struct sl_runtime sl_runtime;
typedef struct sl_task sl_task;
typedef struct sl_resource sl_resource;

/* Why a resource is being closed. */
typedef enum {
  SL_CLOSE_RETURN,    /* its task returned normally: it may live on, unowned */
  SL_CLOSE_CANCEL,    /* its task failed or was cancelled */
  SL_CLOSE_SHUTDOWN   /* the runtime is going away */
} sl_close_how;

typedef struct sl_resource_type {
  const char *name;   /* its key in sluice._census(): "streams", "children"... */
  /* Ends the resource, or (SL_CLOSE_RETURN only) lets it live on with
     sl_resource_disown. Either way r leaves its task's list. Never raises,
     never runs Lua. */
  void (*close)(sl_resource *r, sl_close_how how, const char *reason);
} sl_resource_type;

struct sl_resource {
  const sl_resource_type *type;
  sl_runtime *rt;
  sl_task *owner;     /* NULL: the runtime's alone */
  sl_list rt_node;    /* in rt->resources while registered */
  sl_list task_node;  /* in owner->resources while owned */
  int fds;            /* descriptors it holds, for the census */
};

/* Makes r's list nodes safe to unregister before it was ever registered. */
void sl_resource_init(sl_resource *r);
/* Puts r on the runtime's list and, when owner is given, on the owner's. */
void sl_resource_register(sl_runtime *rt, sl_resource *r, const sl_resource_type *type,
                          sl_task *owner);
/* Takes r off both lists; harmless when it is on neither. */
void sl_resource_unregister(sl_resource *r);
/* Takes r off its owner's list only: it lives on, the runtime's alone. */
void sl_resource_disown(sl_resource *r);
/* Closes every resource on list (a task's, linked by task_node). */
void sl_resource_close_list(sl_list *list, sl_close_how how, const char *reason);

struct sl_runtime {
  uv_loop_t uv;
  sl_curlm net;
  lua_State *L;
  sl_task *current;      /* the task being resumed, NULL between resumes */
  sl_task *main;
  sl_list ready;         /* tasks to resume in the next pass */
  sl_list tasks;         /* unfinished tasks */
  int foreground;        /* how many of them keep the runtime alive */
  sl_list resources;     /* every resource alive */
  uv_check_t check;      /* resumes ready tasks, once per loop pass */
  uv_idle_t idle;        /* keeps poll from blocking while tasks are ready */
  uv_async_t wakeup;     /* a signal's way into the loop */
  uint64_t fd_limit;     /* RLIMIT_NOFILE at start; 0 if unknown */
  struct sl_trace *trace; /* the trace being written, or NULL (trace.c sets it) */
  unsigned long long next_stream_id;  /* for traces: each stream's number */
  sl_pool pool;          /* Lua's small blocks */
  unsigned char warn_on, warn_cont;  /* warn(): enabled; inside a message */
  int exit_code;         /* the process's, as it stands */
  int exit_fixed;         /* os.exit or a signal set exit_code: it stands */
  int stop_asked;         /* stop resuming tasks; shut down after this pass */
  int stopping;           /* the shutdown walk has begun */
  volatile sig_atomic_t interrupted;  /* a signal arrived (set by its handler) */
  int gc_mark;            /* live transfers at which the next full collection runs */
  int gc_wanted;          /* every stream paused on the queues' limit: collect */
  double gc_last;         /* when the runtime last ran a full collection */
};

/* A full collection, for the streams a script dropped while open (see
   runtime.c); L is rt->L or one of its coroutines. */
void sl_runtime_collect(sl_runtime *rt, lua_State *L);

/* Times at or above this many seconds mean "no limit" (2^53 ms). */
#define SL_NO_LIMIT 9007199254740.992

/* Seconds (>= 0) as libuv milliseconds, rounded up. Returns 0 for a time so
   large it can only mean "no limit" (math.huge, 1e300), else 1. */
static inline int sl_seconds_to_ms(double s, uint64_t *ms) {
  if (!(s < SL_NO_LIMIT)) return 0;
  *ms = s > 0 ? (uint64_t)ceil(s * 1000.0) : 0;
  return 1;
}

/* Stored in the Lua state's extra space so every thread can find it. */
static inline sl_runtime *sl_rt(lua_State *L) {
  return *(sl_runtime **)lua_getextraspace(L);
}

int  sl_runtime_init(sl_runtime *rt);
/* Runs the function on L's top (with nargs arguments above it) as the main
   task, and the loop until every task finished or the runtime was stopped.
   Returns the exit status as it stands. */
int  sl_runtime_run(sl_runtime *rt, int nargs);
/* The shutdown walk: closes every resource on the runtime's list, then every
   task still suspended (its <close> variables run). Idempotent. Every exit
   path calls it: end of script, uncaught error, os.exit, signals, and
   sl_runtime_close. */
void sl_runtime_shutdown(sl_runtime *rt, const char *reason);
/* Shuts down, closes the Lua state and the loop. Returns the exit status. */
int  sl_runtime_close(sl_runtime *rt);
/* Sets the exit status; fixed = 1 (os.exit, a signal) lets nothing later
   change it. */
void sl_runtime_set_exit(sl_runtime *rt, int code, int fixed);
/* Pushes the census: a table of what is alive (see sluice._census). */
void sl_runtime_census(sl_runtime *rt, lua_State *L);

double sl_now(void);

#endif
