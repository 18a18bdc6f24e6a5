/*
** The `sluice` host (the shape of lua.c): builds the runtime, loads what the
** command line names under lua_pcall (pmain), runs it as the main task on the
** loop, and shuts down in order. `sluice NAME args...`, NAME a bare word that
** is not a file, runs the subcommand lua/sluice/cli/NAME.lua.
*/
#include <ctype.h>
#include <dirent.h>
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
#include "runtime.h"

static const char *progname = "sluice";

static void usage(FILE *f) {
  fprintf(f,
          "usage: %s [options] [script [args]]\n"
          "       %s COMMAND [args]   (sluice help lists the commands)\n"
          "Runs a Lua 5.4 script whose streams stop upstream when the script says so.\n"
          "  -e CODE      run CODE first (may be given more than once), then the script\n"
          "  --trace FILE write a trace of every stream to FILE (also $SLUICE_TRACE)\n"
          "  -            run the script read from standard input\n"
          "  -v, --version  print the version\n"
          "  -h, --help     print this help\n"
          "A script named like a command runs as ./NAME. Scripts `require \"sluice\"`;\n"
          "see README.md.\n",
          progname, progname);
}

/* Raise the open-file limit as far as allowed: 10,000 streams need 10,000 fds. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int file_exists(const char *p) { return access(p, F_OK) == 0; }

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

/* A subcommand's name: a bare word, such as "batch" or "report". */
static int is_command_name(const char *s) {
  size_t i;
  if (!islower((unsigned char)s[0])) return 0;
  for (i = 1; s[i]; i++)
    if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
      return 0;
  return i <= 64;
}

/* ---- sluice help: the commands, one line each -------------------------------- */

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first comment line of a command's file, without "-- " and without a
   leading "sluice NAME: ". */
static void describe(const char *dir, const char *name, char *out, size_t n) {
  char path[PATH_MAX + 80], line[256], prefix[96];
  FILE *f;
  char *p;
  snprintf(path, sizeof path, "%s/%s.lua", dir, name);
  out[0] = '\0';
  if (!(f = fopen(path, "r"))) return;
  if (fgets(line, sizeof line, f) && strncmp(line, "--", 2) == 0) {
    p = line + 2;
    while (*p == ' ' || *p == '-') p++;
    snprintf(prefix, sizeof prefix, "sluice %s: ", name);
    if (strncmp(p, prefix, strlen(prefix)) == 0) p += strlen(prefix);
    p[strcspn(p, "\r\n")] = '\0';
    snprintf(out, n, "%s", p);
  }
  fclose(f);
}

static int list_commands(const char *luadir) {
  char dir[PATH_MAX + 16], *names[128], what[256];
  int count = 0, i;
  DIR *d;
  struct dirent *e;
  snprintf(dir, sizeof dir, "%s/sluice/cli", luadir);
  printf("usage: %s COMMAND [args]   (%s help COMMAND: its options)\n"
         "       %s [options] script.lua [args]\ncommands:\n", progname, progname, progname);
  if ((d = opendir(dir)) != NULL) {
    while ((e = readdir(d)) != NULL && count < 128) {
      size_t len = strlen(e->d_name);
      if (len > 4 && strcmp(e->d_name + len - 4, ".lua") == 0) {
        names[count] = strndup(e->d_name, len - 4);
        if (names[count] && is_command_name(names[count])) count++;
        else free(names[count]);
      }
    }
    closedir(d);
  }
  qsort(names, (size_t)count, sizeof names[0], by_name);
  for (i = 0; i < count; i++) {
    describe(dir, names[i], what, sizeof what);
    printf("  %-10s %s\n", names[i], what);
    free(names[i]);
  }
  printf("  %-10s %s\n", "help", "this list");
  return 0;
}

/* ---- pmain: everything that may raise, under lua_pcall ------------------------ */

typedef struct host_args {
  int argc;
  char **argv;
  const char *codes[32];   /* -e CODE, in order */
  int ncodes;
  int script;              /* index in argv of the script, 0 if none */
  const char *command;     /* the subcommand's file, or NULL */
  const char *trace;       /* --trace FILE, or $SLUICE_TRACE */
  char luadir[PATH_MAX];
} host_args;

static void set_paths(lua_State *L, const char *dir) {
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

static void check_load(lua_State *L, int status) {
  if (status != LUA_OK) lua_error(L);
}

/* Runs the -e chunks, then the script with the arguments (the last chunk gets
   them when there is no script): one function for the main task. */
static const char chain_src[] =
    "local chunks, with_args = ...\n"
    "return function(...)\n"
    "  for i = 1, #chunks - 1 do chunks[i]() end\n"
    "  if with_args then return chunks[#chunks](...) end\n"
    "  return chunks[#chunks]()\n"
    "end\n";

/* Leaves the main function and its arguments on the stack. */
static int pmain(lua_State *L) {
  host_args *a = lua_touserdata(L, 1);
  int i, nchunks = 0, first = a->script ? a->script : a->argc;
  lua_settop(L, 0);
  /* Streams make many short-lived tables (one per event): the generational
     collector handles those ~10-15% faster. collectgarbage("incremental")
     switches back. */
  lua_gc(L, LUA_GCGEN, 0, 0);
  luaL_openlibs(L);
  set_paths(L, a->luadir);
  sl_open_exit(L);
  if (a->trace && *a->trace) {  /* sluice.trace(path), before anything streams */
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "sluice.core");
    lua_getfield(L, -1, "trace");
    lua_pushstring(L, a->trace);
    lua_call(L, 1, 0);
    lua_pop(L, 2);
  }
  set_arg(L, a->argv, a->argc, a->script ? a->script : a->argc - 1);
  lua_newtable(L);  /* 1: the chunks */
  for (i = 0; i < a->ncodes; i++) {
    check_load(L, luaL_loadbuffer(L, a->codes[i], strlen(a->codes[i]), "=(command line)"));
    lua_rawseti(L, 1, ++nchunks);
  }
  if (a->script) {
    const char *name = a->command ? a->command : a->argv[a->script];
    check_load(L, luaL_loadfile(L, strcmp(name, "-") == 0 && !a->command ? NULL : name));
    lua_rawseti(L, 1, ++nchunks);
  }
  if (nchunks == 1) {
    lua_rawgeti(L, 1, 1);
  } else {
    check_load(L, luaL_loadbuffer(L, chain_src, sizeof chain_src - 1, "=(sluice)"));
    lua_pushvalue(L, 1);
    lua_pushboolean(L, a->script != 0);
    lua_call(L, 2, 1);
  }
  lua_remove(L, 1);
  luaL_checkstack(L, a->argc, "too many arguments");
  if (a->script)
    for (i = first + 1; i < a->argc; i++) lua_pushstring(L, a->argv[i]);
  return lua_gettop(L);
}

static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* ---- main ---------------------------------------------------------------------------- */

/* Parses the command line into a; returns -1 to exit 0 (help, version), 1 on
   misuse, 0 to run. */
static int parse_args(host_args *a) {
  int i;
  for (i = 1; i < a->argc; i++) {
    const char *s = a->argv[i];
    if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
      usage(stdout);
      return -1;
    } else if (strcmp(s, "-v") == 0 || strcmp(s, "--version") == 0) {
      char err[256];
      printf("sluice %s (%s, libcurl %s, libuv %s)\n", SLUICE_VERSION, LUA_RELEASE,
             sl_curl_load(err, sizeof err) == 0 ? curl_version_info(CURLVERSION_NOW)->version
                                                : "not found",
             uv_version_string());
      return -1;
    } else if (strcmp(s, "-e") == 0) {
      if (++i >= a->argc) {
        fprintf(stderr, "%s: '-e' needs an argument\n", progname);
        usage(stderr);
        return 1;
      }
      if (a->ncodes == (int)(sizeof a->codes / sizeof a->codes[0])) {
        fprintf(stderr, "%s: too many -e\n", progname);
        return 1;
      }
      a->codes[a->ncodes++] = a->argv[i];
    } else if (strcmp(s, "--trace") == 0) {
      if (++i >= a->argc) {
        fprintf(stderr, "%s: '--trace' needs a file\n", progname);
        return 1;
      }
      a->trace = a->argv[i];
    } else if (strcmp(s, "--") == 0) {
      a->script = i + 1 < a->argc ? i + 1 : 0;
      break;
    } else if (s[0] == '-' && s[1] != '\0') {
      fprintf(stderr, "%s: unrecognized option '%s'\n", progname, s);
      usage(stderr);
      return 1;
    } else {
      a->script = i;
      break;
    }
  }
  if (!a->ncodes && !a->script) {
    usage(stderr);
    return 1;
  }
  return 0;
}

/* A bare word that is not a file names a subcommand; returns -1 to exit 0
   (help), 1 when there is no such command, 0 to run. */
static int find_command(host_args *a, char *path, size_t n) {
  const char *name = a->argv[a->script];
  if (a->ncodes || !is_command_name(name) || file_exists(name)) return 0;
  if (strcmp(name, "help") == 0) {
    if (a->script + 1 >= a->argc) {
      list_commands(a->luadir);
      return -1;
    }
    /* sluice help NAME: sluice NAME --help */
    static char *help_argv[4];
    help_argv[0] = a->argv[0];
    help_argv[1] = a->argv[a->script + 1];
    help_argv[2] = "--help";
    a->argv = help_argv;
    a->argc = 3;
    a->script = 1;
    name = a->argv[1];
  }
  snprintf(path, n, "%s/sluice/cli/%s.lua", a->luadir, name);
  if (!is_command_name(name) || !file_exists(path)) {
    fprintf(stderr, "%s: '%s' is neither a file nor a command (%s help lists the commands)\n",
            progname, name, progname);
    return 1;
  }
  a->command = path;
  return 0;
}

int main(int argc, char **argv) {
  static host_args a;
  char command[PATH_MAX + 64];
  sl_runtime rt;
  int status, nres;

  if (argv[0] && argv[0][0]) progname = argv[0];
  a.argc = argc;
  a.argv = argv;
  a.trace = getenv("SLUICE_TRACE");
  if ((status = parse_args(&a)) != 0) return status < 0 ? 0 : status;
  lua_dir(a.luadir, sizeof a.luadir);
  if (a.script && (status = find_command(&a, command, sizeof command)) != 0)
    return status < 0 ? 0 : status;

  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  if (sl_runtime_init(&rt) != 0) {
    fprintf(stderr, "%s: cannot initialise the runtime\n", progname);
    return 1;
  }
  lua_pushcfunction(rt.L, msghandler);
  lua_pushcfunction(rt.L, pmain);
  lua_pushlightuserdata(rt.L, &a);
  if (lua_pcall(rt.L, 1, LUA_MULTRET, 1) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", progname, lua_tostring(rt.L, -1));
    fflush(stderr);
    sl_runtime_set_exit(&rt, 1, 1);
    sl_runtime_close(&rt);
    return 1;
  }
  lua_remove(rt.L, 1);  /* the message handler */
  nres = lua_gettop(rt.L);
  sl_runtime_run(&rt, nres - 1);
  status = sl_runtime_close(&rt);
  sl_curl_unload();
  fflush(stdout);
  return status;
}
