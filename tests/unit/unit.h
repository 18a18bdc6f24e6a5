/*
** The smallest assertion helper that will do for the C unit tests: CHECK
** counts passes and failures, reports each failure with its line, and
** UNIT_DONE prints "name: N passed, M failed" and gives the exit status.
*/
#ifndef SL_UNIT_H
#define SL_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_passed, unit_failed;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (cond) {                                                            \
      unit_passed++;                                                       \
    } else {                                                               \
      unit_failed++;                                                       \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                      \
    }                                                                      \
  } while (0)

/* The bytes s[0..n) equal the string literal lit (which may hold NULs). */
#define MEM_IS(s, n, lit)                                                  \
  ((n) == sizeof(lit) - 1 && memcmp((s), (lit), sizeof(lit) - 1) == 0)

#define CHECK_MEM(s, n, lit) CHECK(MEM_IS(s, n, lit))

#define UNIT_DONE(name)                                                    \
  (printf("%s: %d passed, %d failed\n", (name), unit_passed, unit_failed), \
   unit_failed ? 1 : 0)

#endif
