/*
** Floor for the stop-latency scenario, measured in the same run as sluice: a
** bare C client does what the sluice script does, minus everything it could
** skip. It sends the same request, reads the stream with epoll and read(),
** looks for the keyword with memmem (no SSE or JSON parsing), and closes the
** socket the moment it sees it. K times; the mock's /stats gives the latency
** for each request id it prints.
**   floor_stop URL K sleep|spin      (spin: epoll_wait never sleeps)
** Prints {"ids":[...]}.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define KEYWORD "KEYWORD"

static int stop_once(const struct sockaddr_in *a, const char *host, int port,
                     const char *id, int spin) {
  static const char body[] =
      "{\"model\":\"m\",\"max_tokens\":5000,\"stream\":true,\"messages\":[{\"role\":"
      "\"user\",\"content\":\"go\"}],\"mock\":{\"tokens_per_sec\":500,"
      "\"keyword\":\" " KEYWORD "\",\"keyword_at\":100}}";
  char req[1024], buf[16384];
  size_t carry = 0, total;
  int fd = socket(AF_INET, SOCK_STREAM, 0), ep = epoll_create1(0), one = 1, len;
  struct epoll_event ev = {.events = EPOLLIN}, out;
  len = snprintf(req, sizeof req,
                 "POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%d\r\n"
                 "Content-Type: application/json\r\nX-Request-Id: %s\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 host, port, id, sizeof body - 1, body);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (const void *)a, sizeof *a) != 0 || write(fd, req, (size_t)len) != len)
    return -1;
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  for (;;) {
    ssize_t m;
    if (epoll_wait(ep, &out, 1, spin ? 0 : -1) < 1) continue;
    m = read(fd, buf + carry, sizeof buf - carry);
    if (m <= 0) break;
    total = carry + (size_t)m;
    if (memmem(buf, total, KEYWORD, sizeof KEYWORD - 1)) break;
    /* a keyword split across two reads: keep the last few bytes */
    carry = total < sizeof KEYWORD - 1 ? total : sizeof KEYWORD - 1;
    memmove(buf, buf + total - carry, carry);
  }
  close(fd);
  close(ep);
  return 0;
}

int main(int argc, char **argv) {
  char host[64];
  int port, k, spin;
  struct sockaddr_in a = {0};
  if (argc != 4 || sscanf(argv[1], "http://%63[^:]:%d", host, &port) != 2) {
    fprintf(stderr, "usage: floor_stop URL K sleep|spin\n");
    return 2;
  }
  k = atoi(argv[2]);
  spin = strcmp(argv[3], "spin") == 0;
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  inet_pton(AF_INET, host, &a.sin_addr);
  printf("{\"ids\":[");
  for (int i = 0; i < k; i++) {
    char id[64];
    snprintf(id, sizeof id, "cfloor-%d-%d", (int)getpid(), i);
    if (stop_once(&a, host, port, id, spin) != 0) return 1;
    printf("%s\"%s\"", i ? "," : "", id);
    usleep(50000);
  }
  printf("]}\n");
  return 0;
}
