/* obxtest_proc.h - spawn and supervise helper processes (obx-pgtmp, kafka-broker, outboxd,
 * obx-consume) from integration tests: pipes for stdin/stdout, one-line command/reply,
 * timeouts, signals, exit status; plus temp directories and log-file checks.
 *
 * These functions never call libcheck: they return a value and print why they failed on stderr,
 * so the caller decides how to fail (ck_assert_msg) and they also work in benchmarks.
 * Every spawned child gets PR_SET_PDEATHSIG(SIGTERM) and only fds 0, 1 and 2, so a crashed test
 * takes its helpers down with it and no child inherits another child's pipe. */
#ifndef OBXTEST_PROC_H
#define OBXTEST_PROC_H

#include <stdbool.h>
#include <sys/types.h>

/* A spawned child process. Opaque; created by obxt_proc_spawn, destroyed by obxt_proc_free. */
struct obxt_proc;

/* obxt_proc_spawn flags. */
enum {
    /* The child's stdout goes where its stderr goes (log file or inherited) instead of a pipe:
     * for programs that print a lot and whose output the test does not read line by line. */
    OBXT_PROC_STDOUT_TO_LOG = 1 << 0,
    /* The child's stdin is /dev/null instead of a pipe. */
    OBXT_PROC_STDIN_NULL = 1 << 1,
};

/* Start argv[0] (searched in PATH when it has no '/') with argv (NULL-terminated). env is NULL or
 * a NULL-terminated list of "NAME=VALUE" entries added to (or replacing in) the inherited
 * environment. stderr goes to log_path (opened for append, created 0644) or, when log_path is NULL,
 * is inherited. stdin and stdout are O_CLOEXEC pipes unless flags say otherwise.
 * Returns NULL (after a message on stderr) when the program cannot be started; an exec failure
 * shows up as exit status 127. Must be released with obxt_proc_free.
 * Sets SIGPIPE to ignored in the calling process (once), so writing to a child that is gone
 * fails with EPIPE instead of killing the test; children start with default signal handling. */
struct obxt_proc *obxt_proc_spawn(const char *const argv[], const char *const env[],
                                  const char *log_path, int flags);

/* Process id of the child (still valid after it was reaped, for messages). */
pid_t obxt_proc_pid(const struct obxt_proc *proc);

/* Read one line from the child's stdout, waiting at most timeout_ms (negative: forever).
 * Returns the line without its '\n' (malloc'd, caller frees) or NULL on timeout (errno ETIMEDOUT),
 * end of file (errno 0) or error (errno set). A final line without '\n' is returned at EOF. */
char *obxt_proc_read_line(struct obxt_proc *proc, int timeout_ms);

/* Write line plus '\n' to the child's stdin. Returns 0, or -1 (stdin closed, child gone). */
int obxt_proc_send(struct obxt_proc *proc, const char *line);

/* obxt_proc_send then obxt_proc_read_line: the child's one-line reply (malloc'd) or NULL. */
char *obxt_proc_command(struct obxt_proc *proc, const char *line, int timeout_ms);

/* Send signal sig to the child (no-op returning -1 once it has been reaped). Returns 0 or -1. */
int obxt_proc_kill(struct obxt_proc *proc, int sig);

/* True while the child has not exited (reaps it, without blocking, if it has). */
bool obxt_proc_running(struct obxt_proc *proc);

/* Wait up to timeout_ms (negative: forever) for the child to exit. Returns 0 and stores the raw
 * waitpid status in *status (if not NULL), or -1 with errno ETIMEDOUT if it is still running.
 * Calling it again after the child was reaped returns the same status. */
int obxt_proc_wait(struct obxt_proc *proc, int timeout_ms, int *status);

/* Exit code of a reaped child: its exit status, 128 + signal number if it was killed by a
 * signal, -1 if it has not been reaped yet. */
int obxt_proc_exit_code(const struct obxt_proc *proc);

/* Close the child's stdin (EOF). Idempotent. Returns 0. */
int obxt_proc_close_stdin(struct obxt_proc *proc);

/* Orderly end: close stdin, wait up to timeout_ms; if still running send SIGTERM and wait 5 s
 * more, then SIGKILL. Returns 0 if it exited by itself within timeout_ms, -1 if it had to be
 * signalled. *status (if not NULL) gets the raw waitpid status. */
int obxt_proc_finish(struct obxt_proc *proc, int timeout_ms, int *status);

/* Release the handle: a child still running gets SIGKILL and is reaped. NULL is a no-op. */
void obxt_proc_free(struct obxt_proc *proc);

/* True if process pid exists and is not a zombie (works for processes that are not our
 * children, e.g. a postmaster or a broker started by a supervisor). */
bool obxt_proc_pid_alive(pid_t pid);

/* Wait up to timeout_ms for pid to be gone (see obxt_proc_pid_alive). Returns 0 or -1. */
int obxt_proc_pid_wait_gone(pid_t pid, int timeout_ms);

/* Create a fresh directory "$TMPDIR/obxt-<tag>-XXXXXX" (TMPDIR defaults to /tmp), mode 0700.
 * Returns its path (malloc'd) or NULL. Remove it with obxt_proc_rmtree. */
char *obxt_proc_tmpdir(const char *tag);

/* Remove path and everything below it (like rm -rf; does not follow symlinks). Returns 0 if path
 * is gone afterwards (also when it never existed), -1 otherwise. */
int obxt_proc_rmtree(const char *path);

/* True if path exists (any type, symlinks not followed). */
bool obxt_proc_path_exists(const char *path);

/* Join dir and name with '/', malloc'd. */
char *obxt_proc_path_join(const char *dir, const char *name);

/* True if file exists and contains substring (byte-wise, the whole file is read). */
bool obxt_proc_log_contains(const char *file, const char *substring);

/* Poll file every 50 ms until it contains substring. Returns 0, or -1 after timeout_ms. */
int obxt_proc_log_wait(const char *file, const char *substring, int timeout_ms);

/* Monotonic clock in milliseconds, for deadlines. */
long long obxt_proc_now_ms(void);

#endif
