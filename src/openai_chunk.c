/*
** The simple-chunk recognizer: a small JSON scanner that skips what it does
** not need and accepts a chunk only when every field it does not extract is
** one that carries no news (ids, model name, nulls). It must never accept a
** chunk whose full decoding would say something more than its text.
*/
#include <stdint.h>
#include <string.h>

#include "openai_chunk.h"

#define MAX_DEPTH 32

typedef struct scan {
  const char *p, *end;
} scan;

static void ws(scan *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
    s->p++;
}

static int eat(scan *s, char c) {
  if (s->p < s->end && *s->p == c) {  /* compact JSON, as servers write it */
    s->p++;
    return 1;
  }
  ws(s);
  if (s->p < s->end && *s->p == c) {
    s->p++;
    return 1;
  }
  return 0;
}

static int hex4(const char *p, unsigned *v);

/* The first '"', backslash or control byte in [p, end), or end. Eight bytes
   at a time where it can: a byte is flagged when it XORs to zero against
   the quote or the backslash, or is below 0x20; flags can be false only
   above a true one (a borrow), so the lowest is exact. */
static const char *string_stop(const char *p, const char *end) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
  while (end - p >= 8) {
    uint64_t x, q, b, m;
    memcpy(&x, p, 8);
    q = x ^ (ones * '"');
    b = x ^ (ones * '\\');
    m = ((q - ones) & ~q) | ((b - ones) & ~b) | ((x - ones * 0x20) & ~x);
    m &= highs;
    if (m) return p + (__builtin_ctzll(m) >> 3);
    p += 8;
  }
#endif
  while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20) p++;
  return p;
}

/* A string at s->p (the opening quote): sets its body and length. */
static int string(scan *s, const char **b, size_t *n, int *escaped) {
  const char *q;
  int esc = 0;
  if (s->p < s->end && *s->p != '"') ws(s);
  if (s->p >= s->end || *s->p != '"') return 0;
  q = ++s->p;
  for (;;) {
    const char *hit = string_stop(q, s->end);
    if (hit >= s->end || (unsigned char)*hit < 0x20) return 0;
    if (*hit == '"') {
      *b = s->p;
      *n = (size_t)(hit - s->p);
      if (escaped) *escaped = esc;
      s->p = hit + 1;
      return 1;
    }
    esc = 1;  /* a backslash: only JSON's escapes are accepted */
    if (hit + 1 >= s->end) return 0;
    switch (hit[1]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
      q = hit + 2;
      break;
    case 'u': {
      /* As strict as the full decoder: a surrogate half is only accepted
         as a high one followed by a low one. */
      unsigned cp, lo;
      if (s->end - hit < 6 || !hex4(hit + 2, &cp)) return 0;
      q = hit + 6;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (s->end - q < 6 || q[0] != '\\' || q[1] != 'u' || !hex4(q + 2, &lo) ||
            lo < 0xDC00 || lo > 0xDFFF)
          return 0;
        q += 6;
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return 0;
      }
      break;
    }
    default:
      return 0;
    }
  }
}

static int is_null(scan *s) {
  ws(s);
  if (s->end - s->p >= 4 && memcmp(s->p, "null", 4) == 0) {
    s->p += 4;
    return 1;
  }
  return 0;
}

static int skip_value(scan *s, int depth);

static int literal(scan *s, const char *word, size_t n) {
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0) return 0;
  s->p += n;
  return 1;
}

static int digits(scan *s) {
  const char *q = s->p;
  while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
  return s->p > q;
}

/* A JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int number(scan *s) {
  if (s->p < s->end && *s->p == '-') s->p++;
  if (s->p < s->end && *s->p == '0') s->p++;
  else if (!digits(s)) return 0;
  if (s->p < s->end && *s->p == '.') {
    s->p++;
    if (!digits(s)) return 0;
  }
  if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
    s->p++;
    if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
    if (!digits(s)) return 0;
  }
  return 1;
}

static int skip_container(scan *s, char close, int object, int depth) {
  if (depth > MAX_DEPTH) return 0;
  if (eat(s, close)) return 1;
  for (;;) {
    if (object) {
      const char *b;
      size_t n;
      if (!string(s, &b, &n, NULL) || !eat(s, ':')) return 0;
    }
    if (!skip_value(s, depth + 1)) return 0;
    if (eat(s, close)) return 1;
    if (!eat(s, ',')) return 0;
  }
}

static int skip_value(scan *s, int depth) {
  const char *b;
  size_t n;
  ws(s);
  if (s->p >= s->end) return 0;
  switch (*s->p) {
  case '"': return string(s, &b, &n, NULL);
  case '{': s->p++; return skip_container(s, '}', 1, depth);
  case '[': s->p++; return skip_container(s, ']', 0, depth);
  case 't': return literal(s, "true", 4);
  case 'f': return literal(s, "false", 5);
  case 'n': return literal(s, "null", 4);
  default: return number(s);
  }
}

#define KEY(k) (n == sizeof(k) - 1 && memcmp(b, k, n) == 0)

/* A member's name and its colon. A name with escapes is refused: the full
   decoder reads "d\u0065lta" as "delta", and no server writes one. */
static int key(scan *s, const char **b, size_t *n) {
  int escaped;
  return string(s, b, n, &escaped) && !escaped && eat(s, ':');
}

/* delta: {"content": "...", <other keys null>} (a role key means a first chunk). */
static int delta(scan *s, sl_chunk_text *text, int *found) {
  if (!eat(s, '{')) return 0;
  if (eat(s, '}')) return 1;
  for (;;) {
    const char *b;
    size_t n;
    if (!key(s, &b, &n)) return 0;
    if (KEY("content")) {
      if (is_null(s)) {
        *found = 0;  /* a repeated key: the last one counts, as in cjson */
      } else {
        if (!string(s, &text->p, &text->len, &text->escaped)) return 0;
        *found = 1;
      }
    } else if (!is_null(s)) {
      return 0;  /* role, tool_calls, reasoning: full decoding */
    }
    if (eat(s, '}')) return 1;
    if (!eat(s, ',')) return 0;
  }
}

/* A choice has one "delta" (chat) or one "text" (completions): the full
   decoder takes the last of repeated keys and ignores text beside a delta. */
static int choice(scan *s, sl_chunk_text *text, int *found) {
  int pieces = 0;
  if (!eat(s, '{')) return 0;
  if (eat(s, '}')) return 1;
  for (;;) {
    const char *b;
    size_t n;
    if (!key(s, &b, &n)) return 0;
    if (KEY("index")) {
      ws(s);
      if (s->end - s->p < 1 || *s->p != '0') return 0;
      s->p++;
    } else if (KEY("delta")) {
      if (pieces++ || !delta(s, text, found)) return 0;
    } else if (KEY("text")) {
      if (pieces++ || !string(s, &text->p, &text->len, &text->escaped)) return 0;
      *found = 1;
    } else if (!is_null(s)) {
      return 0;  /* finish_reason, logprobs, ... with a value */
    }
    if (eat(s, '}')) return 1;
    if (!eat(s, ',')) return 0;
  }
}

/* "object": anything but "error", which sluice.openai reads as an error chunk
   (an escaped string is refused rather than decoded to compare). */
static int object_type(scan *s) {
  const char *b;
  size_t n;
  int escaped;
  ws(s);
  if (s->p < s->end && *s->p == '"')
    return string(s, &b, &n, &escaped) && !escaped && !KEY("error");
  return skip_value(s, 0);
}

int sl_chunk_simple(const char *json, size_t len, sl_chunk_text *text) {
  scan s = {json, json + len};
  int found = 0, choices = 0;
  if (!eat(&s, '{')) return 0;
  for (;;) {
    const char *b;
    size_t n;
    if (!key(&s, &b, &n)) return 0;
    if (KEY("choices")) {
      if (choices || !eat(&s, '[') || !choice(&s, text, &found) || !eat(&s, ']')) return 0;
      choices = 1;
    } else if (KEY("object")) {
      if (!object_type(&s)) return 0;
    } else if (KEY("id") || KEY("created") || KEY("model") ||
               KEY("system_fingerprint") || KEY("service_tier")) {
      if (!skip_value(&s, 0)) return 0;
    } else if (!is_null(&s)) {
      return 0;  /* usage, error, or anything unknown with a value */
    }
    if (eat(&s, '}')) break;
    if (!eat(&s, ',')) return 0;
  }
  ws(&s);
  return s.p == s.end && choices && found;
}

static int hex4(const char *p, unsigned *v) {
  int i;
  *v = 0;
  for (i = 0; i < 4; i++) {
    char c = p[i];
    *v <<= 4;
    if (c >= '0' && c <= '9') *v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') *v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') *v |= (unsigned)(c - 'A' + 10);
    else return 0;
  }
  return 1;
}

size_t sl_json_unescape(const char *s, size_t len, char *out) {
  const char *end = s + len;
  char *w = out;
  while (s < end) {
    const char *bs = memchr(s, '\\', (size_t)(end - s));
    size_t run = bs ? (size_t)(bs - s) : (size_t)(end - s);
    memcpy(w, s, run);
    w += run;
    s += run;
    if (!bs) break;
    if (end - s < 2) return (size_t)-1;
    switch (s[1]) {
    case '"': *w++ = '"'; break;
    case '\\': *w++ = '\\'; break;
    case '/': *w++ = '/'; break;
    case 'b': *w++ = '\b'; break;
    case 'f': *w++ = '\f'; break;
    case 'n': *w++ = '\n'; break;
    case 'r': *w++ = '\r'; break;
    case 't': *w++ = '\t'; break;
    case 'u': {
      unsigned cp, lo;
      if (end - s < 6 || !hex4(s + 2, &cp)) return (size_t)-1;
      s += 4;
      if (cp >= 0xD800 && cp <= 0xDBFF) {  /* a surrogate pair */
        if (end - s < 8 || s[2] != '\\' || s[3] != 'u' || !hex4(s + 4, &lo) ||
            lo < 0xDC00 || lo > 0xDFFF)
          return (size_t)-1;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        s += 6;
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return (size_t)-1;
      }
      /* UTF-8 is never longer than the escape it replaces (6 or 12 bytes). */
      if (cp < 0x80) *w++ = (char)cp;
      else if (cp < 0x800) {
        *w++ = (char)(0xC0 | (cp >> 6));
        *w++ = (char)(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        *w++ = (char)(0xE0 | (cp >> 12));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
      } else {
        *w++ = (char)(0xF0 | (cp >> 18));
        *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
      }
      break;
    }
    default: return (size_t)-1;
    }
    s += 2;
  }
  return (size_t)(w - out);
}
