/*
** Entry points of the Lua bindings: the C core is the module "sluice.core";
** lua/sluice/init.lua adds what is written in Lua and is what scripts require.
*/
#ifndef SL_LSLUICE_H
#define SL_LSLUICE_H

#include <lua.h>

void sl_open_stream(lua_State *L);   /* adds stream, fetch to the table on top */
void sl_open_task(lua_State *L);     /* adds spawn, sleep, now, _wait_any */
void sl_open_stdin(lua_State *L);    /* adds read_line */
void sl_open_exec(lua_State *L);     /* adds exec */
void sl_open_exit(lua_State *L);     /* replaces os.exit (the host calls it) */
void sl_open_idset(lua_State *L);    /* adds idset, hash64 */
int  luaopen_sluice_core(lua_State *L);

#endif
