/*
** A small JSON reader: recursive descent over the text into a tree whose nodes
** and strings live in one arena, so a request body is freed in one call.
** Strict RFC 8259 grammar, depth limited; plus the string escaper.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

typedef struct arena_chunk {
  struct arena_chunk *next;
  size_t used, size;
  _Alignas(max_align_t) char data[];
} arena_chunk;

struct mock_json_doc {
  arena_chunk *chunks;
};

typedef struct parser {
  const char *p, *end;
  mock_json_doc *doc;
  int depth;
  const char *error;
} parser;

static void *arena_alloc(mock_json_doc *doc, size_t size) {
  size = (size + 15) & ~(size_t)15;
  arena_chunk *c = doc->chunks;
  if (c == NULL || c->size - c->used < size) {
    size_t want = size > 16384 ? size : 16384;
    c = mock_xmalloc(sizeof *c + want);
    c->used = 0;
    c->size = want;
    c->next = doc->chunks;
    doc->chunks = c;
  }
  void *p = c->data + c->used;
  c->used += size;
  return p;
}

void mock_json_free(mock_json_doc *doc) {
  if (doc == NULL)
    return;
  arena_chunk *c = doc->chunks;
  while (c) {
    arena_chunk *next = c->next;
    free(c);
    c = next;
  }
  free(doc);
}

static mock_json *new_node(parser *ps, mock_json_type type) {
  mock_json *n = arena_alloc(ps->doc, sizeof *n);
  memset(n, 0, sizeof *n);
  n->type = type;
  return n;
}

static void skip_space(parser *ps) {
  while (ps->p < ps->end &&
         (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static int fail(parser *ps, const char *msg) {
  if (ps->error == NULL)
    ps->error = msg;
  return -1;
}

static int hex4(const char *s, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (unsigned)(c - 'A' + 10);
    else
      return -1;
  }
  *out = v;
  return 0;
}

static size_t put_utf8(char *dst, unsigned cp) {
  if (cp < 0x80) {
    dst[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    dst[0] = (char)(0xC0 | (cp >> 6));
    dst[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    dst[0] = (char)(0xE0 | (cp >> 12));
    dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  dst[0] = (char)(0xF0 | (cp >> 18));
  dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  dst[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* At the opening quote. The unescaped text is never longer than the source. */
static int parse_string(parser *ps, const char **out, size_t *out_len) {
  const char *start = ++ps->p;
  const char *q = start;
  while (q < ps->end && *q != '"') {
    if (*q == '\\')
      q++;
    q++;
  }
  if (q >= ps->end)
    return fail(ps, "unterminated string");
  char *dst = arena_alloc(ps->doc, (size_t)(q - start) + 1);
  size_t n = 0;
  const char *s = start;
  while (s < q) {
    unsigned char c = (unsigned char)*s;
    if (c < 0x20)
      return fail(ps, "control character in string");
    if (c != '\\') {
      dst[n++] = (char)c;
      s++;
      continue;
    }
    s++;
    switch (*s++) {
    case '"': dst[n++] = '"'; break;
    case '\\': dst[n++] = '\\'; break;
    case '/': dst[n++] = '/'; break;
    case 'b': dst[n++] = '\b'; break;
    case 'f': dst[n++] = '\f'; break;
    case 'n': dst[n++] = '\n'; break;
    case 'r': dst[n++] = '\r'; break;
    case 't': dst[n++] = '\t'; break;
    case 'u': {
      unsigned cp;
      if (q - s < 4 || hex4(s, &cp) < 0)
        return fail(ps, "bad \\u escape");
      s += 4;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned low;
        if (q - s >= 6 && s[0] == '\\' && s[1] == 'u' && hex4(s + 2, &low) == 0 &&
            low >= 0xDC00 && low <= 0xDFFF) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          s += 6;
        } else {
          cp = 0xFFFD; /* a lone high surrogate */
        }
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        cp = 0xFFFD;
      }
      /* six source bytes always cover the at most four written */
      n += put_utf8(dst + n, cp);
      break;
    }
    default:
      return fail(ps, "bad escape in string");
    }
  }
  dst[n] = '\0';
  *out = dst;
  *out_len = n;
  ps->p = q + 1;
  return 0;
}

static int parse_number(parser *ps, mock_json *n) {
  const char *s = ps->p, *e = ps->end;
  if (s < e && *s == '-')
    s++;
  if (s >= e || !(*s >= '0' && *s <= '9'))
    return fail(ps, "bad number");
  if (*s == '0')
    s++;
  else
    while (s < e && *s >= '0' && *s <= '9')
      s++;
  if (s < e && *s == '.') {
    s++;
    if (s >= e || !(*s >= '0' && *s <= '9'))
      return fail(ps, "bad number");
    while (s < e && *s >= '0' && *s <= '9')
      s++;
  }
  if (s < e && (*s == 'e' || *s == 'E')) {
    s++;
    if (s < e && (*s == '+' || *s == '-'))
      s++;
    if (s >= e || !(*s >= '0' && *s <= '9'))
      return fail(ps, "bad number");
    while (s < e && *s >= '0' && *s <= '9')
      s++;
  }
  char tmp[64];
  size_t len = (size_t)(s - ps->p);
  if (len < sizeof tmp) {
    memcpy(tmp, ps->p, len);
    tmp[len] = '\0';
    n->number = strtod(tmp, NULL);
  } else {
    char *big = mock_xstrndup(ps->p, len);
    n->number = strtod(big, NULL);
    free(big);
  }
  ps->p = s;
  return 0;
}

static int literal(parser *ps, const char *word) {
  size_t len = strlen(word);
  if ((size_t)(ps->end - ps->p) < len || memcmp(ps->p, word, len) != 0)
    return fail(ps, "unexpected token");
  ps->p += len;
  return 0;
}

static mock_json *parse_value(parser *ps);

static mock_json *parse_container(parser *ps, int is_object) {
  if (++ps->depth > MOCK_JSON_MAX_DEPTH) {
    fail(ps, "nesting too deep");
    return NULL;
  }
  mock_json *node = new_node(ps, is_object ? MOCK_JSON_OBJECT : MOCK_JSON_ARRAY);
  mock_json **tail = &node->child;
  char close = is_object ? '}' : ']';
  ps->p++;
  skip_space(ps);
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
    ps->depth--;
    return node;
  }
  for (;;) {
    const char *key = NULL;
    size_t key_len = 0;
    if (is_object) {
      skip_space(ps);
      if (ps->p >= ps->end || *ps->p != '"') {
        fail(ps, "expected a member name");
        return NULL;
      }
      if (parse_string(ps, &key, &key_len) < 0)
        return NULL;
      skip_space(ps);
      if (ps->p >= ps->end || *ps->p != ':') {
        fail(ps, "expected ':'");
        return NULL;
      }
      ps->p++;
    }
    mock_json *item = parse_value(ps);
    if (item == NULL)
      return NULL;
    item->key = key;
    item->key_length = key_len;
    *tail = item;
    tail = &item->next;
    node->count++;
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      ps->p++;
      continue;
    }
    if (ps->p < ps->end && *ps->p == close) {
      ps->p++;
      ps->depth--;
      return node;
    }
    fail(ps, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
    return NULL;
  }
}

static mock_json *parse_value(parser *ps) {
  skip_space(ps);
  if (ps->p >= ps->end) {
    fail(ps, "unexpected end of input");
    return NULL;
  }
  mock_json *n;
  switch (*ps->p) {
  case '{':
    return parse_container(ps, 1);
  case '[':
    return parse_container(ps, 0);
  case '"':
    n = new_node(ps, MOCK_JSON_STRING);
    return parse_string(ps, &n->string, &n->length) < 0 ? NULL : n;
  case 't':
    n = new_node(ps, MOCK_JSON_TRUE);
    return literal(ps, "true") < 0 ? NULL : n;
  case 'f':
    n = new_node(ps, MOCK_JSON_FALSE);
    return literal(ps, "false") < 0 ? NULL : n;
  case 'n':
    n = new_node(ps, MOCK_JSON_NULL);
    return literal(ps, "null") < 0 ? NULL : n;
  default:
    n = new_node(ps, MOCK_JSON_NUMBER);
    return parse_number(ps, n) < 0 ? NULL : n;
  }
}

mock_json *mock_json_parse(const char *text, size_t len, mock_json_doc **doc,
                           char *err, size_t err_size) {
  parser ps = {text, text + len, mock_xcalloc(1, sizeof(mock_json_doc)), 0, NULL};
  mock_json *root = parse_value(&ps);
  if (root) {
    skip_space(&ps);
    if (ps.p != ps.end) {
      fail(&ps, "trailing characters after the value");
      root = NULL;
    }
  }
  if (root == NULL) {
    if (err && err_size)
      snprintf(err, err_size, "%s at byte %zu", ps.error ? ps.error : "invalid JSON",
               (size_t)(ps.p - text));
    mock_json_free(ps.doc);
    *doc = NULL;
    return NULL;
  }
  *doc = ps.doc;
  return root;
}

const mock_json *mock_json_get(const mock_json *object, const char *key) {
  if (object == NULL || object->type != MOCK_JSON_OBJECT)
    return NULL;
  size_t len = strlen(key);
  for (const mock_json *m = object->child; m; m = m->next)
    if (m->key_length == len && memcmp(m->key, key, len) == 0)
      return m;
  return NULL;
}

int mock_json_is_true(const mock_json *value) {
  return value != NULL && value->type == MOCK_JSON_TRUE;
}

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
