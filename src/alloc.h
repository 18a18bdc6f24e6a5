/*
** Lua's allocator: small blocks on per-size free lists (see alloc.c for why).
*/
#ifndef SL_ALLOC_H
#define SL_ALLOC_H

#include <stddef.h>

#define SL_POOL_GRAIN 16
#define SL_POOL_CLASSES 64     /* blocks up to 1 KiB */

typedef struct sl_pool {
  void *lists[SL_POOL_CLASSES];
  size_t kept;           /* bytes on the lists */
} sl_pool;

/* A lua_Alloc; ud is the sl_pool. Give it to lua_newstate so every block Lua
   frees came from it. */
void *sl_pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* Frees what the lists keep; after lua_close. */
void sl_pool_free(sl_pool *p);

#endif
