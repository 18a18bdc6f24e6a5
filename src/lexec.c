/*
** sluice.exec(argv, opts): run a program without blocking other tasks and
** collect its output. No shell unless opts.shell. The child gets its own
** process group; a timeout, the task's cancellation or host shutdown kills the
** whole group, and libuv reaps it. The state outlives an abandoned wait: it is
** freed when the exit callback has run and every pipe is closed.
*/
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "errors.h"
#include "lsluice.h"
#include "task.h"

#define DEFAULT_MAX_OUTPUT (8u << 20)

typedef struct sl_proc {
  uv_process_t process;
  uv_pipe_t in, out, err;
  uv_write_t write_req;
  uv_timer_t timer;
  sl_runtime *rt;
  sl_task *waiter;
  sl_list node;              /* in rt->procs while the child may run */
  char *input;               /* what to write to stdin */
  size_t input_len;
  char *output[2];           /* stdout, stderr */
  size_t len[2], cap[2], max_output;
  int64_t exit_status;
  int term_signal;
  int exited, open_handles, killed, timed_out, truncated, abandoned;
  int pid;
} sl_proc;

static void maybe_free(sl_proc *p) {
  if (p->open_handles > 0 || !p->abandoned) return;
  free(p->input);
  free(p->output[0]);
  free(p->output[1]);
  free(p);
}

static void on_handle_closed(uv_handle_t *h) {
  sl_proc *p = h->data;
  p->open_handles--;
  maybe_free(p);
}

static void close_handle(sl_proc *p, uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, on_handle_closed);
}

static int finished(const sl_proc *p) {
  return p->exited && uv_is_closing((uv_handle_t *)&p->out) &&
         uv_is_closing((uv_handle_t *)&p->err);
}

static void check_done(sl_proc *p) {
  if (finished(p)) {
    sl_list_remove(&p->node);
    close_handle(p, (uv_handle_t *)&p->timer);
    close_handle(p, (uv_handle_t *)&p->in);
    if (p->waiter) sl_task_wake(p->waiter);
  }
}

/* Kills the child's whole process group: it may have children of its own,
   which may hold the pipes open after the child itself has exited. */
static void kill_group(sl_proc *p) {
  if (p->killed || finished(p) || !p->pid) return;
  p->killed = 1;
  if (uv_kill(-p->pid, SIGKILL) != 0 && !p->exited) uv_process_kill(&p->process, SIGKILL);
}

static void on_exit_cb(uv_process_t *h, int64_t status, int term_signal) {
  sl_proc *p = h->data;
  p->exited = 1;
  p->exit_status = status;
  p->term_signal = term_signal;
  close_handle(p, (uv_handle_t *)h);
  check_done(p);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  sl_proc *p = h->data;
  int i = h == (uv_handle_t *)&p->err;
  if (p->cap[i] - p->len[i] < 4096) {
    size_t cap = p->cap[i] ? p->cap[i] * 2 : 8192;
    char *n = realloc(p->output[i], cap);
    if (!n) {
      *buf = uv_buf_init(NULL, 0);
      return;
    }
    p->output[i] = n;
    p->cap[i] = cap;
  }
  *buf = uv_buf_init(p->output[i] + p->len[i], (unsigned)(p->cap[i] - p->len[i]));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  sl_proc *p = s->data;
  int i = s == (uv_stream_t *)&p->err;
  if (n > 0) {
    p->len[i] += (size_t)n;
    if (p->len[i] > p->max_output) {  /* keep the cap, stop the child */
      p->len[i] = p->max_output;
      p->truncated = 1;
      kill_group(p);
    }
  } else if (n < 0) {
    uv_read_stop(s);
    close_handle(p, (uv_handle_t *)s);
    check_done(p);
  }
}

static void on_written(uv_write_t *req, int status) {
  sl_proc *p = req->data;
  close_handle(p, (uv_handle_t *)&p->in);  /* EOF for the child */
}

static void on_timeout(uv_timer_t *t) {
  sl_proc *p = t->data;
  p->timed_out = 1;
  kill_group(p);
}

/* Host shutdown: every child still running is killed. */
void sl_exec_kill_all(sl_runtime *rt) {
  sl_list *n;
  for (n = rt->procs.next; n != &rt->procs; n = n->next)
    kill_group(sl_container_of(n, sl_proc, node));
}

/* ---- the Lua side ---------------------------------------------------------------- */

#define PROC_MT "sluice.process"  /* a box holding the sl_proc while the task waits */

static void exec_cleanup(sl_task *t) {
  sl_proc *p = t->wait_data;
  if (p->waiter == t) p->waiter = NULL;
}

/* The box's __gc (and the cancelled task's unwinding): the wait is abandoned;
   kill the child if it still runs, and let the callbacks free the state. */
static int box_gc(lua_State *L) {
  sl_proc **box = luaL_checkudata(L, 1, PROC_MT);
  sl_proc *p = *box;
  if (p) {
    *box = NULL;
    p->waiter = NULL;
    p->abandoned = 1;
    kill_group(p);
    maybe_free(p);
  }
  return 0;
}

/* Stack: 1 = argv, 2 = opts, 3 = the box. */
static int exec_k(lua_State *L, int status, lua_KContext ctx) {
  sl_proc **box = luaL_checkudata(L, 3, PROC_MT);
  sl_proc *p = *box;
  sl_task *t = sl_task_current(L, "sluice.exec");
  (void)ctx;
  if (status == LUA_YIELD && t->cancelled) {
    kill_group(p);  /* at once; the box's __gc frees the state later */
    sl_task_check_cancel(L, t);
  }
  if (!finished(p)) {
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

/* Pushes a NULL-terminated array of "name=value" for opts.env (at index
   opts), the strings kept alive in a table below it; or pushes nothing. */
static char **build_env(lua_State *L, int opts) {
  int e, count = 0, k;
  char **env;
  lua_getfield(L, opts, "env");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  e = lua_gettop(L);
  luaL_checktype(L, e, LUA_TTABLE);
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, e)) {
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
  uv_process_options_t po;
  uv_stdio_container_t stdio[3];
  sl_proc *p, **box;
  const char **args, *cwd;
  char **env;
  int i, n, rc;
  double timeout;

  lua_settop(L, 2);
  if (lua_isnil(L, 2)) {
    lua_newtable(L);
    lua_replace(L, 2);
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "shell");
  if (lua_toboolean(L, -1) && lua_type(L, 1) == LUA_TSTRING) {  /* a line for /bin/sh */
    lua_createtable(L, 3, 0);
    lua_pushliteral(L, "/bin/sh");
    lua_rawseti(L, -2, 1);
    lua_pushliteral(L, "-c");
    lua_rawseti(L, -2, 2);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 3);
    lua_replace(L, 1);
  }
  lua_pop(L, 1);
  luaL_argexpected(L, lua_type(L, 1) == LUA_TTABLE, 1,
                   "table of strings (or a string with opts.shell = true)");
  n = (int)luaL_len(L, 1);
  luaL_argcheck(L, n >= 1, 1, "empty argv");
  lua_getfield(L, 2, "cwd");
  cwd = luaL_optstring(L, -1, NULL);  /* alive in opts */
  lua_pop(L, 1);
  lua_getfield(L, 2, "timeout");
  timeout = luaL_optnumber(L, -1, 0);
  lua_pop(L, 1);
  args = lua_newuserdatauv(L, sizeof *args * (size_t)(n + 1), 0);  /* index 3 */
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    args[i - 1] = lua_tostring(L, -1);
    if (!args[i - 1]) luaL_error(L, "argv[%d] is not a string", i);
    lua_pop(L, 1);  /* alive in argv */
  }
  args[n] = NULL;
  env = build_env(L, 2);
  sl_task_check_cancel(L, t);

  p = calloc(1, sizeof *p);
  if (!p) luaL_error(L, "out of memory");
  box = lua_newuserdatauv(L, sizeof *box, 0);  /* from here on __gc owns p */
  *box = p;
  luaL_setmetatable(L, PROC_MT);
  p->rt = rt;
  p->max_output = DEFAULT_MAX_OUTPUT;
  sl_list_init(&p->node);
  lua_getfield(L, 2, "max_output");
  if (!lua_isnil(L, -1)) p->max_output = (size_t)luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 2, "stdin");
  if (!lua_isnil(L, -1)) {
    const char *in = luaL_checklstring(L, -1, &p->input_len);
    p->input = malloc(p->input_len + 1);
    if (!p->input) luaL_error(L, "out of memory for stdin");  /* the box frees p */
    memcpy(p->input, in, p->input_len);
  }
  lua_pop(L, 1);

  uv_pipe_init(&rt->uv, &p->in, 0);
  uv_pipe_init(&rt->uv, &p->out, 0);
  uv_pipe_init(&rt->uv, &p->err, 0);
  uv_timer_init(&rt->uv, &p->timer);
  p->in.data = p->out.data = p->err.data = p->timer.data = p->process.data = p;
  p->write_req.data = p;
  p->open_handles = 5;  /* in, out, err, timer, and the process (even if spawn fails) */

  stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  stdio[0].data.stream = (uv_stream_t *)&p->in;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&p->out;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&p->err;
  memset(&po, 0, sizeof po);
  po.file = args[0];
  po.args = (char **)args;
  po.env = env;
  po.cwd = cwd;
  po.flags = UV_PROCESS_DETACHED;  /* its own process group, so we can kill it all */
  po.stdio_count = 3;
  po.stdio = stdio;
  po.exit_cb = on_exit_cb;
  rc = uv_spawn(&rt->uv, &p->process, &po);
  if (rc != 0) {
    char msg[256];
    p->exited = 1;
    close_handle(p, (uv_handle_t *)&p->process);
    close_handle(p, (uv_handle_t *)&p->in);
    close_handle(p, (uv_handle_t *)&p->out);
    close_handle(p, (uv_handle_t *)&p->err);
    close_handle(p, (uv_handle_t *)&p->timer);
    snprintf(msg, sizeof msg, "cannot run %s: %s", args[0], uv_strerror(rc));
    lua_pushnil(L);
    sl_error_push(L, "exec", msg, 0, NULL, 0);
    return 2;  /* the box's __gc frees p once the handles are closed */
  }
  lua_replace(L, 3);  /* the box takes the args' place */
  lua_settop(L, 3);
  p->pid = p->process.pid;
  sl_list_push(&rt->procs, &p->node);
  uv_read_start((uv_stream_t *)&p->out, on_alloc, on_read);
  uv_read_start((uv_stream_t *)&p->err, on_alloc, on_read);
  if (p->input && p->input_len) {
    uv_buf_t b = uv_buf_init(p->input, (unsigned)p->input_len);
    if (uv_write(&p->write_req, (uv_stream_t *)&p->in, &b, 1, on_written) != 0)
      close_handle(p, (uv_handle_t *)&p->in);
  } else {
    close_handle(p, (uv_handle_t *)&p->in);
  }
  if (timeout > 0) uv_timer_start(&p->timer, on_timeout, (uint64_t)(timeout * 1000 + 0.5), 0);
  return exec_k(L, LUA_OK, 0);
}

void sl_open_exec(lua_State *L) {
  luaL_newmetatable(L, PROC_MT);
  lua_pushcfunction(L, box_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_exec);
  lua_setfield(L, -2, "exec");
}
