/*
** Per-request records in a ring of the last MOCK_STATS_KEEP, and their JSON.
** A record is reference counted so a request that outlives its place in the
** ring (or a /stats/reset) can keep writing to it.
*/
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "stats.h"

static const char *const fault_names[] = {
  "status", "error_after", "error_event", "malformed_after", "reset_after",
  "close_after", "stall_after", "ping_only", "no_done", "no_finish",
};

void mock_stats_init(mock_stats *s) {
  s->ring = mock_xcalloc(MOCK_STATS_KEEP, sizeof *s->ring);
  s->head = s->count = 0;
}

void mock_record_ref(mock_record *r) {
  r->refs++;
}

void mock_record_unref(mock_record *r) {
  if (r && --r->refs == 0) {
    free(r->id);
    free(r);
  }
}

void mock_record_tokens(mock_record *r, uint64_t now, uint64_t count) {
  if (count == 0)
    return;
  if (r->first_token_at == 0)
    r->first_token_at = now;
  r->last_token_at = now;
  r->tokens_sent += count;
  for (uint64_t i = 0; i < count && i < MOCK_RECENT_TOKENS; i++)
    r->recent[r->recent_next++ % MOCK_RECENT_TOKENS] = now;
}

void mock_stats_reset(mock_stats *s) {
  for (size_t i = 0; i < s->count; i++) {
    size_t k = (s->head + i) % MOCK_STATS_KEEP;
    mock_record_unref(s->ring[k]);
    s->ring[k] = NULL;
  }
  s->head = s->count = 0;
}

void mock_stats_free(mock_stats *s) {
  mock_stats_reset(s);
  free(s->ring);
  s->ring = NULL;
}

mock_record *mock_stats_add(mock_stats *s, const char *id, const char *path) {
  mock_record *r = mock_xcalloc(1, sizeof *r);
  r->id = mock_xstrndup(id, strlen(id));
  r->path = path;
  r->rule = -1;
  r->refs = 2;
  if (s->count == MOCK_STATS_KEEP) {
    mock_record_unref(s->ring[s->head]);
    s->ring[s->head] = NULL;
    s->head = (s->head + 1) % MOCK_STATS_KEEP;
    s->count--;
  }
  s->ring[(s->head + s->count) % MOCK_STATS_KEEP] = r;
  s->count++;
  return r;
}

static void put_time(mock_buf *out, const char *name, uint64_t ns) {
  if (ns == 0)
    mock_buf_printf(out, ",\"%s\":null", name);
  else
    mock_buf_printf(out, ",\"%s\":%.6f", name, (double)ns / 1e9);
}

static void render_one(const mock_record *r, mock_buf *out) {
  mock_buf_puts(out, "{\"id\":");
  mock_buf_json_string(out, r->id, strlen(r->id));
  mock_buf_printf(out, ",\"path\":\"%s\",\"conn\":%llu,\"stream\":%s,\"status\":%d,"
                  "\"fault\":\"", r->path, (unsigned long long)r->conn,
                  r->stream ? "true" : "false", r->status);
  if (r->faults == 0)
    mock_buf_puts(out, "none");
  int first = 1;
  for (size_t i = 0; i < sizeof fault_names / sizeof *fault_names; i++) {
    if (r->faults & (1u << i)) {
      if (!first)
        mock_buf_puts(out, ",");
      mock_buf_puts(out, fault_names[i]);
      first = 0;
    }
  }
  if (r->rule >= 0)
    mock_buf_printf(out, "\",\"rule\":%d,\"rule_name\":", r->rule);
  else
    mock_buf_puts(out, "\",\"rule\":null,\"rule_name\":");
  if (r->rule_name)
    mock_buf_json_string(out, r->rule_name, strlen(r->rule_name));
  else
    mock_buf_puts(out, "null");
  mock_buf_printf(out, ",\"max_tokens\":%llu,\"tokens_sent\":%llu,"
                  "\"tokens_after_close\":%llu,\"completed\":%s,\"client_closed\":%s,"
                  "\"aborted\":%s",
                  (unsigned long long)r->max_tokens, (unsigned long long)r->tokens_sent,
                  (unsigned long long)r->tokens_after_close,
                  r->completed ? "true" : "false", r->client_closed ? "true" : "false",
                  r->client_closed ? "true" : "false");
  put_time(out, "started_at", r->started_at);
  put_time(out, "first_token_at", r->first_token_at);
  put_time(out, "last_token_at", r->last_token_at);
  /* oldest first; fewer than MOCK_RECENT_TOKENS when fewer were sent */
  mock_buf_puts(out, ",\"recent_token_at\":[");
  unsigned kept = r->recent_next < MOCK_RECENT_TOKENS ? r->recent_next : MOCK_RECENT_TOKENS;
  for (unsigned i = 0; i < kept; i++)
    mock_buf_printf(out, "%s%.6f", i ? "," : "",
                    (double)r->recent[(r->recent_next - kept + i) % MOCK_RECENT_TOKENS] / 1e9);
  mock_buf_puts(out, "]");
  put_time(out, "closed_at", r->closed_at);
  put_time(out, "keyword_at", r->keyword_at);
  if (r->closed_at && r->keyword_at)
    mock_buf_printf(out, ",\"stop_latency_us\":%lld",
                    (long long)((int64_t)(r->closed_at - r->keyword_at) + 500) / 1000);
  else
    mock_buf_puts(out, ",\"stop_latency_us\":null");
  if (r->closed_at)
    mock_buf_printf(out, ",\"close_notice_us\":%llu",
                    (unsigned long long)(r->close_notice_ns + 500) / 1000);
  else
    mock_buf_puts(out, ",\"close_notice_us\":null");
  mock_buf_printf(out, ",\"write_errors\":%llu}", (unsigned long long)r->write_errors);
}

void mock_stats_render(const mock_stats *s, mock_buf *out) {
  for (size_t i = 0; i < s->count; i++) {
    if (i)
      mock_buf_puts(out, ",");
    render_one(s->ring[(s->head + i) % MOCK_STATS_KEEP], out);
  }
}
