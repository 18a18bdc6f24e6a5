/*
** sluice.read_line(): a line from standard input without blocking the other
** tasks. stdin is watched with a uv_poll while a task waits, and that watch is
** a resource (the shutdown walk ends it); a regular file or /dev/null (which
** epoll refuses) is read directly, since it never blocks. The reader, with
** what it has buffered, is a userdata in the registry.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "lsluice.h"
#include "task.h"

#define STDIN_MT "sluice.stdin"
#define READER_KEY "sluice.stdin reader"  /* the registry's, not the metatable's */

typedef struct sl_stdin {
  sl_resource res;       /* "stdin", registered while a task waits */
  uv_poll_t *poll;       /* NULL when stdin cannot be polled */
  int pollable;          /* -1 unknown, 0 no, 1 yes */
  int eof, closed;
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

/* Stops watching; the waiter, if any, is woken by whoever called this. */
static void unwatch(sl_stdin *in) {
  if (in->poll) uv_poll_stop(in->poll);  /* cannot fail on a live handle */
  sl_resource_unregister(&in->res);
}

static void on_readable(uv_poll_t *h, int status, int events) {
  sl_stdin *in = h->data;
  (void)events;
  if (status < 0 || fill(in) != 0) in->eof = 1;
  unwatch(in);
  if (in->waiter) sl_task_wake(in->waiter);
}

/* The shutdown walk (or the waiting task's end): stop watching. At shutdown
   the reader is closed for good: a later read_line() sees the end. */
static void stdin_close(sl_resource *r, sl_close_how how, const char *reason) {
  sl_stdin *in = sl_container_of(r, sl_stdin, res);
  (void)reason;
  unwatch(in);
  if (how == SL_CLOSE_SHUTDOWN) in->closed = in->eof = 1;
  if (in->waiter) sl_task_wake(in->waiter);
}

static const sl_resource_type stdin_type = {"stdin", stdin_close};

static int stdin_gc(lua_State *L) {
  sl_stdin *in = luaL_checkudata(L, 1, STDIN_MT);
  unwatch(in);
  if (in->poll) uv_close((uv_handle_t *)in->poll, free_handle);
  in->poll = NULL;
  free(in->buf);
  in->buf = NULL;
  return 0;
}

static sl_stdin *get_stdin(lua_State *L) {
  sl_runtime *rt = sl_rt(L);
  sl_stdin *in;
  if (lua_getfield(L, LUA_REGISTRYINDEX, READER_KEY) == LUA_TUSERDATA) {
    in = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return in;
  }
  lua_pop(L, 1);
  in = lua_newuserdatauv(L, sizeof *in, 0);
  memset(in, 0, sizeof *in);
  sl_resource_init(&in->res);
  luaL_setmetatable(L, STDIN_MT);
  lua_setfield(L, LUA_REGISTRYINDEX, READER_KEY);
  in->poll = malloc(sizeof *in->poll);
  if (in->poll && uv_poll_init(&rt->uv, in->poll, 0) == 0) {
    in->poll->data = in;
    in->pollable = 1;
  } else {
    free(in->poll);
    in->poll = NULL;
  }
  return in;
}

static void read_cleanup(sl_task *t) {
  sl_stdin *in = t->wait_data;
  if (in->waiter == t) in->waiter = NULL;
  unwatch(in);
}

static int read_line_k(lua_State *L, int status, lua_KContext ctx) {
  sl_stdin *in = get_stdin(L);
  sl_task *t;
  char *nl;
  int rc;
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
    if (in->eof || in->closed) {
      lua_pushnil(L);
      return 1;
    }
    if (in->pollable) break;
    if (fill(in) != 0) luaL_error(L, "sluice.read_line: out of memory");
  }
  t = sl_task_current(L, "sluice.read_line");
  sl_task_check_cancel(L, t);
  if (in->waiter && in->waiter != t) luaL_error(L, "sluice.read_line: another task is reading stdin");
  if ((rc = uv_poll_start(in->poll, UV_READABLE, on_readable)) != 0) {
    in->eof = 1;  /* nothing more can come from it */
    lua_pushnil(L);
    return 1;
  }
  in->waiter = t;
  sl_resource_register(sl_rt(L), &in->res, &stdin_type, t);
  return sl_task_wait(L, t, read_cleanup, in, 0, read_line_k);
}

static int l_read_line(lua_State *L) {
  lua_settop(L, 0);
  return read_line_k(L, LUA_OK, 0);
}

static const luaL_Reg stdin_funcs[] = {{"read_line", l_read_line}, {NULL, NULL}};

void sl_open_stdin(lua_State *L) {
  luaL_newmetatable(L, STDIN_MT);
  lua_pushcfunction(L, stdin_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_setfuncs(L, stdin_funcs, 0);
}
