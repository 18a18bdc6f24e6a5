/*
** What the mock saw, one record per generation request, served at GET /stats.
** Times are uv_hrtime() nanoseconds (CLOCK_MONOTONIC); 0 means "not yet".
*/
#ifndef MOCK_STATS_H
#define MOCK_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#ifndef MOCK_STATS_KEEP
#define MOCK_STATS_KEEP 100000
#endif
#define MOCK_RECENT_TOKENS 4      /* send times kept for recent_token_at */

/* Fault bits, in the order their names are listed. */
enum {
  MOCK_FAULT_STATUS = 1 << 0,
  MOCK_FAULT_ERROR_AFTER = 1 << 1,
  MOCK_FAULT_ERROR_EVENT = 1 << 2,
  MOCK_FAULT_MALFORMED_AFTER = 1 << 3,
  MOCK_FAULT_RESET_AFTER = 1 << 4,
  MOCK_FAULT_CLOSE_AFTER = 1 << 5,
  MOCK_FAULT_STALL_AFTER = 1 << 6,
  MOCK_FAULT_PING_ONLY = 1 << 7,
  MOCK_FAULT_NO_DONE = 1 << 8,
  MOCK_FAULT_NO_FINISH = 1 << 9,
};

typedef struct mock_record {
  char *id;
  const char *path;
  uint64_t conn;
  unsigned faults;
  int rule;                   /* the --replies rule it matched, or -1 */
  const char *rule_name;      /* that rule's name (the server's), or NULL */
  int stream, status;
  int completed, client_closed;
  uint64_t max_tokens, tokens_sent, tokens_after_close, write_errors;
  uint64_t started_at, first_token_at, last_token_at, closed_at, keyword_at;
  uint64_t close_notice_ns;   /* valid when closed_at is set */
  uint64_t recent[MOCK_RECENT_TOKENS]; /* send times of the last tokens, a ring */
  unsigned recent_next;       /* where the next one goes */
  unsigned refs;              /* the list holds one, a live request another */
} mock_record;

typedef struct mock_stats {
  mock_record **ring;
  size_t head, count;         /* oldest at head */
} mock_stats;

void mock_stats_init(mock_stats *s);
void mock_stats_free(mock_stats *s);
/* A new record, held by the list and once more by the caller. */
mock_record *mock_stats_add(mock_stats *s, const char *id, const char *path);
/* Forgets every record (live requests keep theirs until they end). */
void mock_stats_reset(mock_stats *s);
void mock_record_ref(mock_record *r);
/* Notes count tokens handed to the socket at now. */
void mock_record_tokens(mock_record *r, uint64_t now, uint64_t count);
void mock_record_unref(mock_record *r);

/* Appends the records array's members, oldest first. */
void mock_stats_render(const mock_stats *s, mock_buf *out);

#endif
