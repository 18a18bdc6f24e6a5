/*
** Secrets out of text: the one place sluice redacts (error messages and
** bodies in C, and through sluice.redact what the Lua layer reports).
*/
#ifndef SL_REDACT_H
#define SL_REDACT_H

#include <stddef.h>

#define SL_REDACTED "[redacted]"

/* A copy of text (len bytes) in which every occurrence of any of the n
   secrets is replaced by SL_REDACTED, in one pass from left to right (where
   two start at the same place, the longer wins; empty secrets are ignored).
   The copy is NUL-terminated, its length in *outlen when outlen is given.
   NULL when out of memory. */
char *sl_redact(const char *text, size_t len, const char *const *secrets, int n,
                size_t *outlen);

#endif
