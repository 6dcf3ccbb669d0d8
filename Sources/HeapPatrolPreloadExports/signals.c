// The exported sigaction and signal: HeapPatrol's SIGSEGV/SIGBUS handler stays first.
//
// A program that installs its own SIGSEGV handler after start-up (Python's faulthandler, a JIT, a
// crash reporter) would otherwise replace ours, and its heap bugs would go unreported. While
// HeapPatrol's handler is installed, such a call does not reach the kernel: the program's action
// becomes the one that every fault HeapPatrol does not claim goes on to, and the program reads back
// its own actions, as if it had installed them (cshim_chain_action). Every other signal, and every
// call while no HeapPatrol handler is installed, goes to glibc unchanged.
#define _GNU_SOURCE
#include "cshims.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default"))) __attribute__((used))

extern int __sigaction(int signo, const struct sigaction *action, struct sigaction *old);

EXPORT int sigaction(int signo, const struct sigaction *action, struct sigaction *old) {
  if (cshim_chain_action(signo, action, old)) return 0;
  return __sigaction(signo, action, old);
}

// glibc's signal() has BSD semantics (SA_RESTART, the handler stays installed) and calls glibc's
// internal sigaction, not the exported one: it is interposed as well, on top of the sigaction above.
static sighandler_t install_plain_handler(int signo, sighandler_t handler, int flags) {
  if (handler == SIG_ERR) {
    errno = EINVAL;
    return SIG_ERR;
  }
  struct sigaction action, old;
  memset(&action, 0, sizeof action);
  memset(&old, 0, sizeof old);
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  if (sigaction(signo, &action, &old) != 0) return SIG_ERR;
  return old.sa_handler;
}

EXPORT sighandler_t signal(int signo, sighandler_t handler) {
  return install_plain_handler(signo, handler, SA_RESTART);
}

// The other names glibc exports for installing a plain handler.
EXPORT sighandler_t bsd_signal(int signo, sighandler_t handler) { return signal(signo, handler); }

// System V semantics: the handler is reset to the default on delivery and not blocked while it runs.
EXPORT sighandler_t sysv_signal(int signo, sighandler_t handler) {
  return install_plain_handler(signo, handler, SA_RESETHAND | SA_NODEFER);
}
