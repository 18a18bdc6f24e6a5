/*
** Lua's allocator. Streaming makes Lua allocate a few small blocks per event
** (the table, its slots, the data string) and the collector frees them in
** bursts, which malloc handles slowly (it coalesces and sorts its bins). Small
** blocks are kept on per-size free lists instead, up to a budget; Lua passes
** each block's size back when it frees it, so a block needs no header. The
** state is made with this allocator from its first block, so every block Lua
** frees has the size its class promises.
*/
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#define POOL_MAX (SL_POOL_GRAIN * SL_POOL_CLASSES)   /* larger: plain malloc */
#if defined(__SANITIZE_ADDRESS__)
#define POOL_KEEP 0            /* let ASan see every block come and go */
#else
#define POOL_KEEP (1u << 20)   /* bytes kept on the lists at most */
#endif

/* Class c holds blocks of (c + 1) * SL_POOL_GRAIN bytes; n > 0. */
static size_t pool_class(size_t n) { return (n - 1) / SL_POOL_GRAIN; }

static void *pool_get(sl_pool *p, size_t n) {
  size_t c;
  void *b;
  if (n > POOL_MAX) return malloc(n);
  c = pool_class(n);
  if (!(b = p->lists[c])) return malloc((c + 1) * SL_POOL_GRAIN);
  p->lists[c] = *(void **)b;
  p->kept -= (c + 1) * SL_POOL_GRAIN;
  return b;
}

static void pool_put(sl_pool *p, void *b, size_t n) {
  size_t c;
  if (n > POOL_MAX || p->kept + n > POOL_KEEP) {
    free(b);
    return;
  }
  c = pool_class(n);
  *(void **)b = p->lists[c];
  p->lists[c] = b;
  p->kept += (c + 1) * SL_POOL_GRAIN;
}

void *sl_pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sl_pool *p = ud;
  void *b;
  if (!ptr) return nsize ? pool_get(p, nsize) : NULL;  /* osize is a type tag */
  if (nsize == 0) {
    pool_put(p, ptr, osize);
    return NULL;
  }
  if (osize > POOL_MAX && nsize > POOL_MAX) return realloc(ptr, nsize);
  if (osize <= POOL_MAX && nsize <= POOL_MAX && pool_class(osize) == pool_class(nsize))
    return ptr;
  if (!(b = pool_get(p, nsize))) return nsize < osize ? ptr : NULL;  /* ptr is big enough */
  memcpy(b, ptr, osize < nsize ? osize : nsize);
  pool_put(p, ptr, osize);
  return b;
}

void sl_pool_free(sl_pool *p) {
  size_t c;
  for (c = 0; c < SL_POOL_CLASSES; c++)
    while (p->lists[c]) {
      void *b = p->lists[c];
      p->lists[c] = *(void **)b;
      free(b);
    }
  p->kept = 0;
}
