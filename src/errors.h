/*
** Error values: tables { kind=, message=, status=, body= } sharing a metatable
** with __tostring. Messages are short, lower-case and never carry secrets.
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

#endif
