/*
** The curl-multi bridge (after curl's docs/examples/multi-uv.c): curl tells us
** which sockets to watch (cb_socket) and when to time out (cb_timeout). The
** sockets go into an epoll set of our own, and libuv watches that one
** descriptor; when it is readable, on_uv_sockets takes at most PASS_SOCKETS
** ready sockets from it and hands them to curl. The timer is a uv_timer
** (on_uv_timeout). No Lua runs here; finished transfers go to on_done.
*/
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loop.h"

/* At most this many ready sockets are handed to curl in one loop pass; the
   others stay ready in the epoll set, which reports them (level-triggered,
   oldest first) in the next pass. With thousands of busy streams the tasks
   then take each pass's events before curl reads more, so what the script has
   not caught up with waits in the kernel's socket buffers, not in our queues
   (10,000 streams: 35 MB less at the peak). Leaving a socket for later costs
   nothing: with a uv_poll per socket it cost two epoll_ctl calls, 2 million
   of them over 10,000 streams. */
#define PASS_SOCKETS 256

/* The connection cache (connections in use and idle ones kept alive) holds at
   least this many, and at least as many as there ever were transfers at once.
   Past its size, every finished transfer makes curl 7.88 walk all connections
   for the oldest idle one to close, a cache miss each: O(n) per transfer, 0.6
   CPU s over 10,000 streams. Idle connections stay bounded by the peak. */
#define MIN_CONNECTS 256L

typedef struct sl_socket {
  uint32_t events;  /* EPOLLIN / EPOLLOUT, as curl asked */
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

static void on_uv_sockets(uv_poll_t *h, int status, int events) {
  sl_loop *l = h->data;
  struct epoll_event ev[PASS_SOCKETS];
  int n, i, running;
  (void)status;
  (void)events;
  n = epoll_wait(l->epfd, ev, PASS_SOCKETS, 0);
  for (i = 0; i < n; i++) {
    /* An error or a hang-up goes to curl as readiness: its recv or send then
       reads what was received before it and reports the error. */
    uint32_t e = ev[i].events;
    int flags = 0;
    if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) flags |= CURL_CSELECT_IN;
    if (e & (EPOLLOUT | EPOLLERR)) flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(l->multi, ev[i].data.fd, flags, &running);
  }
  check_multi_info(l);
}

static void on_uv_timeout(uv_timer_t *t) {
  sl_loop *l = t->data;
  int running;
  curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi_info(l);
}

/* Watched sockets keep the libuv loop alive, as a uv_poll per socket would:
   the epoll set's handle is active only while it holds any. */
static void count_socket(sl_loop *l, int delta) {
  l->sockets += delta;
  if (l->sockets == 1 && delta > 0) uv_poll_start(l->poll, UV_READABLE, on_uv_sockets);
  else if (l->sockets == 0) uv_poll_stop(l->poll);
}

static int cb_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                     void *socketp) {
  sl_loop *l = userp;
  sl_socket *sock = socketp;
  struct epoll_event ev;
  if (l->on_socket && easy) {  /* none for connections closed from the cache */
    void *priv = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&priv);
    if (priv) l->on_socket(priv, fd, what == CURL_POLL_REMOVE);
  }
  ev.events = 0;
  ev.data.u64 = 0;
  ev.data.fd = fd;
  if (what == CURL_POLL_REMOVE) {
    /* curl closes the fd right after this: out of the set first, so no event
       for it can come with a number the kernel may reuse. */
    if (sock) {
      epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, &ev);
      curl_multi_assign(l->multi, fd, NULL);
      free(sock);
      count_socket(l, -1);
    }
    return 0;
  }
  if (what & CURL_POLL_IN) ev.events |= EPOLLIN;
  if (what & CURL_POLL_OUT) ev.events |= EPOLLOUT;
  if (!sock) {
    sock = malloc(sizeof *sock);
    if (!sock) return -1;
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      free(sock);
      return -1;
    }
    curl_multi_assign(l->multi, fd, sock);
    count_socket(l, 1);
  } else if (ev.events != sock->events && epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) != 0) {
    return -1;
  }
  sock->events = ev.events;
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
  l->on_done = on_done;
  l->on_socket = on_socket;
  l->transfers = 0;
  l->sockets = 0;
  l->multi = NULL;
  l->timer = malloc(sizeof *l->timer);
  l->poll = malloc(sizeof *l->poll);
  l->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (!l->timer || !l->poll || l->epfd < 0 || uv_timer_init(uv, l->timer) != 0) goto fail;
  if (uv_poll_init(uv, l->poll, l->epfd) != 0) {
    uv_close((uv_handle_t *)l->timer, free_handle);
    l->timer = NULL;
    goto fail;
  }
  l->timer->data = l;
  l->poll->data = l;
  return 0;
fail:
  free(l->timer);
  free(l->poll);
  if (l->epfd >= 0) close(l->epfd);
  l->timer = NULL;
  l->poll = NULL;
  l->epfd = -1;
  return -1;
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
  if (l->poll) {  /* uv_close takes the descriptor out of libuv's set at once */
    uv_close((uv_handle_t *)l->poll, free_handle);
    l->poll = NULL;
    close(l->epfd);
    l->epfd = -1;
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
