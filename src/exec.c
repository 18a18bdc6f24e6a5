/*
** Child processes for sluice.exec (see exec.h). Each is a resource of its
** task: the task's cancellation or the shutdown walk kills its process group;
** it leaves the runtime's list once libuv has reaped it.
*/
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "task.h"

static void maybe_free(sl_proc *p) {
  if (p->open_handles > 0 || !p->abandoned) return;
  sl_resource_unregister(&p->res);
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
  uv_os_fd_t fd;
  if (uv_is_closing(h)) return;
  if (h->type == UV_NAMED_PIPE && uv_fileno(h, &fd) == 0) p->res.fds--;  /* closed now */
  uv_close(h, on_handle_closed);
}

int sl_proc_finished(const sl_proc *p) {
  return p->exited && uv_is_closing((uv_handle_t *)&p->out) &&
         uv_is_closing((uv_handle_t *)&p->err);
}

static void check_done(sl_proc *p) {
  if (sl_proc_finished(p)) {
    sl_resource_unregister(&p->res);  /* reaped, and its pipes are closed */
    close_handle(p, (uv_handle_t *)&p->timer);
    close_handle(p, (uv_handle_t *)&p->in);
    if (p->waiter) sl_task_wake(p->waiter);
  }
}

/* The whole process group: the child may have children of its own, which may
   hold the pipes open after the child itself has exited. */
void sl_proc_kill(sl_proc *p) {
  if (p->killed || sl_proc_finished(p) || !p->pid) return;
  p->killed = 1;
  if (uv_kill(-p->pid, SIGKILL) != 0 && !p->exited) uv_process_kill(&p->process, SIGKILL);
}

void sl_proc_abandon(sl_proc *p) {
  p->waiter = NULL;
  p->abandoned = 1;
  sl_proc_kill(p);
  maybe_free(p);
}

/* A cancelled task or the shutdown walk: kill it; it stays on the runtime's
   list (it is still alive) until libuv has reaped it. */
static void proc_close(sl_resource *r, sl_close_how how, const char *reason) {
  sl_proc *p = sl_container_of(r, sl_proc, res);
  (void)how, (void)reason;
  sl_proc_kill(p);
  sl_resource_disown(r);
}

static const sl_resource_type proc_type = {"children", proc_close};

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
  (void)suggested;
  if (p->cap[i] - p->len[i] < 4096) {
    size_t cap = p->cap[i] ? p->cap[i] * 2 : 8192;
    char *n = realloc(p->output[i], cap);
    if (!n) {
      *buf = uv_buf_init(NULL, 0);  /* libuv reports UV_ENOBUFS to on_read */
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
  (void)buf;
  if (n > 0) {
    p->len[i] += (size_t)n;
    if (p->len[i] > p->max_output) {  /* keep the cap, stop the child */
      p->len[i] = p->max_output;
      p->truncated = 1;
      sl_proc_kill(p);
    }
  } else if (n < 0) {  /* EOF, an error, or no memory for the output */
    uv_read_stop(s);
    close_handle(p, (uv_handle_t *)s);
    check_done(p);
  }
}

static void on_written(uv_write_t *req, int status) {
  sl_proc *p = req->data;
  (void)status;  /* a child that does not read its input is no error of ours */
  close_handle(p, (uv_handle_t *)&p->in);  /* EOF for the child */
}

static void on_timeout(uv_timer_t *t) {
  sl_proc *p = t->data;
  p->timed_out = 1;
  sl_proc_kill(p);
}

sl_proc *sl_proc_spawn(sl_runtime *rt, sl_task *owner, const sl_exec_opts *o, int *uverr) {
  uv_process_options_t po;
  uv_stdio_container_t stdio[3];
  uint64_t ms;
  int rc;
  sl_proc *p = calloc(1, sizeof *p);
  if (!p) {
    *uverr = UV_ENOMEM;
    return NULL;
  }
  sl_resource_init(&p->res);
  p->max_output = o->max_output;
  if (o->input_len) {
    if (!(p->input = malloc(o->input_len))) {
      free(p);
      *uverr = UV_ENOMEM;
      return NULL;
    }
    memcpy(p->input, o->input, o->input_len);
    p->input_len = o->input_len;
  }
  /* Initialising pipes and a timer on a live loop cannot fail. */
  uv_pipe_init(&rt->uv, &p->in, 0);
  uv_pipe_init(&rt->uv, &p->out, 0);
  uv_pipe_init(&rt->uv, &p->err, 0);
  uv_timer_init(&rt->uv, &p->timer);
  p->in.data = p->out.data = p->err.data = p->timer.data = p->process.data = p;
  p->write_req.data = p;
  p->open_handles = 5;  /* in, out, err, timer, and the process (even if spawn fails) */

  stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  stdio[0].data.stream = (uv_stream_t *)&p->in;
  for (int i = 0; i < 2; i++) {
    if (o->inherit[i]) {
      stdio[i + 1].flags = UV_INHERIT_FD;
      stdio[i + 1].data.fd = i + 1;
    } else {
      stdio[i + 1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
      stdio[i + 1].data.stream = (uv_stream_t *)(i ? &p->err : &p->out);
    }
  }
  memset(&po, 0, sizeof po);
  po.file = o->argv[0];
  po.args = (char **)o->argv;
  po.env = o->env;
  po.cwd = o->cwd;
  po.flags = UV_PROCESS_DETACHED;  /* its own process group, so we can kill it all */
  po.stdio_count = 3;
  po.stdio = stdio;
  po.exit_cb = on_exit_cb;
  rc = uv_spawn(&rt->uv, &p->process, &po);
  if (rc != 0) {
    p->exited = 1;
    p->abandoned = 1;  /* freed when the handles are closed */
    close_handle(p, (uv_handle_t *)&p->process);
    close_handle(p, (uv_handle_t *)&p->in);
    close_handle(p, (uv_handle_t *)&p->out);
    close_handle(p, (uv_handle_t *)&p->err);
    close_handle(p, (uv_handle_t *)&p->timer);
    *uverr = rc;
    return NULL;
  }
  p->pid = p->process.pid;
  sl_resource_register(rt, &p->res, &proc_type, owner);
  p->res.fds = 3 - o->inherit[0] - o->inherit[1];
  if (o->inherit[0]) close_handle(p, (uv_handle_t *)&p->out);  /* never opened */
  else if ((rc = uv_read_start((uv_stream_t *)&p->out, on_alloc, on_read)) != 0) goto fail;
  if (o->inherit[1]) close_handle(p, (uv_handle_t *)&p->err);
  else if ((rc = uv_read_start((uv_stream_t *)&p->err, on_alloc, on_read)) != 0) goto fail;
  if (p->input_len) {
    uv_buf_t b = uv_buf_init(p->input, (unsigned)p->input_len);
    if ((rc = uv_write(&p->write_req, (uv_stream_t *)&p->in, &b, 1, on_written)) != 0) goto fail;
  } else {
    close_handle(p, (uv_handle_t *)&p->in);
  }
  if (o->timeout > 0 && sl_seconds_to_ms(o->timeout, &ms) &&
      (rc = uv_timer_start(&p->timer, on_timeout, ms, 0)) != 0)
    goto fail;
  return p;
fail:  /* it runs, but we cannot do what was asked: stop it */
  *uverr = rc;
  sl_proc_abandon(p);
  close_handle(p, (uv_handle_t *)&p->in);
  close_handle(p, (uv_handle_t *)&p->out);
  close_handle(p, (uv_handle_t *)&p->err);
  close_handle(p, (uv_handle_t *)&p->timer);
  return NULL;
}
