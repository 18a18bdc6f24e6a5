/*
** sluice.read_line(): a line from standard input without blocking the other
** tasks. stdin is watched with a uv_poll while a task waits; a regular file or
** /dev/null (which epoll refuses) is read directly, since it never blocks.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "lsluice.h"
#include "task.h"

typedef struct sl_stdin {
  uv_poll_t *poll;       /* NULL when stdin cannot be polled */
  int pollable;          /* -1 unknown, 0 no, 1 yes */
  int eof;
  char *buf;
  size_t len, cap;
  sl_task *waiter;
} sl_stdin;

static void free_handle(uv_handle_t *h) { free(h); }

static int fill(sl_stdin *in) {
  ssize_t n;
  if (in->cap - in->len < 4096) {
    size_t cap = in->cap ? in->cap * 2 : 8192;
    char *p = realloc(in->buf, cap);
    if (!p) return -1;
    in->buf = p;
    in->cap = cap;
  }
  n = read(0, in->buf + in->len, in->cap - in->len);
  if (n > 0) in->len += (size_t)n;
  else if (n == 0 || (errno != EAGAIN && errno != EINTR)) in->eof = 1;
  return 0;
}

static void on_readable(uv_poll_t *h, int status, int events) {
  sl_stdin *in = h->data;
  if (status < 0) in->eof = 1;
  else fill(in);
  uv_poll_stop(h);
  if (in->waiter) sl_task_wake(in->waiter);
}

static sl_stdin *get_stdin(lua_State *L) {
  sl_runtime *rt = sl_rt(L);
  sl_stdin *in = rt->input;
  if (!in) {
    in = rt->input = calloc(1, sizeof *in);
    if (!in) luaL_error(L, "out of memory");
    in->pollable = -1;
  }
  if (in->pollable < 0) {
    in->poll = malloc(sizeof *in->poll);
    if (in->poll && uv_poll_init(&rt->uv, in->poll, 0) == 0) {
      in->poll->data = in;
      in->pollable = 1;
    } else {
      free(in->poll);
      in->poll = NULL;
      in->pollable = 0;
    }
  }
  return in;
}

void sl_stdin_close(sl_runtime *rt) {
  sl_stdin *in = rt->input;
  if (!in) return;
  if (in->poll) uv_close((uv_handle_t *)in->poll, free_handle);
  free(in->buf);
  free(in);
  rt->input = NULL;
}

static void read_cleanup(sl_task *t) {
  sl_stdin *in = t->wait_data;
  if (in->waiter == t) in->waiter = NULL;
  if (in->poll) uv_poll_stop(in->poll);
}

static int read_line_k(lua_State *L, int status, lua_KContext ctx) {
  sl_stdin *in = get_stdin(L);
  sl_task *t;
  char *nl;
  (void)ctx;
  if (status == LUA_YIELD) sl_task_check_cancel(L, sl_rt(L)->current);
  for (;;) {
    nl = in->len ? memchr(in->buf, '\n', in->len) : NULL;
    if (nl || (in->eof && in->len)) {
      size_t n = nl ? (size_t)(nl - in->buf) : in->len, used = nl ? n + 1 : n;
      if (n && in->buf[n - 1] == '\r') n--;
      lua_pushlstring(L, in->buf, n);
      memmove(in->buf, in->buf + used, in->len - used);
      in->len -= used;
      return 1;
    }
    if (in->eof) {
      lua_pushnil(L);
      return 1;
    }
    if (in->pollable) break;
    if (fill(in) != 0) luaL_error(L, "out of memory");
  }
  t = sl_task_current(L, "sluice.read_line");
  sl_task_check_cancel(L, t);
  if (in->waiter && in->waiter != t) luaL_error(L, "another task is reading stdin");
  in->waiter = t;
  if (uv_poll_start(in->poll, UV_READABLE, on_readable) != 0) {
    in->waiter = NULL;
    in->eof = 1;
    lua_pushnil(L);
    return 1;
  }
  return sl_task_wait(L, t, read_cleanup, in, 0, read_line_k);
}

static int l_read_line(lua_State *L) {
  lua_settop(L, 0);
  return read_line_k(L, LUA_OK, 0);
}

void sl_open_stdin(lua_State *L) {
  lua_pushcfunction(L, l_read_line);
  lua_setfield(L, -2, "read_line");
}
