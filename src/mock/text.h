/*
** The text the mock "generates": tokenized once into JSON-escaped pieces so a
** chunk is written with three memcpy calls.
*/
#ifndef MOCK_TEXT_H
#define MOCK_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* Raw bytes of one token before escaping are capped at this. */
#define MOCK_TOKEN_MAX_RAW 64

typedef struct mock_tokens {
  char *data;          /* escaped tokens, back to back */
  uint32_t *offsets;   /* count + 2 entries; entry count is the wrap token */
  size_t count;
  size_t max_escaped;  /* longest escaped token */
} mock_tokens;

/*
** Splits text into words with their leading whitespace, punctuation apart:
** "Hello, world" is "Hello", ",", " world". Long words are cut. An empty text
** gives zero tokens. The wrap token is token 0 as it reads after the last one
** when the text is cycled (with a space added if nothing separates them).
*/
mock_tokens *mock_tokens_split(const char *text, size_t len);
/* Cuts text into pieces of about size bytes, never inside a UTF-8 sequence. */
mock_tokens *mock_tokens_fragments(const char *text, size_t len, size_t size);
void mock_tokens_free(mock_tokens *t);

/* Token i of an endless repetition of the text (count must be > 0). */
static inline const char *mock_token(const mock_tokens *t, uint64_t i, size_t *len) {
  size_t k;
  if (i < t->count)
    k = (size_t)i;
  else {
    k = (size_t)(i % t->count);
    if (k == 0)
      k = t->count;
  }
  *len = t->offsets[k + 1] - t->offsets[k];
  return t->data + t->offsets[k];
}

/* The built-in passage used when no --text-file is given. */
const char *mock_default_text(void);
/* A rough token count for prompts: whitespace-separated words. */
uint64_t mock_count_words(const char *s, size_t len);

#endif
