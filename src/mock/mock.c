/*
** sluice-mock's main: options, the listening socket, and a clean shutdown on
** SIGINT/SIGTERM (every handle closed, every allocation freed).
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <jansson.h>

#include "mock.h"

static const char usage_text[] =
  "usage: sluice-mock [options]\n"
  "  --host ADDR           address to listen on (default 127.0.0.1)\n"
  "  --port N              port, 0 picks a free one (default 0)\n"
  "  --tokens-per-sec R    pace of a stream, 0 = as fast as the socket takes (default 50)\n"
  "  --ttft S              seconds before the first token (default 0)\n"
  "  --text-file FILE      text to generate (default: a built-in passage)\n"
  "  --max-tokens N        tokens when a request sets no max_tokens (default 200)\n"
  "  --model NAME          model name served (default mock-model)\n"
  "  --quiet               no per-request log lines (aborts are always logged)\n"
  "  --busy-poll           never sleep in the event loop: spins a CPU, for latency benchmarks\n"
  "  --no-accept           listen but never accept, so connects hang (connect-timeout tests)\n"
  "  --url-file FILE       once listening, write the base URL (http://HOST:PORT and a\n"
  "                        newline) to FILE.tmp and rename it to FILE, so a reader that\n"
  "                        sees FILE sees the whole URL\n"
  "  --exit-with-parent    shut down (as on SIGTERM) when the process that started this\n"
  "                        one dies; exit at once if it is already gone (Linux only)\n"
  "  --replies FILE        scripted conversations for chat requests (below)\n"
  "  --stand-in KIND       also play llama.cpp's llama-server (llamacpp) or vLLM (vllm)\n"
  "                        for clients that watch a server's own endpoints (below)\n"
  "  --slots N             llamacpp: its slots, the generations it runs at once (default 4)\n"
  "  --no-slots            llamacpp: GET /slots answers 501, as llama-server --no-slots\n"
  "  --slots-state         llamacpp: /slots in older llama-server's form, \"state\": 0 idle\n"
  "                        or 1 processing, for \"is_processing\"\n"
  "  --stop-delay S        with --stand-in: a request whose client closed stays processing\n"
  "                        (running) in /slots and /metrics S more seconds, as a server\n"
  "                        that notices a disconnect only at its next write (default 0);\n"
  "                        vLLM's abort is counted then. The generation itself stops at\n"
  "                        once; /stats stays exact\n"
  "  --help                this text\n"
  "Prints \"sluice-mock listening on http://HOST:PORT\" once ready. The one way to\n"
  "start it from a script: sluice-mock --port 0 --url-file FILE --exit-with-parent\n"
  "Per-request behaviour: a \"mock\" object in the body or an X-Mock header.\n"
  "A request's n (1 to 128, default 1) asks for n choices: choice i's text starts i\n"
  "tokens into the text, so no two are alike; a stream interleaves them round robin,\n"
  "one choice per chunk (\"index\": i), each ending with its own finish chunk.\n"
  "mock.choice_tokens [t0, t1, ...] (n entries) makes choice i t_i tokens long, ending\n"
  "with \"stop\", or with \"length\" when max_tokens cuts it shorter. Pacing is per\n"
  "choice; fault positions and usage count tokens over all choices.\n"
  "--replies FILE: {\"rules\": [{\"name\": N, \"when\": {...}, \"reply\": {...}}, ...]}.\n"
  "The first rule whose \"when\" conditions all hold (no conditions: always) decides a\n"
  "chat request's reply; a request no rule matches gets the default text. Conditions:\n"
  "last_role, last_contains, last_starts_with (the last message), any_contains (any\n"
  "message), system_contains (a system message): strings, matched case-sensitively\n"
  "in the content (a string, or the text parts joined by newlines); turn, min_turn,\n"
  "max_turn: the number of assistant messages; tools: true or false, whether the\n"
  "request has tools. \"reply\" is a mock object, as if the body carried it (the\n"
  "body's own mock and X-Mock still win, key by key); in its strings {{last}},\n"
  "{{user}}, {{tool}} become the content of the last message, user message, tool\n"
  "message. /stats records the rule matched: \"rule\" (its index from 0) and\n"
  "\"rule_name\". FILE is checked whole at start-up; a mistake exits with status 2.\n"
  "--stand-in llamacpp: GET /slots, a JSON array of N slots shaped like llama-server's\n"
  "(id, id_task, n_ctx, speculative, is_processing, params {n_predict, max_tokens,\n"
  "stream}, next_token {has_next_token, has_new_line, n_remain, n_decoded}); each\n"
  "generation takes the free slot used least recently and is processing until it\n"
  "ends. A generation that finds no free slot is deferred: it waits, sending nothing,\n"
  "until one is free. /slots?fail_on_no_slot=1 answers 503 when none is free. GET\n"
  "/metrics in the Prometheus text format: llamacpp:prompt_tokens_total,\n"
  "prompt_seconds_total (start to first token), tokens_predicted_total,\n"
  "tokens_predicted_seconds_total (first to last token), prompt_tokens_seconds,\n"
  "predicted_tokens_seconds, requests_processing, requests_deferred, n_tokens_max.\n"
  "GET /health answers {\"status\":\"ok\"}.\n"
  "--stand-in vllm: GET /metrics with vllm:num_requests_running (generations\n"
  "streaming), vllm:num_requests_waiting (always 0: the mock queues nothing),\n"
  "vllm:request_success_total by finished_reason: \"stop\" or \"length\" (the first\n"
  "choice's finish) when a generation finished, \"abort\" when its client closed or a\n"
  "fault cut it short; vllm:prompt_tokens_total, vllm:generation_tokens_total; labels\n"
  "engine=\"0\" and model_name (--model). GET /health answers an empty 200.\n"
  "Everything else, /stats included, is as without --stand-in.\n";

static int bad_option(const char *name, const char *value) {
  fprintf(stderr, "sluice-mock: bad value for %s: %s\n%s", name, value ? value : "(none)",
          usage_text);
  return -1;
}

static int parse_number(const char *name, const char *value, double min, double max,
                        double *out) {
  char *end;
  if (value == NULL)
    return bad_option(name, value);
  errno = 0;
  double v = strtod(value, &end);
  if (errno || end == value || *end != '\0' || !(v >= min && v <= max))
    return bad_option(name, value);
  *out = v;
  return 0;
}

/* Returns 0, 1 after --help, or -1 on a bad option. */
static int parse_args(int argc, char **argv, mock_config *cfg) {
  for (int i = 1; i < argc; i++) {
    char *arg = argv[i];
    char *value = NULL;
    char name[64];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      fputs(usage_text, stdout);
      return 1;
    }
    if (strcmp(arg, "--quiet") == 0) {
      cfg->quiet = 1;
      continue;
    }
    if (strcmp(arg, "--busy-poll") == 0) {
      cfg->busy_poll = 1;
      continue;
    }
    if (strcmp(arg, "--no-accept") == 0) {
      cfg->no_accept = 1;
      continue;
    }
    if (strcmp(arg, "--exit-with-parent") == 0) {
      cfg->exit_with_parent = 1;
      continue;
    }
    if (strcmp(arg, "--no-slots") == 0) {
      cfg->no_slots = 1;
      continue;
    }
    if (strcmp(arg, "--slots-state") == 0) {
      cfg->slots_state = 1;
      continue;
    }
    char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    if (len >= sizeof name) {
      fprintf(stderr, "sluice-mock: unknown option %s\n%s", arg, usage_text);
      return -1;
    }
    memcpy(name, arg, len);
    name[len] = '\0';
    value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    double v;
    if (strcmp(name, "--host") == 0) {
      if (value == NULL || *value == '\0')
        return bad_option(name, value);
      cfg->host = value;
    } else if (strcmp(name, "--port") == 0) {
      if (parse_number(name, value, 0, 65535, &v) < 0 || v != (int)v)
        return bad_option(name, value);
      cfg->port = (int)v;
    } else if (strcmp(name, "--tokens-per-sec") == 0) {
      if (parse_number(name, value, 0, 1e9, &cfg->tokens_per_sec) < 0)
        return -1;
    } else if (strcmp(name, "--ttft") == 0) {
      if (parse_number(name, value, 0, 1e6, &cfg->ttft) < 0)
        return -1;
    } else if (strcmp(name, "--text-file") == 0) {
      if (value == NULL)
        return bad_option(name, value);
      cfg->text_file = value;
    } else if (strcmp(name, "--max-tokens") == 0) {
      if (parse_number(name, value, 0, 1e15, &v) < 0 || v != (double)(uint64_t)v)
        return bad_option(name, value);
      cfg->max_tokens = (uint64_t)v;
    } else if (strcmp(name, "--replies") == 0) {
      if (value == NULL || *value == '\0')
        return bad_option(name, value);
      cfg->replies_file = value;
    } else if (strcmp(name, "--url-file") == 0) {
      if (value == NULL || *value == '\0')
        return bad_option(name, value);
      cfg->url_file = value;
    } else if (strcmp(name, "--stand-in") == 0) {
      if (value == NULL || (cfg->stand_in = mock_standin_parse(value)) < 0)
        return bad_option(name, value);
    } else if (strcmp(name, "--slots") == 0) {
      if (parse_number(name, value, 1, 1024, &v) < 0 || v != (int)v)
        return bad_option(name, value);
      cfg->slots = (unsigned)v;
    } else if (strcmp(name, "--stop-delay") == 0) {
      if (parse_number(name, value, 0, 1e6, &cfg->stop_delay) < 0)
        return -1;
    } else if (strcmp(name, "--model") == 0) {
      if (value == NULL || *value == '\0' || strlen(value) > 256)
        return bad_option(name, value);
      cfg->model = value;
    } else {
      fprintf(stderr, "sluice-mock: unknown option %s\n%s", arg, usage_text);
      return -1;
    }
  }
  const char *needs = NULL;
  if (cfg->stand_in != MOCK_STANDIN_LLAMACPP)
    needs = cfg->slots ? "--slots" : cfg->no_slots ? "--no-slots"
            : cfg->slots_state ? "--slots-state" : NULL;
  if (needs) {
    fprintf(stderr, "sluice-mock: %s needs --stand-in llamacpp\n", needs);
    return -1;
  }
  if (cfg->stop_delay > 0 && cfg->stand_in == MOCK_STANDIN_NONE) {
    fprintf(stderr, "sluice-mock: --stop-delay needs --stand-in\n");
    return -1;
  }
  return 0;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  mock_buf b;
  mock_buf_init(&b);
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    mock_buf_append(&b, chunk, n);
  int failed = ferror(f);
  fclose(f);
  if (failed) {
    mock_buf_free(&b);
    return NULL;
  }
  *len = b.len;
  return b.data ? b.data : mock_xstrndup("", 0);
}

/* Ten thousand connections need more than the usual 1024 descriptors. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      fprintf(stderr, "sluice-mock: could not raise the open-file limit: %s\n",
              strerror(errno));
  }
}

/* --no-accept: connections are never accepted; once the backlog of one is
   full the kernel drops new SYNs, so a client's connect hangs (for testing
   connect timeouts). */
static void on_connection_ignored(uv_stream_t *listener, int status) {
  (void)listener;
  (void)status;
}

static void on_connection(uv_stream_t *listener, int status) {
  mock_server *s = listener->data;
  if (status < 0) {
    fprintf(stderr, "sluice-mock: accept failed: %s\n", uv_strerror(status));
    return;
  }
  mock_conn_accept(s);
}

static void server_stop(mock_server *s) {
  if (s->stopping)
    return;
  s->stopping = 1;
  uv_close((uv_handle_t *)&s->listener, NULL);
  uv_close((uv_handle_t *)&s->sigint, NULL);
  uv_close((uv_handle_t *)&s->sigterm, NULL);
  while (s->conns)
    mock_conn_close(s->conns, MOCK_AFTER_CLOSE);
  mock_standin_close(s);
}

static void on_signal(uv_signal_t *h, int signum) {
  mock_server *s = h->data;
  if (!s->config.quiet)
    fprintf(stderr, "sluice-mock: %s, shutting down\n", signum == SIGINT ? "SIGINT" : "SIGTERM");
  server_stop(s);
}

/* Written whole to FILE.tmp, then renamed: a reader never sees half a URL. */
static int write_url_file(const char *path, const char *url) {
  size_t len = strlen(path);
  char *tmp = mock_xmalloc(len + 5);
  memcpy(tmp, path, len);
  memcpy(tmp + len, ".tmp", 5);
  FILE *f = fopen(tmp, "w");
  int ok = f != NULL;
  if (ok) {
    ok = fprintf(f, "%s\n", url) > 0;
    ok = fclose(f) == 0 && ok;
    ok = ok && rename(tmp, path) == 0;
  }
  if (!ok) {
    fprintf(stderr, "sluice-mock: cannot write --url-file %s: %s\n", path, strerror(errno));
    remove(tmp);
  }
  free(tmp);
  return ok ? 0 : -1;
}

static int listen_on(mock_server *s) {
  union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    struct sockaddr_storage any;
  } addr;
  const mock_config *cfg = &s->config;
  if (uv_ip4_addr(cfg->host, cfg->port, &addr.in4) != 0 &&
      uv_ip6_addr(cfg->host, cfg->port, &addr.in6) != 0) {
    fprintf(stderr, "sluice-mock: --host must be an IP address: %s\n", cfg->host);
    return -1;
  }
  int rc = uv_tcp_init(s->loop, &s->listener);
  if (rc == 0) {
    s->listener.data = s;
    rc = uv_tcp_bind(&s->listener, &addr.sa, 0);
    if (rc == 0)
      rc = uv_listen((uv_stream_t *)&s->listener, s->config.no_accept ? 1 : 8192,
                     s->config.no_accept ? on_connection_ignored : on_connection);
    if (rc != 0)
      uv_close((uv_handle_t *)&s->listener, NULL);
  }
  if (rc != 0) {
    fprintf(stderr, "sluice-mock: cannot listen on %s:%d: %s\n", cfg->host, cfg->port,
            uv_strerror(rc));
    return -1;
  }
  int len = sizeof addr;
  uv_tcp_getsockname(&s->listener, &addr.sa, &len);
  int port = ntohs(addr.sa.sa_family == AF_INET6 ? addr.in6.sin6_port : addr.in4.sin_port);
  char url[320];
  snprintf(url, sizeof url, addr.sa.sa_family == AF_INET6 ? "http://[%s]:%d" : "http://%s:%d",
           cfg->host, port);
  if (cfg->url_file && write_url_file(cfg->url_file, url) < 0) {
    uv_close((uv_handle_t *)&s->listener, NULL);
    return -1;
  }
  printf("sluice-mock listening on %s\n", url);
  fflush(stdout);
  return 0;
}

static void free_server(mock_server *s) {
  mock_server_free_state(s);
  mock_tokens_free(s->tokens);
  free(s);
}

/*
** --exit-with-parent: the kernel sends SIGTERM when the parent dies, and the
** SIGTERM handler shuts down as usual. A parent that died before prctl took
** effect left this process to init (or a subreaper): getppid() has changed,
** or was 1 from the start (so a mock run by init itself exits too).
*/
static int follow_parent(pid_t parent) {
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
    fprintf(stderr, "sluice-mock: --exit-with-parent: prctl: %s\n", strerror(errno));
    return -1;
  }
  if (parent == 1 || getppid() != parent) {
    fprintf(stderr, "sluice-mock: --exit-with-parent: the parent is gone\n");
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  pid_t parent = getppid();
  mock_config cfg = {.host = "127.0.0.1", .tokens_per_sec = 50, .max_tokens = 200,
                     .model = "mock-model"};
  int rc = parse_args(argc, argv, &cfg);
  if (rc != 0)
    return rc > 0 ? 0 : 2;
  if (cfg.exit_with_parent && follow_parent(parent) < 0)
    return 1;

  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();

  size_t text_len;
  char *text;
  if (cfg.text_file) {
    text = read_file(cfg.text_file, &text_len);
    if (text == NULL) {
      fprintf(stderr, "sluice-mock: cannot read %s: %s\n", cfg.text_file, strerror(errno));
      return 2;
    }
  } else {
    text = mock_xstrndup(mock_default_text(), strlen(mock_default_text()));
    text_len = strlen(text);
  }

  mock_server *s = mock_xcalloc(1, sizeof *s);
  s->config = cfg;
  s->tokens = mock_tokens_split(text, text_len);
  free(text);
  if (s->tokens->count == 0) {
    fprintf(stderr, "sluice-mock: %s has no text to generate\n", cfg.text_file);
    free_server(s);
    return 2;
  }
  if (cfg.replies_file) {
    char err[1024];
    s->replies = mock_replies_load(cfg.replies_file, &s->config, err, sizeof err);
    if (s->replies == NULL) {
      fprintf(stderr, "sluice-mock: --replies %s: %s\n", cfg.replies_file, err);
      free_server(s);
      return 2;
    }
  }
  mock_stats_init(&s->stats);
  s->fault_counts = json_object();
  mock_conn_parser_settings(&s->settings);

  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) {
    free_server(s);
    return 1;
  }
  s->loop = &loop;
  if (listen_on(s) < 0) {
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free_server(s);
    return 1;
  }
  mock_standin_init(s);
  uv_signal_init(&loop, &s->sigint);
  uv_signal_init(&loop, &s->sigterm);
  s->sigint.data = s->sigterm.data = s;
  uv_signal_start(&s->sigint, on_signal, SIGINT);
  uv_signal_start(&s->sigterm, on_signal, SIGTERM);

  if (cfg.busy_poll) {
    /* Polls without sleeping, so noticing a disconnect costs no wake-up. */
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0) {
    }
  } else {
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  rc = uv_loop_close(&loop);
  if (rc != 0)
    fprintf(stderr, "sluice-mock: loop not closed cleanly: %s\n", uv_strerror(rc));
  free_server(s);
  return 0;
}
