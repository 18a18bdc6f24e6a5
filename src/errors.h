/*
** Error values: tables { kind=, message=, status=, body=, ... } sharing a
** metatable with __tostring. A message reads once: "http 503: server
** overloaded" prints as it is; a message that does not start with its kind
** prints as "kind: message". Messages are short, lower-case and never carry
** secrets.
*/
#ifndef SL_ERRORS_H
#define SL_ERRORS_H

#include <lua.h>
#include <stddef.h>

#define SL_ERROR_MT "sluice.error"

/* Pushes an error value. status <= 0 and body == NULL leave them out. */
void sl_error_push(lua_State *L, const char *kind, const char *message,
                   long status, const char *body, size_t body_len);
void sl_error_open(lua_State *L);

/* A one-line summary of an error response's body, for its message: the
   "message" (or "error" string) of a JSON body, the <title> or first line of
   an HTML page, the first line of text; whitespace collapsed, at most n - 1
   bytes (cut with "..."). Empty when the body says nothing usable. */
void sl_error_summary(const char *body, size_t len, char *out, size_t n);
/* The first bytes of s, whitespace collapsed, at most n - 1 bytes. */
void sl_error_excerpt(const char *s, size_t len, char *out, size_t n);

#endif
