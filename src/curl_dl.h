/*
** libcurl, loaded on first use. Linking it costs every start-up ~4 ms on this
** machine (it pulls in OpenSSL and some thirty libraries), a price a script that
** never opens a stream should not pay. Include this instead of <curl/curl.h>:
** the curl_* names below then call through sl_curl, filled by sl_curl_load().
*/
#ifndef SL_CURL_DL_H
#define SL_CURL_DL_H

#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include <stddef.h>

/* sluice needs CURLOPT_PREREQFUNCTION (7.80) and CURLOPT_PROTOCOLS_STR (7.85). */
#define SL_CURL_MIN 0x075500
#define SL_CURL_MIN_TEXT "7.85.0"

typedef struct sl_curl_api {
  CURLcode (*global_init)(long flags);
  void (*global_cleanup)(void);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_setopt)(CURLM *m, CURLMoption opt, ...);
  CURLMcode (*multi_socket_action)(CURLM *m, curl_socket_t s, int ev, int *running);
  CURLMsg *(*multi_info_read)(CURLM *m, int *pending);
  CURLMcode (*multi_assign)(CURLM *m, curl_socket_t s, void *p);
  CURLMcode (*multi_add_handle)(CURLM *m, CURL *e);
  CURLMcode (*multi_remove_handle)(CURLM *m, CURL *e);
  CURLMcode (*multi_cleanup)(CURLM *m);
  CURL *(*easy_init)(void);
  CURLcode (*easy_setopt)(CURL *e, CURLoption opt, ...);
  CURLcode (*easy_getinfo)(CURL *e, CURLINFO info, ...);
  void (*easy_cleanup)(CURL *e);
  CURLcode (*easy_pause)(CURL *e, int bitmask);
  const char *(*easy_strerror)(CURLcode code);
  const char *(*multi_strerror)(CURLMcode code);
  struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
  void (*slist_free_all)(struct curl_slist *l);
  curl_version_info_data *(*version_info)(CURLversion v);
} sl_curl_api;

/* The process-wide table of libcurl's entry points (a library is per process). */
extern sl_curl_api sl_curl;

/* Loads libcurl and runs curl_global_init once. Returns 0, or -1 with a
   message in err (also when libcurl is older than SL_CURL_MIN). */
int  sl_curl_load(char *err, size_t n);
int  sl_curl_loaded(void);
void sl_curl_unload(void);

#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt
#define curl_global_init sl_curl.global_init
#define curl_multi_init sl_curl.multi_init
#define curl_multi_setopt sl_curl.multi_setopt
#define curl_multi_socket_action sl_curl.multi_socket_action
#define curl_multi_info_read sl_curl.multi_info_read
#define curl_multi_assign sl_curl.multi_assign
#define curl_multi_add_handle sl_curl.multi_add_handle
#define curl_multi_remove_handle sl_curl.multi_remove_handle
#define curl_multi_cleanup sl_curl.multi_cleanup
#define curl_easy_init sl_curl.easy_init
#define curl_easy_setopt sl_curl.easy_setopt
#define curl_easy_getinfo sl_curl.easy_getinfo
#define curl_easy_cleanup sl_curl.easy_cleanup
#define curl_easy_pause sl_curl.easy_pause
#define curl_easy_strerror sl_curl.easy_strerror
#define curl_multi_strerror sl_curl.multi_strerror
#define curl_slist_append sl_curl.slist_append
#define curl_slist_free_all sl_curl.slist_free_all
#define curl_version_info sl_curl.version_info

#endif
