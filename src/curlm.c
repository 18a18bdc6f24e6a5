/*
** The curl-multi bridge (after curl's docs/examples/multi-uv.c): curl tells us
** which sockets to watch (cb_socket) and when to time out (cb_timeout). The
** sockets go into an epoll set of our own, and libuv watches that one
** descriptor; when it is readable, on_uv_sockets takes at most PASS_SOCKETS
** ready sockets from it and hands them to curl. The timer is a uv_timer
** (on_uv_timeout). No Lua runs here; finished transfers go to their on_done.
** Every CURLMcode is checked: a failing multi call is kept in m->error and
** said on stderr (it belongs to no single transfer).
*/
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "curlm.h"

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

/* A multi call failed: keep the reason, and say it (no transfer owns it). */
static void multi_failed(sl_curlm *m, const char *call, CURLMcode rc) {
  snprintf(m->error, sizeof m->error, "%s: %s", call, curl_multi_strerror(rc));
  fprintf(stderr, "sluice: %s\n", m->error);
}

static sl_transfer *transfer_of(CURL *easy) {
  char *priv = NULL;
  curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
  return (sl_transfer *)priv;
}

/* Drain every message: a finished transfer is reported once, here. */
static void check_multi_info(sl_curlm *m) {
  CURLMsg *msg;
  int pending;
  while ((msg = curl_multi_info_read(m->multi, &pending)) != NULL) {
    if (msg->msg == CURLMSG_DONE) {
      sl_transfer *x = transfer_of(msg->easy_handle);
      if (x) x->on_done(x, msg->data.result);
    }
  }
}

static void socket_action(sl_curlm *m, curl_socket_t fd, int flags) {
  int running;
  CURLMcode rc = curl_multi_socket_action(m->multi, fd, flags, &running);
  if (rc != CURLM_OK) multi_failed(m, "curl_multi_socket_action", rc);
}

static void on_uv_sockets(uv_poll_t *h, int status, int events) {
  sl_curlm *m = h->data;
  struct epoll_event ev[PASS_SOCKETS];
  int n, i;
  (void)status;
  (void)events;
  n = epoll_wait(m->epfd, ev, PASS_SOCKETS, 0);
  for (i = 0; i < n; i++) {
    /* An error or a hang-up goes to curl as readiness: its recv or send then
       reads what was received before it and reports the error. */
    uint32_t e = ev[i].events;
    int flags = 0;
    if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) flags |= CURL_CSELECT_IN;
    if (e & (EPOLLOUT | EPOLLERR)) flags |= CURL_CSELECT_OUT;
    socket_action(m, ev[i].data.fd, flags);
  }
  check_multi_info(m);
}

static void on_uv_timeout(uv_timer_t *t) {
  sl_curlm *m = t->data;
  socket_action(m, CURL_SOCKET_TIMEOUT, 0);
  check_multi_info(m);
}

/* Watched sockets keep the libuv loop alive, as a uv_poll per socket would:
   the epoll set's handle is active only while it holds any. */
static int count_watched(sl_curlm *m, int delta) {
  m->watched += delta;
  if (m->watched == 1 && delta > 0)
    return uv_poll_start(m->poll, UV_READABLE, on_uv_sockets);
  if (m->watched == 0) return uv_poll_stop(m->poll);
  return 0;
}

static int cb_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                     void *socketp) {
  sl_curlm *m = userp;
  sl_socket *sock = socketp;
  struct epoll_event ev;
  if (easy) {  /* none for connections closed from the cache */
    sl_transfer *x = transfer_of(easy);
    if (x && x->on_socket) x->on_socket(x, fd, what == CURL_POLL_REMOVE);
  }
  ev.events = 0;
  ev.data.u64 = 0;
  ev.data.fd = fd;
  if (what == CURL_POLL_REMOVE) {
    /* curl closes the fd right after this: out of the set first, so no event
       for it can come with a number the kernel may reuse. */
    if (sock) {
      epoll_ctl(m->epfd, EPOLL_CTL_DEL, fd, &ev);  /* only fails if already out */
      curl_multi_assign(m->multi, fd, NULL);
      free(sock);
      count_watched(m, -1);
    }
    return 0;
  }
  if (what & CURL_POLL_IN) ev.events |= EPOLLIN;
  if (what & CURL_POLL_OUT) ev.events |= EPOLLOUT;
  if (!sock) {
    sock = malloc(sizeof *sock);
    if (!sock) return -1;  /* curl fails the transfer */
    if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      free(sock);
      return -1;
    }
    if (curl_multi_assign(m->multi, fd, sock) != CURLM_OK || count_watched(m, 1) != 0) {
      epoll_ctl(m->epfd, EPOLL_CTL_DEL, fd, &ev);
      curl_multi_assign(m->multi, fd, NULL);
      free(sock);
      m->watched--;
      return -1;
    }
  } else if (ev.events != sock->events && epoll_ctl(m->epfd, EPOLL_CTL_MOD, fd, &ev) != 0) {
    return -1;
  }
  sock->events = ev.events;
  return 0;
}

static int cb_timeout(CURLM *multi, long timeout_ms, void *userp) {
  sl_curlm *m = userp;
  (void)multi;
  if (timeout_ms < 0) return uv_timer_stop(m->timer) ? -1 : 0;
  /* 0 means "now"; a 0 ms libuv timer started from the timer phase would run
     in the same pass, so curl would be driven from inside its own callback. */
  if (timeout_ms == 0) timeout_ms = 1;
  return uv_timer_start(m->timer, on_uv_timeout, (uint64_t)timeout_ms, 0) ? -1 : 0;
}

/* Every socket curl opens is made here, close-on-exec from the start (a child
   process holding a copy would keep a cancelled connection open), and
   remembered by its inode, so the runtime can say what it holds
   (sluice._census). libcurl 7.88 closes a socket whose connect timed out
   without calling cb_closesocket: the inode tells a live socket from a
   closed one, or from another file that got its number since. */
static curl_socket_t cb_opensocket(void *clientp, curlsocktype purpose,
                                   struct curl_sockaddr *a) {
  sl_curlm *m = clientp;
  struct stat st;
  curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  (void)purpose;
  if (fd < 0 || fstat(fd, &st) != 0) return fd;
  if ((size_t)fd >= m->sock_cap) {
    size_t cap = m->sock_cap ? m->sock_cap : 64;
    unsigned long *p;
    while (cap <= (size_t)fd) cap *= 2;
    if (!(p = realloc(m->sock_ino, cap * sizeof *p))) return fd;  /* uncounted, not lost */
    memset(p + m->sock_cap, 0, (cap - m->sock_cap) * sizeof *p);
    m->sock_ino = p;
    m->sock_cap = cap;
  }
  m->sock_ino[fd] = (unsigned long)st.st_ino;
  return fd;
}

static int cb_closesocket(void *clientp, curl_socket_t fd) {
  sl_curlm *m = clientp;
  if (fd >= 0 && (size_t)fd < m->sock_cap) m->sock_ino[fd] = 0;
  return close(fd);
}

int sl_curlm_sockets(sl_curlm *m) {
  size_t fd;
  int n = 0;
  for (fd = 0; fd < m->sock_cap; fd++) {
    struct stat st;
    if (!m->sock_ino[fd]) continue;
    if (fstat((int)fd, &st) == 0 && (unsigned long)st.st_ino == m->sock_ino[fd]) n++;
    else m->sock_ino[fd] = 0;  /* closed behind our back */
  }
  return n;
}

int sl_curlm_init(sl_curlm *m, uv_loop_t *uv) {
  memset(m, 0, sizeof *m);
  m->timer = malloc(sizeof *m->timer);
  m->poll = malloc(sizeof *m->poll);
  m->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (!m->timer || !m->poll || m->epfd < 0 || uv_timer_init(uv, m->timer) != 0) goto fail;
  if (uv_poll_init(uv, m->poll, m->epfd) != 0) {
    uv_close((uv_handle_t *)m->timer, free_handle);
    m->timer = NULL;
    goto fail;
  }
  m->timer->data = m;
  m->poll->data = m;
  return 0;
fail:
  free(m->timer);
  free(m->poll);
  if (m->epfd >= 0) close(m->epfd);
  m->timer = NULL;
  m->poll = NULL;
  m->epfd = -1;
  return -1;
}

#define MSETOPT(opt, val)                                            \
  do {                                                               \
    CURLMcode rc_ = curl_multi_setopt(m->multi, opt, val);           \
    if (rc_ != CURLM_OK) {                                           \
      snprintf(err, n, "curl_multi_setopt(%s): %s", #opt,            \
               curl_multi_strerror(rc_));                            \
      goto fail;                                                     \
    }                                                                \
  } while (0)

/* The multi handle (and libcurl itself) come with the first transfer. */
int sl_curlm_ensure(sl_curlm *m, char *err, size_t n) {
  if (m->multi) return 0;
  if (sl_curl_load(err, n) != 0) return -1;
  m->multi = curl_multi_init();
  if (!m->multi) {
    snprintf(err, n, "curl_multi_init failed");
    return -1;
  }
  MSETOPT(CURLMOPT_SOCKETFUNCTION, cb_socket);
  MSETOPT(CURLMOPT_SOCKETDATA, m);
  MSETOPT(CURLMOPT_TIMERFUNCTION, cb_timeout);
  MSETOPT(CURLMOPT_TIMERDATA, m);
  if (m->max_connects < MIN_CONNECTS) m->max_connects = MIN_CONNECTS;
  MSETOPT(CURLMOPT_MAXCONNECTS, m->max_connects);
  /* From 7.88.0 to 8.14.x libcurl only queues the RST_STREAM of a stream
     removed early and sends it with the connection's next I/O (curl issue
     17611, fixed in 8.15.0): a cancelled stream alone on its connection, or
     beside silent ones, would never reach the server. There each HTTP/2
     stream gets a connection of its own, which a stop closes like an
     HTTP/1.1 one. */
  m->multiplex = curl_version_info(CURLVERSION_NOW)->version_num >= 0x080f00;
  if (!m->multiplex) MSETOPT(CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
  return 0;
fail:
  curl_multi_cleanup(m->multi);
  m->multi = NULL;
  return -1;
}

void sl_curlm_close(sl_curlm *m) {
  if (m->multi) {
    curl_multi_cleanup(m->multi);
    m->multi = NULL;
  }
  free(m->sock_ino);
  m->sock_ino = NULL;
  m->sock_cap = 0;
  if (m->timer) {
    uv_timer_stop(m->timer);
    uv_close((uv_handle_t *)m->timer, free_handle);
    m->timer = NULL;
  }
  if (m->poll) {  /* uv_close takes the descriptor out of libuv's set at once */
    uv_close((uv_handle_t *)m->poll, free_handle);
    m->poll = NULL;
    close(m->epfd);
    m->epfd = -1;
  }
}

int sl_curlm_drop_idle(sl_curlm *m) {
  int before;
  if (!m->multi || m->transfers > 0) return 0;
  before = sl_curlm_sockets(m);
  curl_multi_cleanup(m->multi);  /* closes the kept-alive connections */
  m->multi = NULL;
  uv_timer_stop(m->timer);
  return before - sl_curlm_sockets(m);
}

#define ESETOPT(opt, val)                                            \
  do {                                                               \
    CURLcode rc_ = curl_easy_setopt(easy, opt, val);                 \
    if (rc_ != CURLE_OK) {                                           \
      snprintf(err, n, "curl_easy_setopt(%s): %s", #opt,             \
               curl_easy_strerror(rc_));                             \
      return -1;                                                     \
    }                                                                \
  } while (0)

int sl_curlm_add(sl_curlm *m, CURL *easy, sl_transfer *x, char *err, size_t n) {
  CURLMcode rc;
  ESETOPT(CURLOPT_PRIVATE, (void *)x);
  ESETOPT(CURLOPT_OPENSOCKETFUNCTION, cb_opensocket);
  ESETOPT(CURLOPT_OPENSOCKETDATA, m);
  ESETOPT(CURLOPT_CLOSESOCKETFUNCTION, cb_closesocket);
  ESETOPT(CURLOPT_CLOSESOCKETDATA, m);
  if ((rc = curl_multi_add_handle(m->multi, easy)) != CURLM_OK) {
    snprintf(err, n, "curl_multi_add_handle: %s", curl_multi_strerror(rc));
    return -1;
  }
  if (++m->transfers > m->max_connects) {
    m->max_connects = m->transfers;
    if ((rc = curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, m->max_connects)) != CURLM_OK)
      multi_failed(m, "curl_multi_setopt(CURLMOPT_MAXCONNECTS)", rc);
  }
  return 0;
}

void sl_curlm_remove(sl_curlm *m, CURL *easy) {
  CURLMcode rc = curl_multi_remove_handle(m->multi, easy);
  if (rc == CURLM_OK) m->transfers--;
  else multi_failed(m, "curl_multi_remove_handle", rc);
}

/* Started outside the timer phase, a 0 ms timer does not run re-entrantly. */
void sl_curlm_kick(sl_curlm *m) {
  int rc = uv_timer_start(m->timer, on_uv_timeout, 0, 0);
  if (rc != 0) {
    snprintf(m->error, sizeof m->error, "uv_timer_start: %s", uv_strerror(rc));
    fprintf(stderr, "sluice: %s\n", m->error);
  }
}
