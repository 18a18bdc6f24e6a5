/*
** Loading libcurl at run time (see curl_dl.h for why).
*/
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "curl_dl.h"

sl_curl_api sl_curl;
static void *lib;

int sl_curl_loaded(void) { return lib != NULL; }

int sl_curl_load(char *err, size_t n) {
  struct { const char *name; void **slot; } syms[] = {
#define SYM(f, field) {#f, (void **)&sl_curl.field}
      SYM(curl_global_init, global_init),
      SYM(curl_global_cleanup, global_cleanup),
      SYM(curl_multi_init, multi_init),
      SYM(curl_multi_setopt, multi_setopt),
      SYM(curl_multi_socket_action, multi_socket_action),
      SYM(curl_multi_info_read, multi_info_read),
      SYM(curl_multi_assign, multi_assign),
      SYM(curl_multi_add_handle, multi_add_handle),
      SYM(curl_multi_remove_handle, multi_remove_handle),
      SYM(curl_multi_cleanup, multi_cleanup),
      SYM(curl_easy_init, easy_init),
      SYM(curl_easy_setopt, easy_setopt),
      SYM(curl_easy_getinfo, easy_getinfo),
      SYM(curl_easy_cleanup, easy_cleanup),
      SYM(curl_easy_pause, easy_pause),
      SYM(curl_easy_strerror, easy_strerror),
      SYM(curl_multi_strerror, multi_strerror),
      SYM(curl_slist_append, slist_append),
      SYM(curl_slist_free_all, slist_free_all),
      SYM(curl_version_info, version_info),
#undef SYM
  };
  size_t i;
  if (lib) return 0;
  lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    snprintf(err, n, "cannot load libcurl (libcurl.so.4): %s", dlerror());
    return -1;
  }
  for (i = 0; i < sizeof syms / sizeof syms[0]; i++) {
    *syms[i].slot = dlsym(lib, syms[i].name);
    if (!*syms[i].slot) {
      snprintf(err, n, "libcurl has no %s (too old?)", syms[i].name);
      dlclose(lib);
      lib = NULL;
      return -1;
    }
  }
  {
    /* Say so now, rather than let live streams time out without a
       callback an older libcurl ignores. */
    const curl_version_info_data *v = sl_curl.version_info(CURLVERSION_NOW);
    if (!v || v->version_num < SL_CURL_MIN) {
      snprintf(err, n, "libcurl %s is too old: sluice needs %s or later",
               v ? v->version : "(unknown)", SL_CURL_MIN_TEXT);
      dlclose(lib);
      lib = NULL;
      return -1;
    }
  }
  if (sl_curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(err, n, "curl_global_init failed");
    dlclose(lib);
    lib = NULL;
    return -1;
  }
  return 0;
}

/* Leaves the library mapped: a library's atexit handlers may still point into it. */
void sl_curl_unload(void) {
  if (lib) sl_curl.global_cleanup();
}
