/*
** Checking what scripts pass to public functions. Misuse raises an argument
** error that names the function and the option as the script wrote it:
**   bad argument #1 to 'stream' (sluice.stream: unknown option 'timeouts.frist_byte')
** A flag is a boolean and nothing else; a time is a number >= 0 (NaN and
** negative times are errors; a huge one means no limit); strings that reach
** the wire carry no CR, LF or NUL. Values are never echoed in messages.
*/
#ifndef SL_LARGS_H
#define SL_LARGS_H

#include <lua.h>
#include <stddef.h>

/* An option table being read: the table at idx, which came as argument arg
   of function fn; prefix is "" or the path to a nested table ("timeouts."). */
typedef struct sl_opts {
  lua_State *L;
  int idx, arg;
  const char *fn;
  const char *prefix;
} sl_opts;

/* Starts reading the table at idx (nil reads as an empty table). */
sl_opts sl_opts_begin(lua_State *L, int idx, int arg, const char *fn);
/* The nested table opts[key] (must be a table, or nil: returns 0), pushed on
   the stack; *nested reads it. */
int  sl_opts_nested(const sl_opts *o, const char *key, sl_opts *nested);
/* Raises for any key of the table that known (NULL-terminated) lacks. */
void sl_opts_known(const sl_opts *o, const char *const known[]);
/* Raises an argument error about option key: "<fn>: option '<path>' <what>". */
int  sl_opts_error(const sl_opts *o, const char *key, const char *fmt, ...);

/* A flag: true or false (nil: dflt). */
int sl_opts_flag(const sl_opts *o, const char *key, int dflt);
/* A string (nil: NULL), kept alive by the table; *len if len is given. */
const char *sl_opts_string(const sl_opts *o, const char *key, size_t *len);
/* A time in seconds (nil: dflt; false: 0, none): >= 0, HUGE_VAL when huge. */
double sl_opts_seconds(const sl_opts *o, const char *key, double dflt);
/* An integer >= min (nil: dflt). */
lua_Integer sl_opts_integer(const sl_opts *o, const char *key, lua_Integer dflt,
                            lua_Integer min);

/* Raises "bad argument #arg to 'fn' (fn: <message>)", with the caller's
   position. The name is fn's, always (luaL_argerror would pick whichever
   name package.loaded yields first: sluice.sleep or sluice.core.sleep). */
int sl_argerror(lua_State *L, int arg, const char *fn, const char *fmt, ...);
/* Stack index idx as a time in seconds: a number >= 0, not NaN; HUGE_VAL when
   huge (no limit). It is argument arg of fn ("sluice.sleep"). */
double sl_check_seconds(lua_State *L, int idx, int arg, const char *fn);
/* Does s (len bytes) hold a CR, LF or NUL? */
int sl_has_crlf(const char *s, size_t len);
/* Is s a token (RFC 9110: header names, methods)? */
int sl_is_token(const char *s, size_t len);

#endif
