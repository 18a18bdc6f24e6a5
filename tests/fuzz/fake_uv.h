/*
** A stand-in for the few libuv calls sluice-mock's connection code makes, so
** a fuzz target can drive a connection without sockets or a real loop: bytes
** go in through the read callback, what the mock writes is collected, write
** and close callbacks run later as libuv would run them, and timers run on
** a virtual clock that jumps to the next one due.
*/
#ifndef FAKE_UV_H
#define FAKE_UV_H

#include <stddef.h>
#include <stdint.h>

/* Forgets everything; try_write takes at most window bytes at a time (0:
   none, so every write is queued). */
void fake_uv_reset(size_t window);
/* Frees what the fake holds (after the last callback has run). */
void fake_uv_free(void);
/* The client sends len bytes; 0, or -1 when the connection is not reading. */
int fake_uv_send(const char *data, size_t len);
/* The client closes its side (the mock sees EOF). */
void fake_uv_eof(void);
/* Runs callbacks until nothing is left to do (1), or max_steps callbacks ran
   or the output passed max_output bytes (0). */
int fake_uv_run(size_t max_steps, size_t max_output);
/* What the mock wrote so far, in order. */
const char *fake_uv_output(size_t *len);
/* Handles initialised and not yet through their close callback. */
int fake_uv_open_handles(void);
/* Is the client's connection still open (not closed by the mock)? */
int fake_uv_connected(void);

#endif
