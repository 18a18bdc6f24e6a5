/*
** A child process run for sluice.exec: its pipes, its timeout, its output. No
** Lua here (lexec.c binds it). The child gets its own process group; a
** timeout, its task's cancellation or the shutdown walk kills the whole group,
** and libuv reaps it. The state outlives an abandoned wait: it is freed once
** the exit callback has run and every handle is closed.
*/
#ifndef SL_EXEC_H
#define SL_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "runtime.h"

typedef struct sl_exec_opts {
  const char *const *argv;   /* NULL-terminated */
  char **env;                /* NULL: inherit */
  const char *cwd;
  const char *input;         /* written to the child's stdin, then EOF */
  size_t input_len;
  double timeout;            /* seconds; 0 or HUGE_VAL: none */
  size_t max_output;         /* per stream; past it the child is killed */
  int inherit[2];            /* stdout, stderr: the child writes to ours */
} sl_exec_opts;

typedef struct sl_proc {
  sl_resource res;           /* "children": registered until reaped */
  uv_process_t process;
  uv_pipe_t in, out, err;
  uv_write_t write_req;
  uv_timer_t timer;
  sl_task *waiter;           /* woken when the child is finished */
  char *input;
  size_t input_len;
  char *output[2];           /* stdout, stderr */
  size_t len[2], cap[2], max_output;
  int64_t exit_status;
  int term_signal;
  int exited, open_handles, killed, timed_out, truncated, abandoned;
  int pid;
} sl_proc;

/* Starts the child, owned by owner. Returns NULL with a libuv error code in
   *uverr (the program could not be started, or out of memory). */
sl_proc *sl_proc_spawn(sl_runtime *rt, sl_task *owner, const sl_exec_opts *o, int *uverr);
/* Exited, and its output pipes are closed: the results can be read. */
int  sl_proc_finished(const sl_proc *p);
/* Kills the child's process group, if it still runs. */
void sl_proc_kill(sl_proc *p);
/* Nobody waits any more: kill it if it runs, free it when libuv is done. */
void sl_proc_abandon(sl_proc *p);

#endif
