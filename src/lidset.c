/*
** Sets of 64-bit hashes for scripts that must remember many ids at little
** cost (sluice batch: the custom_ids of 100,000 lines in 800 KB, where a Lua
** table takes 4 MB). sluice.hash64(s) is FNV-1a over the bytes of s;
** sluice.idset() a growable array, sorted on first lookup, binary-searched.
** sluice.gaps(list): the gaps between neighbours of a list of times, sorted
** (a request's inter-token latencies, for their quantiles).
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "lsluice.h"

#define IDSET_MT "sluice.idset"

typedef struct idset {
  uint64_t *v;
  size_t n, cap;
  int sorted;
} idset;

static uint64_t fnv1a(const char *s, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL;
  size_t i;
  for (i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

/* A value of the set: a string's hash, or an integer as it is. */
static uint64_t id_arg(lua_State *L, int i) {
  size_t len;
  if (lua_type(L, i) == LUA_TSTRING) {
    const char *s = lua_tolstring(L, i, &len);
    return fnv1a(s, len);
  }
  return (uint64_t)luaL_checkinteger(L, i);
}

static int cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static idset *check_set(lua_State *L) { return luaL_checkudata(L, 1, IDSET_MT); }

static void seal(idset *s) {
  if (!s->sorted && s->n > 0) {
    qsort(s->v, s->n, sizeof *s->v, cmp);
    s->sorted = 1;
  }
}

/* set:add(id) */
static int l_add(lua_State *L) {
  idset *s = check_set(L);
  uint64_t h = id_arg(L, 2);
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 1024;
    uint64_t *v = realloc(s->v, cap * sizeof *v);
    if (!v) return luaL_error(L, "sluice.idset: out of memory");
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n++] = h;
  s->sorted = 0;
  return 0;
}

/* set:has(id) -> boolean */
static int l_has(lua_State *L) {
  idset *s = check_set(L);
  uint64_t h = id_arg(L, 2);
  seal(s);
  lua_pushboolean(L, s->n && bsearch(&h, s->v, s->n, sizeof *s->v, cmp) != NULL);
  return 1;
}

/* set:duplicate() -> a value held twice (an integer), or nil */
static int l_duplicate(lua_State *L) {
  idset *s = check_set(L);
  size_t i;
  seal(s);
  for (i = 1; i < s->n; i++)
    if (s->v[i] == s->v[i - 1]) {
      lua_pushinteger(L, (lua_Integer)s->v[i]);
      return 1;
    }
  return 0;
}

static int l_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_set(L)->n);
  return 1;
}

static int l_gc(lua_State *L) {
  idset *s = check_set(L);
  free(s->v);
  s->v = NULL;
  s->n = s->cap = 0;
  return 0;
}

/* sluice.idset() -> an empty set */
static int l_idset(lua_State *L) {
  idset *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, IDSET_MT);
  return 1;
}

/* sluice.hash64(s) -> FNV-1a 64 of s's bytes (an integer: the bits of the
   unsigned value) */
static int l_hash64(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushinteger(L, (lua_Integer)fnv1a(s, len));
  return 1;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* sluice.gaps(list) -> {list[2] - list[1], ...} sorted ascending, and their
   sum (in the list's order, as a running sum would give it). */
static int l_gaps(lua_State *L) {
  double small[128], *g = small, sum = 0, prev = 0;
  lua_Integer n, i;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = luaL_len(L, 1);
  if (n > 1 && (size_t)(n - 1) > sizeof small / sizeof *small)
    g = lua_newuserdatauv(L, (size_t)(n - 1) * sizeof *g, 0);  /* collected with the call */
  for (i = 1; i <= n; i++) {
    int isnum;
    double t;
    lua_rawgeti(L, 1, i);
    t = lua_tonumberx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum) return luaL_error(L, "sluice.gaps: item %d of the list is not a number", (int)i);
    if (i > 1) {
      g[i - 2] = t - prev;
      sum += t - prev;
    }
    prev = t;
  }
  n = n > 1 ? n - 1 : 0;
  qsort(g, (size_t)n, sizeof *g, cmp_double);
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_pushnumber(L, g[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushnumber(L, sum);
  return 2;
}

static const luaL_Reg set_methods[] = {
    {"add", l_add}, {"has", l_has}, {"duplicate", l_duplicate}, {NULL, NULL}};
static const luaL_Reg set_meta[] = {{"__gc", l_gc}, {"__len", l_len}, {NULL, NULL}};
static const luaL_Reg idset_funcs[] = {
    {"idset", l_idset}, {"hash64", l_hash64}, {"gaps", l_gaps}, {NULL, NULL}};

void sl_open_idset(lua_State *L) {
  luaL_newmetatable(L, IDSET_MT);
  luaL_setfuncs(L, set_meta, 0);
  luaL_newlib(L, set_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_setfuncs(L, idset_funcs, 0);
}
