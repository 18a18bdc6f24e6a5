/*
** Differential libFuzzer target for the simple-chunk fast path
** (src/openai_chunk.c). Whenever the fast path hands out a text (the
** binding's rule: sl_chunk_simple accepts and, when escaped,
** sl_json_unescape succeeds), a full JSON decoder (jansson) must read the
** same bytes as one choice whose only news is that text, byte for byte:
**
**   top level  "choices": [one object]; "id", "object", "created", "model",
**              "system_fingerprint", "service_tier" with any value but an
**              "object" of "error" (sluice.openai's sign of an error chunk);
**              every other member null
**   choice     "index" absent or 0; either "delta": {"content": TEXT, every
**              other member null} or "text": TEXT, not both; every other
**              member null
**
** Repeated keys count as in lua-cjson and jansson: the last one wins.
** Declining is always allowed. What jansson refuses but lua-cjson (the
** binding's full decoder) reads, invalid UTF-8 and a \u0000 in a member
** name, is checked on a copy with every byte >= 0x80 turned into 'X' and
** \u0000 into \u0001: the fast path must pick the same bytes there, and
** those must decode as above.
*/
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "openai_chunk.h"

/* The fast path as the binding uses it: 1 with the text in *out (malloc'd). */
static int fast(const char *json, size_t len, char **out, size_t *out_len, size_t *at) {
  sl_chunk_text t;
  char *buf;
  size_t n;
  if (!sl_chunk_simple(json, len, &t)) return 0;
  if (t.p < json || t.p + t.len > json + len) fz_fail("the text lies outside the input");
  buf = fz_malloc(t.len + 1);
  if (t.escaped) {
    n = sl_json_unescape(t.p, t.len, buf);
    if (n == (size_t)-1) {  /* declined after all: the full decoder reports it */
      free(buf);
      return 0;
    }
    if (n > t.len) fz_fail("unescaping wrote %zu bytes for %zu", n, t.len);
  } else {
    if (memchr(t.p, '\\', t.len)) fz_fail("a text with a backslash was not marked escaped");
    memcpy(buf, t.p, t.len);
    n = t.len;
  }
  *out = buf;
  *out_len = n;
  *at = (size_t)(t.p - json);
  return 1;
}

static int is_null_or_absent(const json_t *v) {
  return v == NULL || json_is_null(v);
}

/* The text a full decoding finds, or NULL with *why set when the chunk says
   anything more (or is not one choice of text). */
static const json_t *full_text(const json_t *root, const char **why) {
  const char *key;
  const json_t *v, *choices, *choice, *delta, *text = NULL;
  if (!json_is_object(root)) return *why = "not an object", NULL;
  json_object_foreach((json_t *)root, key, v) {
    if (strcmp(key, "choices") == 0) continue;
    if (strcmp(key, "object") == 0 && json_is_string(v) &&
        strcmp(json_string_value(v), "error") == 0 && json_string_length(v) == 5)
      return *why = "\"object\": \"error\"", NULL;
    if (strcmp(key, "id") == 0 || strcmp(key, "object") == 0 || strcmp(key, "created") == 0 ||
        strcmp(key, "model") == 0 || strcmp(key, "system_fingerprint") == 0 ||
        strcmp(key, "service_tier") == 0)
      continue;
    if (!json_is_null(v)) return *why = "a top-level member with news", NULL;
  }
  choices = json_object_get(root, "choices");
  if (!json_is_array(choices) || json_array_size(choices) != 1)
    return *why = "not one choice", NULL;
  choice = json_array_get(choices, 0);
  if (!json_is_object(choice)) return *why = "the choice is not an object", NULL;
  json_object_foreach((json_t *)choice, key, v) {
    if (strcmp(key, "index") == 0) {
      if (!json_is_number(v) || json_number_value(v) != 0) return *why = "index is not 0", NULL;
    } else if (strcmp(key, "delta") != 0 && strcmp(key, "text") != 0 && !json_is_null(v)) {
      return *why = "a choice member with news", NULL;
    }
  }
  delta = json_object_get(choice, "delta");
  if (!is_null_or_absent(delta)) {
    if (!json_is_object(delta)) return *why = "delta is not an object", NULL;
    if (!is_null_or_absent(json_object_get(choice, "text")))
      return *why = "both delta and text", NULL;
    json_object_foreach((json_t *)delta, key, v) {
      if (strcmp(key, "content") != 0 && !json_is_null(v))
        return *why = "a delta member with news", NULL;
    }
    text = json_object_get(delta, "content");
  } else {
    text = json_object_get(choice, "text");
  }
  if (!json_is_string(text)) return *why = "no text", NULL;
  return text;
}

/* The copy jansson can read when the original has bytes it refuses but
   lua-cjson (the binding's full decoder) passes: invalid UTF-8 (any byte >=
   0x80 becomes 'X') and a \u0000 escape inside a member name (it becomes
   \u0001, inside every string). Byte for byte, so offsets stay put. Returns
   NULL when there is nothing to mask. */
static char *masked_copy(const uint8_t *data, size_t size) {
  char *m = fz_malloc(size);
  int changed = 0, in_string = 0;
  for (size_t i = 0; i < size; i++) {
    m[i] = (char)data[i];
    if (data[i] >= 0x80) {
      m[i] = 'X';
      changed = 1;
    } else if (data[i] == '"') {
      in_string = !in_string;
    } else if (in_string && data[i] == '\\' && i + 1 < size) {
      i++;
      m[i] = (char)data[i];  /* the escaped byte, never a string's end */
      if (data[i] == 'u' && i + 4 < size && memcmp(data + i + 1, "0000", 4) == 0) {
        memcpy(m + i + 1, "0001", 4);
        i += 4;
        changed = 1;
      }
    }
  }
  if (!changed) {
    free(m);
    return NULL;
  }
  return m;
}

static void check(const char *json, size_t len, const char *got, size_t got_len,
                  const char *label, int masked_later) {
  json_error_t err;
  const char *why = NULL;
  const json_t *text;
  json_t *root = json_loadb(json, len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err);
  if (!root) {
    enum json_error_code code = json_error_code(&err);
    /* jansson has no infinity; lua-cjson reads 1e999 as one. Such a number
       can only sit in a member the fast path skips. */
    if (code == json_error_numeric_overflow) return;
    if (masked_later && (code == json_error_invalid_utf8 || code == json_error_null_byte_in_key))
      return;
    fz_fail("%s: accepted, but not JSON: %s (at %d)", label, err.text, err.position);
  }
  text = full_text(root, &why);
  if (!text) fz_fail("%s: accepted, but a full decoding says: %s", label, why);
  if (json_string_length(text) != got_len ||
      memcmp(json_string_value(text), got, got_len) != 0)
    fz_fail("%s: the fast path's text differs from the full decoding's", label);
  json_decref(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *json = (const char *)data;
  char *got = NULL, *got_x = NULL, *masked;
  size_t got_len, got_x_len, at, at_x, i;
  if (!fast(json, size, &got, &got_len, &at)) return 0;
  masked = masked_copy(data, size);
  check(json, size, got, got_len, "chunk", masked != NULL);
  if (!masked) {
    free(got);
    return 0;
  }
  if (!fast(masked, size, &got_x, &got_x_len, &at_x))
    fz_fail("declined once masked: the bytes were not passed through");
  if (at_x != at) fz_fail("the text moved once masked");
  for (i = 0; i < got_len && got_len == got_x_len; i++) {
    unsigned char a = (unsigned char)got[i], b = (unsigned char)got_x[i];
    if (a == 0 ? b != 1 : a >= 0x80 ? b != a && b != 'X' : b != a) break;
  }
  if (got_len != got_x_len || i < got_len) fz_fail("the text changed elsewhere once masked");
  check(masked, size, got_x, got_x_len, "chunk, masked", 0);
  free(masked);
  free(got);
  free(got_x);
  return 0;
}
