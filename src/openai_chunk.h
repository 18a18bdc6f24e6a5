/*
** A fast path for the most common OpenAI-compatible streaming chunk: one
** choice whose only news is a piece of text (chat `delta.content` or
** completion `text`), nothing finished, no usage, no tool calls. Anything else
** is reported as "not simple" and the caller decodes the chunk fully. Pure
** bytes: no Lua, no allocation.
*/
#ifndef SL_OPENAI_CHUNK_H
#define SL_OPENAI_CHUNK_H

#include <stddef.h>

typedef struct sl_chunk_text {
  const char *p;   /* the JSON string's raw bytes (between the quotes) */
  size_t len;
  int escaped;     /* contains backslash escapes: unescape before use */
} sl_chunk_text;

/* Returns 1 and sets *text when json is a simple text chunk, else 0. */
int sl_chunk_simple(const char *json, size_t len, sl_chunk_text *text);

/* Unescapes a JSON string body into out (at least len bytes). Returns the
   length written, or (size_t)-1 if the escapes are invalid. */
size_t sl_json_unescape(const char *s, size_t len, char *out);

#endif
