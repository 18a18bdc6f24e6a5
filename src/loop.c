/*
** The curl-multi bridge (shape of curl's docs/examples/multi-uv.c): curl tells
** us which sockets to watch (cb_socket) and when to time out (cb_timeout);
** libuv tells curl when a socket is ready (on_uv_socket) or the timer fired
** (on_uv_timeout). No Lua runs here; finished transfers go to on_done.
*/
#include <stdlib.h>
#include <stdio.h>

#include "loop.h"

/* At most this many readable sockets are handed to curl in one loop pass; the
   rest wait, unwatched, for the next pass. With thousands of busy streams the
   tasks then take each pass's events before curl reads more, so what the
   script has not caught up with waits in the kernel's socket buffers, not in
   our queues (10,000 streams: 40 MB less at the peak). Connecting and sending
   are never deferred. */
#define PASS_SOCKETS 256

/* The connection cache (connections in use and idle ones kept alive) holds at
   least this many, and at least as many as there ever were transfers at once.
   Past its size, every finished transfer makes curl 7.88 walk all connections
   for the oldest idle one to close, a cache miss each: O(n) per transfer, 0.6
   CPU s over 10,000 streams. Idle connections stay bounded by the peak. */
#define MIN_CONNECTS 256L

typedef struct sl_socket {
  uv_poll_t poll;
  curl_socket_t fd;
  int events;       /* what curl asked us to watch */
  sl_list deferred_node;  /* linked in loop->deferred while unwatched until
                             the next pass */
  sl_loop *loop;
} sl_socket;

static void free_handle(uv_handle_t *h) { free(h); }

/* Drain every message: a finished transfer is reported once, here. */
static void check_multi_info(sl_loop *l) {
  CURLMsg *msg;
  int pending;
  while ((msg = curl_multi_info_read(l->multi, &pending)) != NULL) {
    if (msg->msg == CURLMSG_DONE) {
      void *priv = NULL;
      CURL *easy = msg->easy_handle;
      CURLcode result = msg->data.result;
      curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&priv);
      l->on_done(priv, result);
    }
  }
}

static void on_uv_socket(uv_poll_t *h, int status, int events) {
  sl_socket *sock = h->data;
  sl_loop *l = sock->loop;
  int flags = 0, running;
  if (status >= 0 && sock->events == UV_READABLE && l->pass_sockets >= PASS_SOCKETS) {
    uv_poll_stop(h);
    sl_list_push(&l->deferred, &sock->deferred_node);
    return;
  }
  l->pass_sockets++;
  if (status < 0) {
    /* POLLERR (a reset, say): libuv stops the handle. Telling curl
       CURL_CSELECT_ERR would fail the transfer without reading the data
       already received; let its recv/send read that and report the error. */
    flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  curl_multi_socket_action(l->multi, sock->fd, flags, &running);
  /* The handle is freed only in its close callback, so it is safe to look at.
     Still watched by curl after an error: watch again, or curl would wait. */
  if (status < 0 && !uv_is_closing((uv_handle_t *)h) && sock->events)
    uv_poll_start(h, sock->events, on_uv_socket);
  check_multi_info(l);
}

static void on_uv_timeout(uv_timer_t *t) {
  sl_loop *l = t->data;
  int running;
  curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi_info(l);
}

static int cb_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                     void *socketp) {
  sl_loop *l = userp;
  sl_socket *sock = socketp;
  int events = 0;
  if (l->on_socket && easy) {  /* none for connections closed from the cache */
    void *priv = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&priv);
    if (priv) l->on_socket(priv, fd, what == CURL_POLL_REMOVE);
  }
  if (what == CURL_POLL_REMOVE) {
    /* curl closes the fd right after this: stop watching it now, and never
       let a closing poll handle linger on a number the kernel may reuse.
       uv_close stops a poll handle at once (one epoll_ctl, not two with a
       uv_poll_stop first: this runs on the way to every cancel's close). */
    if (sock) {
      sl_list_remove(&sock->deferred_node);
      curl_multi_assign(l->multi, fd, NULL);
      uv_close((uv_handle_t *)&sock->poll, free_handle);
    }
    return 0;
  }
  if (!sock) {
    sock = malloc(sizeof *sock);
    if (!sock) return -1;
    if (uv_poll_init_socket(l->uv, &sock->poll, fd) != 0) {
      free(sock);
      return -1;
    }
    sock->fd = fd;
    sl_list_init(&sock->deferred_node);
    sock->loop = l;
    sock->poll.data = sock;
    curl_multi_assign(l->multi, fd, sock);
  }
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  sock->events = events;
  if (sl_list_linked(&sock->deferred_node)) return 0;  /* watched again at the pass's end */
  if (uv_poll_start(&sock->poll, events, on_uv_socket) != 0) return -1;
  return 0;
}

static int cb_timeout(CURLM *multi, long timeout_ms, void *userp) {
  sl_loop *l = userp;
  if (timeout_ms < 0) {
    uv_timer_stop(l->timer);
    return 0;
  }
  /* 0 means "now"; a 0 ms libuv timer started from the timer phase would run
     in the same pass, so curl would be driven from inside its own callback. */
  if (timeout_ms == 0) timeout_ms = 1;
  return uv_timer_start(l->timer, on_uv_timeout, (uint64_t)timeout_ms, 0) ? -1 : 0;
}

int sl_loop_init(sl_loop *l, uv_loop_t *uv, sl_done_fn on_done, sl_socket_fn on_socket) {
  l->uv = uv;
  l->on_done = on_done;
  l->on_socket = on_socket;
  l->transfers = 0;
  l->pass_sockets = 0;
  sl_list_init(&l->deferred);
  l->multi = NULL;
  l->timer = malloc(sizeof *l->timer);
  if (!l->timer) return -1;
  if (uv_timer_init(uv, l->timer) != 0) {
    free(l->timer);
    l->timer = NULL;
    return -1;
  }
  l->timer->data = l;
  return 0;
}

/* The multi handle (and libcurl itself) come with the first transfer. */
int sl_loop_ensure(sl_loop *l, char *err, size_t n) {
  if (l->multi) return 0;
  if (sl_curl_load(err, n) != 0) return -1;
  l->multi = curl_multi_init();
  if (!l->multi) {
    snprintf(err, n, "curl_multi_init failed");
    return -1;
  }
  curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, cb_socket);
  curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
  curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, cb_timeout);
  curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
  l->max_connects = MIN_CONNECTS;
  curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, l->max_connects);
  return 0;
}

/* Must run while the uv loop still exists: curl's cleanup closes the cached
   connections, which reports CURL_POLL_REMOVE for their sockets. */
void sl_loop_close(sl_loop *l) {
  if (l->multi) {
    curl_multi_cleanup(l->multi);
    l->multi = NULL;
  }
  if (l->timer) {
    uv_timer_stop(l->timer);
    uv_close((uv_handle_t *)l->timer, free_handle);
    l->timer = NULL;
  }
}

int sl_loop_add(sl_loop *l, CURL *easy) {
  CURLMcode rc = curl_multi_add_handle(l->multi, easy);
  if (rc != CURLM_OK) return -1;
  if (++l->transfers > l->max_connects) {
    l->max_connects = l->transfers;
    curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, l->max_connects);
  }
  return 0;
}

/* Removing an unfinished transfer makes curl close its connection at once. */
void sl_loop_remove(sl_loop *l, CURL *easy) {
  if (curl_multi_remove_handle(l->multi, easy) == CURLM_OK) l->transfers--;
}

/* Drive curl on the next loop pass (after a transfer was unpaused from Lua):
   started outside the timer phase, a 0 ms timer does not run re-entrantly. */
void sl_loop_kick(sl_loop *l) {
  uv_timer_start(l->timer, on_uv_timeout, 0, 0);
}

/* Called after the pass's ready tasks ran: the deferred sockets are watched
   again, and being level-triggered, report at once what is still unread. */
void sl_loop_pass_end(sl_loop *l) {
  l->pass_sockets = 0;
  while (!sl_list_empty(&l->deferred)) {
    sl_socket *sock = sl_container_of(l->deferred.next, sl_socket, deferred_node);
    sl_list_remove(&sock->deferred_node);
    if (sock->events) uv_poll_start(&sock->poll, sock->events, on_uv_socket);
  }
}
