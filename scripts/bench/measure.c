// measure OUT -- COMMAND [ARGS...]: runs COMMAND and writes its exit status, peak RSS and fault counts
// to OUT. The benchmark runner goes through this small launcher because a child forked directly from
// Python inherits Python's RSS high-water mark (ru_maxrss survives exec); this process is ~1 MiB.
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 4 || strcmp(argv[2], "--") != 0) {
    fprintf(stderr, "usage: measure OUT -- COMMAND [ARGS...]\n");
    return 2;
  }
  pid_t pid = fork();
  if (pid == 0) {
    execvp(argv[3], argv + 3);
    perror(argv[3]);
    _exit(127);
  }
  int status = 0;
  struct rusage usage;
  if (pid < 0 || wait4(pid, &status, 0, &usage) < 0) { perror("measure"); return 2; }
  FILE *out = fopen(argv[1], "w");
  if (!out) { perror(argv[1]); return 2; }
  fprintf(out, "exit=%d signal=%d maxrss_kb=%ld minflt=%ld majflt=%ld\n",
          WIFEXITED(status) ? WEXITSTATUS(status) : -1, WIFSIGNALED(status) ? WTERMSIG(status) : 0,
          usage.ru_maxrss, usage.ru_minflt, usage.ru_majflt);
  fclose(out);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}
