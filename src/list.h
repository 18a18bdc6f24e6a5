/*
** Intrusive doubly linked lists: a node lives inside the struct it links, so
** linking and unlinking never allocate. An unlinked node points to itself, which
** makes sl_list_remove safe to call twice.
*/
#ifndef SL_LIST_H
#define SL_LIST_H

#include <stddef.h>

typedef struct sl_list {
  struct sl_list *prev, *next;
} sl_list;

#define sl_container_of(p, type, member) \
  ((type *)((char *)(p) - offsetof(type, member)))

static inline void sl_list_init(sl_list *h) { h->prev = h->next = h; }
static inline int sl_list_empty(const sl_list *h) { return h->next == h; }

static inline void sl_list_push(sl_list *h, sl_list *n) {
  n->prev = h->prev;
  n->next = h;
  h->prev->next = n;
  h->prev = n;
}

static inline void sl_list_remove(sl_list *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

#endif
