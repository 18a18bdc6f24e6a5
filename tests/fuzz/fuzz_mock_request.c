/*
** libFuzzer target for sluice-mock's request handling: src/mock/conn.c
** (http_parser callbacks, routes, keep-alive and pipelining), request.c (the
** body, the X-Mock header and "mock" options, read with jansson), replies.c
** (--replies rules: loading, matching, placeholders) and gen.c (what the
** answer streams). The networking is fake_uv.c: the input's bytes reach the
** connection through its read callback, in fuzzer-chosen pieces, and what
** the mock writes is collected and read back as HTTP responses.
**
** Properties: no crash, leak or sanitizer report; the answers are well-formed
** HTTP/1.1 responses (http_parser reads them without error, up to where the
** mock or the client cut the connection); every handle is closed and every
** record released once the client goes; a request costs bounded memory
** (scripts/fuzz runs this target with -malloc_limit_mb).
**
** Input: byte 0 = flags (below), byte 1 = how the bytes are cut into reads
** (and, with FLAG_STANDIN, which server the stand-in plays);
** with FLAG_REPLIES, a 2-byte big-endian length and that many bytes of a
** --replies file; then the bytes the client sends.
*/
#define _GNU_SOURCE /* memfd_create */
#include <http_parser.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fake_uv.h"
#include "fuzz_common.h"
#include "mock.h"

enum {
  FLAG_REPLIES = 1 << 0,   /* a --replies file comes first */
  FLAG_PACED = 1 << 1,     /* tokens_per_sec 1000 (else 0: as fast as it goes) */
  FLAG_WINDOW = 3 << 2,    /* how much a try_write takes: all, 7 bytes, 4 KiB, nothing */
  FLAG_TTFT = 1 << 4,      /* ttft 0.05 s */
  FLAG_HANG_UP = 1 << 5,   /* the client closes right after sending */
  FLAG_LONG = 1 << 6,      /* --max-tokens 50 (else 5) */
  FLAG_STANDIN = 1 << 7,   /* --stand-in with one slot: vllm if byte 1 is odd, else llamacpp */
};

#define MAX_STEPS 4000
#define MAX_OUTPUT (512 * 1024)

static mock_tokens *default_tokens;
static int replies_fd = -1;

static size_t window_of(int flags) {
  static const size_t windows[4] = {SIZE_MAX, 7, 4096, 0};
  return windows[(flags & FLAG_WINDOW) >> 2];
}

/* The replies bytes as a file mock_replies_load can open by name. */
static mock_replies *load_replies(const uint8_t *p, size_t n, const mock_config *cfg) {
  char path[64], err[1024];
  if (replies_fd < 0 && (replies_fd = memfd_create("replies", 0)) < 0) abort();
  if (ftruncate(replies_fd, 0) != 0 || pwrite(replies_fd, p, n, 0) != (ssize_t)n) abort();
  snprintf(path, sizeof path, "/proc/self/fd/%d", replies_fd);
  return mock_replies_load(path, cfg, err, sizeof err);
}

/* ---- reading the answers back -------------------------------------------- */

typedef struct reader {
  int responses;
  size_t header_bytes;
  int connection_headers;
} reader;

static int on_message_begin(http_parser *p) {
  reader *r = p->data;
  r->header_bytes = 0;
  r->connection_headers = 0;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  reader *r = p->data;
  (void)at;
  r->header_bytes += len;
  if (r->header_bytes > 8192) fz_fail("a response's headers passed 8 KiB");
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  reader *r = p->data;
  r->connection_headers += len == 10 && strncasecmp(at, "connection", 10) == 0;
  return on_header_value(p, at, len);
}

/* Every answer but "100 Continue" ends its headers with Connection: one
   missing (or two) means a header line was cut or run together. */
static int on_headers_complete(http_parser *p) {
  reader *r = p->data;
  if (p->status_code != 100 && r->connection_headers != 1)
    fz_fail("a %u response with %d Connection headers", p->status_code, r->connection_headers);
  return 0;
}

static int on_message_complete(http_parser *p) {
  ((reader *)p->data)->responses++;
  return 0;
}

static void check_answers(const char *out, size_t len) {
  http_parser_settings settings;
  http_parser parser;
  reader r = {0, 0, 0};
  size_t n;
  http_parser_settings_init(&settings);
  settings.on_message_begin = on_message_begin;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_message_complete = on_message_complete;
  http_parser_init(&parser, HTTP_RESPONSE);
  parser.data = &r;
  n = http_parser_execute(&parser, &settings, out, len);
  if (HTTP_PARSER_ERRNO(&parser) != HPE_OK || n != len)
    fz_fail("the mock's answer is not HTTP: %s at byte %zu of %zu",
            http_errno_name(HTTP_PARSER_ERRNO(&parser)), n, len);
}

/* ---- one connection ----------------------------------------------------- */

static void free_server(mock_server *s) {
  mock_server_free_state(s);  /* the tokens are default_tokens, kept */
  free(s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  default_tokens = mock_tokens_split(mock_default_text(), strlen(mock_default_text()));
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static uv_loop_t loop;  /* only its address is used */
  mock_config cfg = {.host = "127.0.0.1", .model = "mock-model", .quiet = 1};
  mock_server *s;
  int flags, cut;
  uint32_t rng;
  size_t out_len;
  const char *out;

  if (size < 2) return 0;
  flags = data[0];
  cut = data[1];
  data += 2;
  size -= 2;
  cfg.tokens_per_sec = flags & FLAG_PACED ? 1000 : 0;
  cfg.ttft = flags & FLAG_TTFT ? 0.05 : 0;
  cfg.max_tokens = flags & FLAG_LONG ? 50 : 5;
  if (flags & FLAG_STANDIN) {
    cfg.stand_in = cut & 1 ? MOCK_STANDIN_VLLM : MOCK_STANDIN_LLAMACPP;
    cfg.slots = 1;           /* a second request waits for the slot */
    cfg.stop_delay = 0.02;   /* an aborted request stays busy a while */
  }

  s = mock_xcalloc(1, sizeof *s);
  s->loop = &loop;
  s->config = cfg;
  s->tokens = default_tokens;
  mock_stats_init(&s->stats);
  s->fault_counts = json_object();
  mock_conn_parser_settings(&s->settings);
  if (flags & FLAG_REPLIES) {
    size_t n;
    if (size < 2) goto done;
    n = (size_t)data[0] << 8 | data[1];
    if (size < 2 + n) goto done;
    s->replies = load_replies(data + 2, n, &s->config);
    if (!s->replies) goto done;  /* refused at start-up: nothing to serve */
    data += 2 + n;
    size -= 2 + n;
  }

  fake_uv_reset(window_of(flags));
  mock_standin_init(s);
  mock_conn_accept(s);
  if (s->connections_open != 1) fz_fail("the connection was not accepted");
  rng = (uint32_t)cut * 2654435761u + 1;
  while (size > 0 && fake_uv_connected()) {
    size_t n = size;
    if (cut) {  /* pieces of 1 to 2 * cut bytes, from a small PRNG */
      rng ^= rng << 13;
      rng ^= rng >> 17;
      rng ^= rng << 5;
      n = 1 + rng % (2u * (uint32_t)cut);
      if (n > size) n = size;
    }
    fake_uv_send((const char *)data, n);
    data += n;
    size -= n;
    if (!fake_uv_run(MAX_STEPS, MAX_OUTPUT)) break;
  }
  if (!(flags & FLAG_HANG_UP)) fake_uv_run(MAX_STEPS, MAX_OUTPUT);
  fake_uv_eof();  /* the client goes: whatever was still running stops */
  if (!fake_uv_run(MAX_STEPS, SIZE_MAX)) fz_fail("the connection did not wind down");
  if (s->conns || s->connections_open || s->active)
    fz_fail("a connection or generation outlived its socket");
  mock_standin_close(s);  /* as at shutdown: its timer, what lingers */
  fake_uv_run(MAX_STEPS, SIZE_MAX);
  if (fake_uv_open_handles() != 0) fz_fail("%d handles left open", fake_uv_open_handles());
  out = fake_uv_output(&out_len);
  if (getenv("FUZZ_MOCK_DUMP")) fwrite(out, 1, out_len, stdout);  /* to see an input's answer */
  check_answers(out, out_len);
  /* everything an input allocated is freed with it, or libFuzzer runs a
     whole leak check after each input */
  fake_uv_free();
done:
  free_server(s);
  return 0;
}
