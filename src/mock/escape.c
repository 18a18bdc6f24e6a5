/*
** The string escaper every response is written with. Request bodies are read
** with jansson (request.c); writing stays here because the streaming path
** pre-formats its chunks and escapes each token once.
*/
#include <string.h>

#include "escape.h"

/* Length of the valid UTF-8 sequence at s (2..4), or 0 if it is not valid. */
static size_t utf8_sequence(const unsigned char *s, size_t avail) {
  unsigned char c = s[0];
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF)
    need = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0)
      lo = 0xA0;
    else if (c == 0xED)
      hi = 0x9F; /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0)
      lo = 0x90;
    else if (c == 0xF4)
      hi = 0x8F;
  } else
    return 0;
  if (avail < need || s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < need; i++)
    if (s[i] < 0x80 || s[i] > 0xBF)
      return 0;
  return need;
}

size_t mock_json_escape(char *dst, const char *src, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)src;
  char *d = dst;
  size_t i = 0;
  while (i < len) {
    unsigned char c = s[i];
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      *d++ = (char)c;
      i++;
      continue;
    }
    if (c >= 0x80) {
      size_t n = utf8_sequence(s + i, len - i);
      if (n == 0) {
        memcpy(d, "\\ufffd", 6);
        d += 6;
        i++;
      } else {
        memcpy(d, s + i, n);
        d += n;
        i += n;
      }
      continue;
    }
    *d++ = '\\';
    switch (c) {
    case '"': *d++ = '"'; break;
    case '\\': *d++ = '\\'; break;
    case '\n': *d++ = 'n'; break;
    case '\r': *d++ = 'r'; break;
    case '\t': *d++ = 't'; break;
    case '\b': *d++ = 'b'; break;
    case '\f': *d++ = 'f'; break;
    default:
      *d++ = 'u';
      *d++ = '0';
      *d++ = '0';
      *d++ = hex[c >> 4];
      *d++ = hex[c & 15];
    }
    i++;
  }
  return (size_t)(d - dst);
}

void mock_buf_json_string(mock_buf *b, const char *src, size_t len) {
  mock_buf_reserve(b, len * 6 + 2);
  b->data[b->len++] = '"';
  b->len += mock_json_escape(b->data + b->len, src, len);
  b->data[b->len++] = '"';
  b->data[b->len] = '\0';
}
