/*
** Runs a program and reports what it cost: rusage -o FILE PROGRAM ARGS...
** runs it (its stdout and stderr untouched), waits for it, and writes one
** JSON line to FILE: wall seconds, CPU seconds (user + system, from wait4's
** rusage of the child) and peak RSS. The batch benchmark measures every client
** this way, whatever language it is written in. Exit status: the child's.
*/
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double seconds(struct timeval tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

int main(int argc, char **argv) {
  if (argc < 4 || strcmp(argv[1], "-o") != 0) {
    fputs("usage: rusage -o FILE PROGRAM [ARGS...]\n", stderr);
    return 2;
  }
  FILE *out = fopen(argv[2], "w");
  if (out == NULL) {
    perror("rusage: -o");
    return 2;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid = fork();
  if (pid < 0) {
    perror("rusage: fork");
    return 2;
  }
  if (pid == 0) {
    fclose(out);
    execvp(argv[3], argv + 3);
    perror("rusage: exec");
    _exit(127);
  }
  int status;
  struct rusage ru;
  if (wait4(pid, &status, 0, &ru) < 0) {
    perror("rusage: wait4");
    return 2;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  fprintf(out, "{\"wall\":%.6f,\"cpu\":%.6f,\"user\":%.6f,\"system\":%.6f,\"peak_rss_mb\":%.1f}\n",
          (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
          seconds(ru.ru_utime) + seconds(ru.ru_stime), seconds(ru.ru_utime), seconds(ru.ru_stime),
          ru.ru_maxrss / 1024.0);
  if (fclose(out) != 0) {
    perror("rusage: -o");
    return 2;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}
