/*
** The machine's floor for the stop-latency scenario: two processes pinned to
** CPUs 0 and 1 bounce one byte over loopback TCP, each waiting in epoll, either
** sleeping (timeout -1) or spinning (timeout 0). Prints JSON medians in us.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 2000

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  sched_setaffinity(0, sizeof s, &s);
}

static void wait_readable(int ep, int spin) {
  struct epoll_event out;
  while (epoll_wait(ep, &out, 1, spin ? 0 : -1) < 1) {
  }
}

static int watch(int fd) {
  int ep = epoll_create1(0), one = 1;
  struct epoll_event ev = {.events = EPOLLIN};
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return ep;
}

static double median_rtt(int spin) {
  static double r[ROUNDS];
  struct sockaddr_in a = {0};
  socklen_t l = sizeof a;
  int ls = socket(AF_INET, SOCK_STREAM, 0), c, ep, i;
  char b = 'x';
  pid_t child;
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (void *)&a, sizeof a) || getsockname(ls, (void *)&a, &l) || listen(ls, 1)) exit(1);
  if ((child = fork()) == 0) {
    int s;
    pin(1);
    s = accept(ls, NULL, NULL);
    ep = watch(s);
    for (;;) {
      wait_readable(ep, spin);
      if (read(s, &b, 1) <= 0) _exit(0);
      if (write(s, &b, 1) != 1) _exit(1);
    }
  }
  pin(0);
  c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (void *)&a, sizeof a)) exit(1);
  ep = watch(c);
  for (i = 0; i < ROUNDS; i++) {
    double t0;
    usleep(500);  /* let both sides go idle, as between tokens */
    t0 = now_us();
    if (write(c, &b, 1) != 1) exit(1);
    wait_readable(ep, spin);
    if (read(c, &b, 1) != 1) exit(1);
    r[i] = now_us() - t0;
  }
  close(c);
  close(ls);
  close(ep);
  waitpid(child, NULL, 0);
  qsort(r, ROUNDS, sizeof r[0], cmp);
  return r[ROUNDS / 2];
}

int main(void) {
  double sleeping = median_rtt(0), spinning = median_rtt(1);
  printf("{\"sleeping_rtt_us\":%.1f,\"spinning_rtt_us\":%.1f}\n", sleeping, spinning);
  return 0;
}
