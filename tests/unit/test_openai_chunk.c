/*
** The simple-chunk fast path: it must accept the common text chunk shapes
** (vLLM, llama.cpp, OpenAI) and refuse every chunk whose full decoding says
** more than its text, and unescape JSON strings exactly.
*/
#include <stdio.h>

#include "openai_chunk.h"
#include "unit.h"

static int simple(const char *json, const char *want) {
  sl_chunk_text t;
  char out[512];
  size_t n;
  if (!sl_chunk_simple(json, strlen(json), &t)) return want == NULL;
  if (t.escaped) {
    n = sl_json_unescape(t.p, t.len, out);
    if (n == (size_t)-1) return want == NULL;  /* the binding falls back */
  } else {
    memcpy(out, t.p, t.len);
    n = t.len;
  }
  return want && n == strlen(want) && memcmp(out, want, n) == 0;
}

int main(void) {
  /* accepted: text and nothing else of note */
  CHECK(simple("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
               "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" world\"},"
               "\"logprobs\":null,\"finish_reason\":null}]}", " world"));
  CHECK(simple("{ \"choices\" : [ { \"delta\" : { \"content\" : \"a\\nb\\u00e9\\ud83d\\ude00\\\"\" } } ] ,"
               " \"id\" : \"x\" }", "a\nb\xc3\xa9\xf0\x9f\x98\x80\""));
  CHECK(simple("{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\","
               "\"choices\":[{\"index\":0,\"text\":\"hi\",\"logprobs\":null,\"finish_reason\":null,"
               "\"stop_reason\":null}]}", "hi"));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\",\"reasoning_content\":null}}],"
               "\"usage\":null,\"system_fingerprint\":\"fp\"}", ""));
  /* refused: anything more than text */
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"length\"}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}],"
               "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}", NULL));
  CHECK(simple("{\"choices\":[],\"usage\":{\"completion_tokens\":2}}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hm\"}}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"x\"}}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}},"
               "{\"index\":1,\"delta\":{\"content\":\"y\"}}]}", NULL));
  CHECK(simple("{\"error\":{\"message\":\"boom\"}}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}],\"error\":\"e\"}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]", NULL));     /* truncated */
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]} x", NULL));  /* trailing */
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\x01\"}}]}", NULL)); /* control char */
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\ud800\"}}]}", NULL)); /* lone surrogate */
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\q\"}}]}", NULL));  /* bad escape */
  /* Found by tests/fuzz/fuzz_chunk: a skipped string (a key, the id) with a
     surrogate half that is not a pair is not JSON to the full decoder (cjson
     and jansson refuse it), so the chunk must not be accepted either. */
  CHECK(simple("{\"id\":\"\\udc00\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}", NULL));
  CHECK(simple("{\"id\":\"\\ud83dx\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}", NULL));
  CHECK(simple("{\"id\":\"\\ud83d\\u00e9\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}", NULL));
  CHECK(simple("{\"\\ud800\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}", NULL));
  CHECK(simple("{\"id\":\"\\ud83d\\ude00\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}", "a"));
  /* Found by tests/fuzz/fuzz_chunk: members the full decoder reads
     differently. A repeated key counts last there (so a second "choices",
     "delta" or a null under an escaped name such as "d\u0065lta" overrides
     the first); a chat choice's delta hides its "text"; "object": "error"
     makes an error chunk. All are refused: keys with escapes, a repeated
     "choices", "delta" or "text", a choice with both. */
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],"
               "\"choices\":[{\"index\":0,\"delta\":{}}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"delta\":{}}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"text\":\"b\"}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"text\":\"b\",\"delta\":{}}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"text\":\"a\",\"text\":\"b\"}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"d\\u0065lta\":null}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\",\"c\\u006fntent\":null}}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"ch\\u006fices\":null}", NULL));
  CHECK(simple("{\"a\\u0000b\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}", NULL));
  CHECK(simple("{\"object\":\"error\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}", NULL));
  CHECK(simple("{\"object\":\"err\\u006fr\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}", NULL));
  CHECK(simple("{\"object\":7,\"id\":{\"k\\u0065y\":1},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\",\"content\":\"b\"}}]}", "b"));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":null}}]}", NULL));     /* no text */
  CHECK(simple("[DONE]", NULL));
  CHECK(simple("{\"id\":x,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}", NULL));
  CHECK(simple("{\"id\":\"\\q\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}", NULL));
  CHECK(simple("{\"created\":01,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}", NULL));
  CHECK(simple("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\",\"content\":null}}]}", NULL));
  CHECK(simple("", NULL));
  {  /* every truncation of a valid chunk is refused, never misread */
    const char *full = "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"abc\"},"
                       "\"finish_reason\":null}]}";
    size_t i, n = strlen(full);
    sl_chunk_text t;
    int bad = 0;
    for (i = 0; i < n; i++) bad += sl_chunk_simple(full, i, &t);
    CHECK(bad == 0);
    CHECK(sl_chunk_simple(full, n, &t) == 1);
  }
  {  /* a quote, backslash or control byte at every place of a long string
        (the scan goes eight bytes at a time), next to UTF-8 bytes */
    int pos, bad = 0;
    for (pos = 0; pos < 24; pos++) {
      char content[64], want[64], json[256];
      int i;
      for (i = 0; i < 24; i++) content[i] = want[i] = (char)(i % 3 ? 'a' + i : 0xC3);
      for (i = 0; i < 24; i++)
        if ((unsigned char)content[i] == 0xC3) content[i + 1] = want[i + 1] = (char)0xA9, i++;
      content[24] = want[24] = '\0';
      /* an escaped quote at pos: accepted, unescaped */
      snprintf(json, sizeof json, "{\"choices\":[{\"delta\":{\"content\":\"%.*s\\\"%s\"}}]}", pos,
               content, content + pos);
      snprintf(want, sizeof want, "%.*s\"%s", pos, content, content + pos);
      bad += !simple(json, want);
      /* a raw control byte at pos: refused */
      snprintf(json, sizeof json, "{\"choices\":[{\"delta\":{\"content\":\"%.*s\x01%s\"}}]}", pos,
               content, content + pos);
      bad += !simple(json, NULL);
      /* the string ends at pos: the text is what comes before */
      snprintf(json, sizeof json, "{\"choices\":[{\"delta\":{\"content\":\"%.*s\"}}]}", pos, content);
      snprintf(want, sizeof want, "%.*s", pos, content);
      bad += !simple(json, want);
    }
    CHECK(bad == 0);
  }
  return UNIT_DONE("test_chunk");
}
