/*
** The curl-multi bridge: one CURLM driven by curl_multi_socket_action from
** uv_poll and uv_timer callbacks. No Lua here, and no idea what a transfer is
** for: each easy handle carries an sl_transfer whose hooks it calls, from a
** libuv callback after curl has returned.
*/
#ifndef SL_CURLM_H
#define SL_CURLM_H

#include "curl_dl.h"
#include <stddef.h>
#include <uv.h>

typedef struct sl_transfer sl_transfer;
struct sl_transfer {
  /* The transfer finished (curl_multi_info_read said so). */
  void (*on_done)(sl_transfer *x, CURLcode result);
  /* fd is the socket curl watches for the transfer now; gone = 1 when it
     stops watching it (curl may close it right after). May be NULL. */
  void (*on_socket)(sl_transfer *x, curl_socket_t fd, int gone);
};

typedef struct sl_curlm {
  CURLM *multi;           /* made by the first transfer; NULL until then */
  uv_timer_t *timer;      /* curl's timeout; heap-allocated, freed on close */
  uv_poll_t *poll;        /* watches epfd; heap-allocated, freed on close */
  int epfd;               /* an epoll set of the sockets curl watches */
  int watched;            /* sockets in it */
  unsigned long *sock_ino; /* by fd: the inode of each socket curl opened */
  size_t sock_cap;
  int transfers;          /* easy handles currently added */
  long max_connects;      /* the connection cache's size (CURLMOPT_MAXCONNECTS) */
  int multiplex;          /* HTTP/2 streams may share a connection (see curlm.c) */
  size_t queued_bytes;    /* what consumers of every transfer have not read yet */
  char error[160];        /* the last failure of a multi call, "" if none */
} sl_curlm;

int  sl_curlm_init(sl_curlm *m, uv_loop_t *uv);
/* Must run while the uv loop still exists: curl closes its connections. */
void sl_curlm_close(sl_curlm *m);
/* Loads libcurl and makes the multi handle on first use; -1 with err set. */
int  sl_curlm_ensure(sl_curlm *m, char *err, size_t n);
/* Adds easy, whose hooks are x's; sets its CURLOPT_PRIVATE and socket
   callbacks. -1 with err naming the failed call. */
int  sl_curlm_add(sl_curlm *m, CURL *easy, sl_transfer *x, char *err, size_t n);
/* Removing an unfinished transfer makes curl close its connection. */
void sl_curlm_remove(sl_curlm *m, CURL *easy);
/* Drive curl on the next loop pass (after an unpause). */
void sl_curlm_kick(sl_curlm *m);
/* Closes the connections kept alive for reuse, when no transfer is live.
   Returns how many sockets were closed. */
int  sl_curlm_drop_idle(sl_curlm *m);
/* How many sockets curl has open now (in use, or kept alive for reuse). */
int  sl_curlm_sockets(sl_curlm *m);

#endif
