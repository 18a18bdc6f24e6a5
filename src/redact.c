/*
** Redaction in one pass. For each secret we keep where it next occurs at or
** after the current position (glibc's memmem is linear), take the nearest
** occurrence, copy what comes before it and the marker, and search again only
** for the secrets whose next occurrence was overtaken. Work is about the text
** length times the number of secrets, whatever the secrets are: a key of one
** character, or one that occurs in the marker itself, cannot make it loop.
*/
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "redact.h"

typedef struct out_buf {
  char *p;
  size_t len, cap;
} out_buf;

static int put(out_buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    char *p;
    while (cap < b->len + n + 1) cap *= 2;
    if (!(p = realloc(b->p, cap))) return -1;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

#define UNSEARCHED ((size_t)-2)
#define NOWHERE ((size_t)-1)   /* no occurrence at or after pos */

char *sl_redact(const char *text, size_t len, const char *const *secrets, int n,
                size_t *outlen) {
  out_buf b = {NULL, 0, 0};
  size_t *next = NULL, pos = 0;
  int i;
  if (n > 0 && !(next = malloc((size_t)n * sizeof *next))) return NULL;
  for (i = 0; i < n; i++) next[i] = UNSEARCHED;
  for (;;) {
    size_t hit = NOWHERE, hit_len = 0;
    for (i = 0; i < n; i++) {
      size_t sl = secrets[i] ? strlen(secrets[i]) : 0;
      if (sl == 0 || next[i] == NOWHERE) continue;
      if (next[i] == UNSEARCHED || next[i] < pos) {
        const char *m = sl <= len - pos ? memmem(text + pos, len - pos, secrets[i], sl) : NULL;
        next[i] = m ? (size_t)(m - text) : NOWHERE;
        if (!m) continue;
      }
      if (next[i] < hit || (next[i] == hit && sl > hit_len)) {
        hit = next[i];
        hit_len = sl;
      }
    }
    if (hit == NOWHERE) break;
    if (put(&b, text + pos, hit - pos) != 0 ||
        put(&b, SL_REDACTED, sizeof SL_REDACTED - 1) != 0)
      goto fail;
    pos = hit + hit_len;
  }
  if (put(&b, text + pos, len - pos) != 0) goto fail;
  free(next);
  if (outlen) *outlen = b.len;
  return b.p;
fail:
  free(next);
  free(b.p);
  return NULL;
}
