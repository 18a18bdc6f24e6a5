/*
** Floors for the concurrency scenario, measured in the same run as sluice:
** N simultaneous POST streams to the mock, each read to its end, nothing
** parsed or kept.
**   floor_streams epoll URL N CHUNKS RATE   plain sockets, epoll and read():
**                                           what the kernel alone costs
**   floor_streams curl  URL N CHUNKS RATE   libcurl's multi interface driven
**                                           by sluice's own bridge (src/curlm.c)
**                                           with a write callback that drops
**                                           the data: sluice's transport, no
**                                           Lua
** Prints {"wall","cpu","peak_rss_mb","completed"} like the Lua worker.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "curlm.h"  /* sluice's bridge, and libcurl through src/curl_dl.c */

#define TAIL 7  /* "\r\n0\r\n\r\n": the last chunk of a chunked response */

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* ---- plain sockets ------------------------------------------------------ */

typedef struct conn {
  int fd;
  char tail[TAIL];  /* the last bytes received; the mock keeps the connection
                       open after a response, so its end is seen here */
} conn;

static void remember_tail(conn *c, const char *p, size_t m) {
  if (m >= TAIL) {
    memcpy(c->tail, p + m - TAIL, TAIL);
  } else {
    memmove(c->tail, c->tail + m, TAIL - m);
    memcpy(c->tail + TAIL - m, p, m);
  }
}

static int run_epoll(const char *url, int n, const char *body) {
  char host[64], req[1024];
  int port, ep = epoll_create1(0), left = n, completed = 0, reqlen;
  struct sockaddr_in a = {0};
  static char buf[16384];
  struct epoll_event evs[256];
  conn *cs = calloc((size_t)n, sizeof *cs);
  if (!cs || sscanf(url, "http://%63[^:]:%d", host, &port) != 2) return -1;
  reqlen = snprintf(req, sizeof req,
                    "POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%d\r\n"
                    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                    host, port, strlen(body), body);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, host, &a.sin_addr);
  for (int i = 0; i < n; i++) {
    int one = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
    cs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
    if (cs[i].fd < 0) return -1;
    setsockopt(cs[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(cs[i].fd, (void *)&a, sizeof a) != 0 ||
        write(cs[i].fd, req, (size_t)reqlen) != reqlen)
      return -1;
    fcntl(cs[i].fd, F_SETFL, O_NONBLOCK);
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  while (left > 0) {
    int k = epoll_wait(ep, evs, 256, -1);
    for (int j = 0; j < k; j++) {
      conn *c = evs[j].data.ptr;
      ssize_t m = read(c->fd, buf, sizeof buf);
      if (m < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (m > 0) {
        remember_tail(c, buf, (size_t)m);
        if (memcmp(c->tail, "\r\n0\r\n\r\n", TAIL) != 0) continue;
        completed++;
      }
      close(c->fd);
      left--;
    }
  }
  free(cs);
  close(ep);
  return completed;
}

/* ---- sluice's own curl-multi bridge (src/curlm.c), without Lua ----------- */

static sl_curlm net;
static int completed;

typedef struct floor_transfer {
  sl_transfer x;  /* first: the bridge hands back &x */
  CURL *easy;
} floor_transfer;

/* Called once a transfer is over, after curl has returned (as for sluice). */
static void on_done(sl_transfer *x, CURLcode result) {
  floor_transfer *t = (floor_transfer *)x;
  if (result == CURLE_OK) completed++;
  sl_curlm_remove(&net, t->easy);
  curl_easy_cleanup(t->easy);
  free(t);
}

static size_t drop(char *p, size_t size, size_t nmemb, void *ud) {
  (void)p, (void)ud;
  return size * nmemb;
}

static int run_curl(const char *url, int n, const char *body) {
  char full[256], err[256];
  uv_loop_t *uv = uv_default_loop();
  struct curl_slist *h;
  if (sl_curlm_init(&net, uv) != 0 || sl_curlm_ensure(&net, err, sizeof err) != 0) {
    fprintf(stderr, "floor_streams: %s\n", err);
    return -1;
  }
  h = curl_slist_append(NULL, "Content-Type: application/json");
  snprintf(full, sizeof full, "%s/v1/chat/completions", url);
  for (int i = 0; i < n; i++) {
    CURL *e = curl_easy_init();
    floor_transfer *t = calloc(1, sizeof *t);
    t->x.on_done = on_done;
    t->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, full);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, drop);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    if (n >= 256) curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 1024L);  /* as sluice */
    if (sl_curlm_add(&net, e, &t->x, err, sizeof err) != 0) {
      fprintf(stderr, "floor_streams: %s\n", err);
      return -1;
    }
  }
  uv_run(uv, UV_RUN_DEFAULT);
  sl_curlm_close(&net);
  uv_run(uv, UV_RUN_DEFAULT);  /* the handles' close callbacks */
  curl_slist_free_all(h);
  return completed;
}

int main(int argc, char **argv) {
  char body[512];
  struct rlimit r;
  struct rusage u;
  double t0, wall;
  int n, done;
  if (argc != 6) {
    fprintf(stderr, "usage: floor_streams epoll|curl URL N CHUNKS RATE\n");
    return 2;
  }
  n = atoi(argv[3]);
  snprintf(body, sizeof body,
           "{\"model\":\"m\",\"stream\":true,\"max_tokens\":%d,\"messages\":"
           "[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"tokens_per_sec\":%d}}",
           atoi(argv[4]), atoi(argv[5]));
  if (getrlimit(RLIMIT_NOFILE, &r) == 0) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
  t0 = now_s();
  done = strcmp(argv[1], "curl") == 0 ? run_curl(argv[2], n, body) : run_epoll(argv[2], n, body);
  wall = now_s() - t0;
  getrusage(RUSAGE_SELF, &u);
  printf("{\"wall\":%.3f,\"cpu\":%.3f,\"peak_rss_mb\":%.1f,\"completed\":%d}\n", wall,
         u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6,
         u.ru_maxrss / 1024.0, done);
  return done == n ? 0 : 1;
}
