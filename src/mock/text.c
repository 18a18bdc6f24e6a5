/*
** Tokenizing the generated text, and the built-in passage.
*/
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "escape.h"
#include "text.h"

static const char default_text[] =
  "The old mill stood where the river narrowed between two shoulders of grey "
  "stone, and for as long as anyone in the valley could remember, the miller "
  "had opened the sluice at dawn and closed it again at dusk. Water was never "
  "a thing to be wasted. In the dry months it was counted like coins, and in "
  "the wet months it was watched like a restless animal that might, at any "
  "moment, decide to leave its pen.\n\n"
  "A sluice is a simple machine. It is a gate, a frame, and a wheel to raise "
  "and lower the gate, but the skill lies in knowing how far to open it. Open "
  "it too little and the wheel turns slowly, the stones barely grind, and the "
  "farmers wait at the door with their sacks. Open it too much and the channel "
  "floods, the wheel races, and something eventually breaks. The miller learned "
  "to listen to the water rather than to look at it: a steady hum meant all was "
  "well, while a rising hiss meant the gate should come down a hand's width.\n\n"
  "Travellers sometimes asked why he did not simply leave the gate half open "
  "and go about his day. He would laugh and point upstream, where the weather "
  "changed from hour to hour. Rain in the hills reached the mill by noon; a "
  "frost at night slowed everything by morning. The river was never the same "
  "river twice, he said, and a gate that could not be closed quickly was not "
  "a gate at all, only a hole in a wall.\n\n"
  "When the new owners finally replaced the wooden gate with an iron one, they "
  "kept the old wheel. It still hangs beside the door, polished by many hands, "
  "and children who visit the mill are allowed to turn it once. Most of them "
  "are surprised by how little force it takes. The hard part, the miller's "
  "granddaughter tells them, was never the turning. It was knowing, before "
  "anyone else did, that the moment to stop had arrived.";

const char *mock_default_text(void) {
  return default_text;
}

static int is_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_word(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

/* Start of the UTF-8 sequence containing s[at] (never before limit). */
static size_t utf8_back(const char *s, size_t at, size_t limit) {
  while (at > limit && ((unsigned char)s[at] & 0xC0) == 0x80)
    at--;
  return at;
}

typedef struct builder {
  mock_buf data;
  uint32_t *offsets;
  size_t count, cap;
  size_t max_escaped;
  const char *first;   /* raw bytes of token 0, for the wrap token */
  size_t first_len;
} builder;

static void add_token(builder *b, const char *raw, size_t len) {
  if (b->count + 2 >= b->cap) {
    b->cap = b->cap ? b->cap * 2 : 64;
    b->offsets = mock_xrealloc(b->offsets, b->cap * sizeof *b->offsets);
  }
  if (b->count == 0 && b->first == NULL) {
    b->first = raw;
    b->first_len = len;
  }
  b->offsets[b->count++] = (uint32_t)b->data.len;
  mock_buf_reserve(&b->data, len * 6);
  size_t n = mock_json_escape(b->data.data + b->data.len, raw, len);
  b->data.len += n;
  if (n > b->max_escaped)
    b->max_escaped = n;
}

static mock_tokens *finish(builder *b, int needs_space) {
  mock_tokens *t = mock_xcalloc(1, sizeof *t);
  t->count = b->count;
  if (b->count > 0) {
    /* the wrap token: token 0 again, with a separating space if needed */
    size_t count = b->count;
    if (needs_space) {
      char tmp[MOCK_TOKEN_MAX_RAW + 1];
      tmp[0] = ' ';
      memcpy(tmp + 1, b->first, b->first_len);
      add_token(b, tmp, b->first_len + 1);
    } else {
      add_token(b, b->first, b->first_len);
    }
    b->count = count;
  } else {
    b->offsets = mock_xrealloc(b->offsets, 2 * sizeof *b->offsets);
  }
  b->offsets[b->count + 1] = (uint32_t)b->data.len;
  if (b->count == 0)
    b->offsets[0] = 0;
  mock_buf_reserve(&b->data, 0);
  t->data = b->data.data;
  t->offsets = b->offsets;
  t->max_escaped = b->max_escaped;
  return t;
}

mock_tokens *mock_tokens_split(const char *text, size_t len) {
  builder b = {{0}, NULL, 0, 0, 0, NULL, 0};
  size_t i = 0;
  while (i < len) {
    size_t start = i;
    while (i < len && is_space((unsigned char)text[i]))
      i++;
    /* leading whitespace longer than a token becomes tokens of its own */
    while (i - start > MOCK_TOKEN_MAX_RAW) {
      add_token(&b, text + start, MOCK_TOKEN_MAX_RAW);
      start += MOCK_TOKEN_MAX_RAW;
    }
    if (i < len && is_word((unsigned char)text[i])) {
      while (i < len && (is_word((unsigned char)text[i]) ||
                         (text[i] == '\'' && i + 1 < len && i > start &&
                          is_word((unsigned char)text[i + 1]) &&
                          is_word((unsigned char)text[i - 1])))) {
        if (i - start == MOCK_TOKEN_MAX_RAW) {
          size_t cut = utf8_back(text, i, start + 1);
          add_token(&b, text + start, cut - start);
          start = cut;
        }
        i++;
      }
    } else if (i < len) {
      i++; /* one punctuation byte */
    }
    if (i > start)
      add_token(&b, text + start, i - start);
  }
  int needs_space = len > 0 && !is_space((unsigned char)text[0]) &&
                    !is_space((unsigned char)text[len - 1]);
  return finish(&b, needs_space);
}

mock_tokens *mock_tokens_fragments(const char *text, size_t len, size_t size) {
  builder b = {{0}, NULL, 0, 0, 0, NULL, 0};
  size_t i = 0;
  if (size == 0)
    size = 1;
  while (i < len) {
    size_t end = i + size < len ? i + size : len;
    if (end < len) {
      size_t cut = utf8_back(text, end, i + 1);
      if (((unsigned char)text[cut] & 0xC0) == 0x80 || cut == i)
        cut = end;
      end = cut;
    }
    add_token(&b, text + i, end - i);
    i = end;
  }
  return finish(&b, 0);
}

void mock_tokens_free(mock_tokens *t) {
  if (t == NULL)
    return;
  free(t->data);
  free(t->offsets);
  free(t);
}

uint64_t mock_count_words(const char *s, size_t len) {
  uint64_t n = 0;
  int in_word = 0;
  for (size_t i = 0; i < len; i++) {
    if (is_space((unsigned char)s[i]))
      in_word = 0;
    else if (!in_word) {
      in_word = 1;
      n++;
    }
  }
  return n;
}
