/*
** Micro benchmark of the SSE parser alone: vLLM-shaped chat.completion.chunk
** events fed in 16 KiB pieces, as curl hands them over. Prints the median of
** several runs. Build: gcc -O2 -Isrc tests/unit/bench_sse.c src/sse.c
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sse.h"

#define EVENTS 200000
#define PIECE 16384
#define RUNS 15

typedef struct tally {
  size_t events, bytes;
} tally;

static void on_event(void *ud, const sl_sse_event *ev) {
  tally *t = ud;
  t->events++;
  t->bytes += ev->data_len + (unsigned char)ev->data[0];
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(void) {
  static const char *words[] = {" the", " model", " said", ",", " tokens",
                                " are", " streamed", " quickly", ".", " a"};
  size_t cap = (size_t)EVENTS * 256, len = 0, off;
  char *stream = malloc(cap);
  double rate[RUNS];
  int i, run;

  if (!stream) return 1;
  for (i = 0; i < EVENTS; i++)
    len += (size_t)snprintf(
        stream + len, cap - len,
        "data: {\"id\":\"chatcmpl-8d1f\",\"object\":\"chat.completion."
        "chunk\",\"created\":1718000000,\"model\":\"llama-8b\",\"choices\":"
        "[{\"index\":0,\"delta\":{\"content\":\"%s\"},\"finish_reason\":null}"
        "]}\n\n",
        words[i % 10]);

  for (run = 0; run < RUNS; run++) {
    sl_sse p;
    tally t = {0, 0};
    double t0, t1;
    sl_sse_init(&p, 8u << 20);
    t0 = now();
    for (off = 0; off < len; off += PIECE) {
      size_t n = len - off < PIECE ? len - off : PIECE;
      if (sl_sse_feed(&p, stream + off, n, on_event, &t) != SL_SSE_OK) return 1;
    }
    t1 = now();
    sl_sse_free(&p);
    if (t.events != EVENTS) {
      fprintf(stderr, "bench_sse: got %zu events, want %d\n", t.events, EVENTS);
      return 1;
    }
    rate[run] = (double)t.events / (t1 - t0);
  }
  qsort(rate, RUNS, sizeof rate[0], by_value);
  printf("bench_sse: %d events of %.0f bytes in %d KiB feeds: median %.1f M "
         "events/s (min %.1f, max %.1f) = %.0f MB/s\n",
         EVENTS, (double)len / EVENTS, PIECE / 1024, rate[RUNS / 2] / 1e6,
         rate[0] / 1e6, rate[RUNS - 1] / 1e6,
         rate[RUNS / 2] * ((double)len / EVENTS) / 1e6);
  free(stream);
  return 0;
}
