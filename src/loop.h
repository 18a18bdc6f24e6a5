/*
** The curl-multi bridge: one CURLM driven by curl_multi_socket_action from
** uv_poll and uv_timer callbacks. No Lua here. Finished transfers are reported
** through on_done, called from a libuv callback after curl has returned.
*/
#ifndef SL_LOOP_H
#define SL_LOOP_H

#include "curl_dl.h"
#include <stddef.h>
#include <uv.h>

typedef void (*sl_done_fn)(void *priv, CURLcode result);
/* fd is the socket a transfer is using now; gone = 1 when curl stops using
   it (it may close it right after). */
typedef void (*sl_socket_fn)(void *priv, curl_socket_t fd, int gone);

typedef struct sl_loop {
  CURLM *multi;
  uv_timer_t *timer;      /* curl's timeout; heap-allocated, freed on close */
  sl_done_fn on_done;     /* priv is the easy handle's CURLOPT_PRIVATE */
  sl_socket_fn on_socket; /* may be NULL */
  int transfers;          /* easy handles currently added */
  long max_connects;      /* the connection cache's size (CURLMOPT_MAXCONNECTS) */
  uv_poll_t *poll;        /* watches epfd; heap-allocated, freed on close */
  int epfd;               /* an epoll set of the sockets curl watches */
  int sockets;            /* how many are in it */
} sl_loop;

int  sl_loop_init(sl_loop *l, uv_loop_t *uv, sl_done_fn on_done, sl_socket_fn on_socket);
void sl_loop_close(sl_loop *l);
/* Loads libcurl and creates the multi handle on first use; -1 with err set. */
int  sl_loop_ensure(sl_loop *l, char *err, size_t n);
int  sl_loop_add(sl_loop *l, CURL *easy);
void sl_loop_remove(sl_loop *l, CURL *easy);
void sl_loop_kick(sl_loop *l);

#endif
