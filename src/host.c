/*
** The `sluice` host (shape of lua.c): builds the runtime, loads the script,
** runs it as the main task on the loop, and shuts down in order. An uncaught
** error prints a traceback and exits 1; SIGINT/SIGTERM close every open
** stream, then exit 130/143.
*/
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "curl_dl.h"
#include <lauxlib.h>
#include <lualib.h>

#include "lsluice.h"
#include "task.h"

static const char *progname = "sluice";

static void usage(FILE *f) {
  fprintf(f,
          "usage: %s [options] [script [args]]\n"
          "Runs a Lua 5.4 script whose streams stop upstream when the script says so.\n"
          "  -e CODE      run CODE (after the options, before the script)\n"
          "  -            run the script read from standard input\n"
          "  -v, --version  print the version\n"
          "  -h, --help     print this help\n"
          "Scripts `require \"sluice\"`; see README.md.\n",
          progname);
}

/* Raise the open-file limit as far as allowed: 10,000 streams need 10,000 fds. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int file_exists(const char *p) { return access(p, R_OK) == 0; }

/* The lua/ directory: $SLUICE_LUA_DIR, next to an installed binary, the
   source tree of a build, or the install prefix. */
static void lua_dir(char *out, size_t n) {
  char exe[PATH_MAX], probe[PATH_MAX + 64];
  int w;
  const char *env = getenv("SLUICE_LUA_DIR");
  ssize_t len;
  if (env && *env) {
    snprintf(out, n, "%s", env);
    return;
  }
  len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len > 0) {
    char *slash;
    exe[len] = '\0';
    slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(probe, sizeof probe, "%s/../share/sluice/lua/sluice/init.lua", exe);
    w = snprintf(out, n, "%s/../share/sluice/lua", exe);
    if (file_exists(probe) && w > 0 && (size_t)w < n) return;
  }
  snprintf(probe, sizeof probe, "%s/sluice/init.lua", SLUICE_LUA_DIR_BUILD);
  snprintf(out, n, "%s", file_exists(probe) ? SLUICE_LUA_DIR_BUILD : SLUICE_LUA_DIR_INSTALL);
}

static void set_paths(lua_State *L) {
  char dir[PATH_MAX];
  lua_dir(dir, sizeof dir);
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  /* Opened now, not on first require: the main task needs its metatables. */
  luaL_requiref(L, "sluice.core", luaopen_sluice_core, 0);
  lua_pop(L, 1);
}

/* os.exit goes through the closing guarantee: every open stream is cancelled
   (its socket closed) and every child of sluice.exec killed before the process
   ends. With close = true the Lua
   state is closed too (its __gc and <close> handlers run), as in stock Lua. */
static int l_os_exit(lua_State *L) {
  int status;
  sl_runtime *rt = sl_rt(L);
  if (lua_isboolean(L, 1)) status = lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE;
  else status = (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
  sl_runtime_cancel_streams(rt, "exit");
  sl_exec_kill_all(rt);
  if (lua_toboolean(L, 2)) {
    rt->L = NULL;
    lua_close(L);
  }
  fflush(NULL);
  exit(status);
  return 0;
}

/* arg as the stock lua sets it: arg[0] the script, arg[1..] its arguments,
   negative indices the interpreter and its options. */
static void set_arg(lua_State *L, char **argv, int argc, int script) {
  int i;
  lua_createtable(L, argc - script, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

int main(int argc, char **argv) {
  sl_runtime rt;
  lua_State *L;
  const char *code = NULL;
  int i, script = 0, status, nargs;

  if (argv[0] && argv[0][0]) progname = argv[0];
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--version") == 0) {
      char err[256];
      printf("sluice %s (%s, libcurl %s, libuv %s)\n", SLUICE_VERSION, LUA_RELEASE,
             sl_curl_load(err, sizeof err) == 0 ? curl_version_info(CURLVERSION_NOW)->version
                                                : "not found",
             uv_version_string());
      return 0;
    } else if (strcmp(argv[i], "-e") == 0) {
      if (++i >= argc) {
        fprintf(stderr, "%s: '-e' needs an argument\n", progname);
        usage(stderr);
        return 1;
      }
      code = argv[i];
    } else if (strcmp(argv[i], "--") == 0) {
      script = i + 1 < argc ? i + 1 : 0;
      break;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      fprintf(stderr, "%s: unrecognized option '%s'\n", progname, argv[i]);
      usage(stderr);
      return 1;
    } else {
      script = i;
      break;
    }
  }
  if (!code && !script) {
    usage(stderr);
    return 1;
  }

  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  if (sl_runtime_init(&rt) != 0) {
    fprintf(stderr, "%s: cannot initialise the runtime\n", progname);
    return 1;
  }
  L = rt.L;
  /* Streams make many short-lived tables (one per event): the generational
     collector handles those ~10-15% faster. collectgarbage("incremental")
     switches back. */
  lua_gc(L, LUA_GCGEN, 0, 0);
  luaL_openlibs(L);
  set_paths(L);
  lua_getglobal(L, "os");
  lua_pushcfunction(L, l_os_exit);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
  set_arg(L, argv, argc, script ? script : argc - 1);

  if (script) {
    const char *name = argv[script];
    status = luaL_loadfile(L, strcmp(name, "-") == 0 ? NULL : name);
    if (status == LUA_OK && code) {  /* -e runs first, in the same task */
      fprintf(stderr, "%s: give -e or a script, not both\n", progname);
      status = -1;
    }
  } else {
    status = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
  }
  if (status != LUA_OK) {
    if (status > 0) fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
    sl_runtime_close(&rt);
    return 1;
  }
  nargs = 0;
  if (script)
    for (i = script + 1; i < argc; i++, nargs++) lua_pushstring(L, argv[i]);
  status = sl_runtime_run(&rt, nargs);
  sl_runtime_close(&rt);
  sl_curl_unload();
  fflush(stdout);
  return status;
}
