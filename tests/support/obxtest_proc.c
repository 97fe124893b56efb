/* obxtest_proc.c - child processes for integration tests: spawn with pipes, line I/O with
 * timeouts, signals, waiting; temp directories and log checks. See obxtest_proc.h. */
#include "obxtest_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct obxt_proc {
    pid_t pid;
    int in_fd;  /* write end of the child's stdin, -1 if none or closed */
    int out_fd; /* read end of the child's stdout, -1 if none */
    bool reaped;
    int status; /* raw waitpid status once reaped */
    char *buf;  /* bytes read from stdout not yet returned as a line */
    size_t len, cap;
    bool eof;
};

long long
obxt_proc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Milliseconds left until deadline (deadline < 0: forever, returns -1). */
static int
remaining_ms(long long deadline)
{
    long long left;

    if (deadline < 0)
        return -1;
    left = deadline - obxt_proc_now_ms();
    return left > 0 ? (int)left : 0;
}

static long long
deadline_from(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : obxt_proc_now_ms() + timeout_ms;
}

static size_t
env_name_len(const char *entry)
{
    const char *eq = strchr(entry, '=');

    return eq ? (size_t)(eq - entry) : strlen(entry);
}

/* The inherited environment with the entries of extra added or replacing same-named ones.
 * Built before fork so the child only calls async-signal-safe functions. The array is malloc'd,
 * the strings are borrowed. */
static char **
build_env(const char *const extra[])
{
    size_t n_env = 0, n_extra = 0, n = 0;
    char **envp;

    while (environ[n_env])
        n_env++;
    while (extra && extra[n_extra])
        n_extra++;
    envp = calloc(n_env + n_extra + 1, sizeof(*envp));
    if (!envp)
        return NULL;
    for (size_t i = 0; i < n_env; i++) {
        bool replaced = false;

        for (size_t j = 0; j < n_extra && !replaced; j++)
            replaced = env_name_len(environ[i]) == env_name_len(extra[j]) &&
                       strncmp(environ[i], extra[j], env_name_len(extra[j])) == 0;
        if (!replaced)
            envp[n++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++)
        envp[n++] = (char *)extra[j];
    return envp;
}

/* In the forked child: default signal state, death signal, fds 0-2 wired, nothing else open. */
static void
child_exec(const char *const argv[], char **envp, pid_t parent, int in_fd, int out_fd, int err_fd)
{
    sigset_t none;
    struct sigaction dfl = {.sa_handler = SIG_DFL};

    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(127);
    if ((in_fd >= 0 && dup2(in_fd, 0) < 0) || (out_fd >= 0 && dup2(out_fd, 1) < 0) ||
        (err_fd >= 0 && dup2(err_fd, 2) < 0))
        _exit(127);
    close_range(3, ~0U, 0);
    execvpe(argv[0], (char *const *)argv, envp);
    _exit(127);
}

/* Child-side fds: stdin (pipe or /dev/null), stdout (pipe or same as stderr), stderr (log or
 * inherited: -1). Parent-side pipe ends go into proc. Returns 0 or -1; on error closes what it
 * opened. */
static int
open_child_fds(struct obxt_proc *proc, const char *log_path, int flags, int child_fds[3])
{
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};

    child_fds[0] = child_fds[1] = child_fds[2] = -1;
    if (log_path) {
        child_fds[2] = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (child_fds[2] < 0) {
            fprintf(stderr, "obxt_proc: cannot open %s: %s\n", log_path, strerror(errno));
            return -1;
        }
    }
    if (flags & OBXT_PROC_STDIN_NULL)
        child_fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    else if (pipe2(in_pipe, O_CLOEXEC) == 0)
        child_fds[0] = in_pipe[0];
    if (flags & OBXT_PROC_STDOUT_TO_LOG)
        child_fds[1] = fcntl(child_fds[2] >= 0 ? child_fds[2] : 2, F_DUPFD_CLOEXEC, 3);
    else if (pipe2(out_pipe, O_CLOEXEC) == 0)
        child_fds[1] = out_pipe[1];
    if (child_fds[0] < 0 || child_fds[1] < 0) {
        fprintf(stderr, "obxt_proc: cannot create pipes: %s\n", strerror(errno));
        for (int i = 0; i < 3; i++)
            if (child_fds[i] >= 0)
                close(child_fds[i]);
        if (in_pipe[1] >= 0)
            close(in_pipe[1]);
        if (out_pipe[0] >= 0)
            close(out_pipe[0]);
        return -1;
    }
    proc->in_fd = in_pipe[1];
    proc->out_fd = out_pipe[0];
    return 0;
}

struct obxt_proc *
obxt_proc_spawn(const char *const argv[], const char *const env[], const char *log_path, int flags)
{
    struct obxt_proc *proc = NULL;
    char **envp = NULL;
    int child_fds[3] = {-1, -1, -1};
    pid_t parent = getpid();

    /* A write to a dead child's stdin must fail with EPIPE, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    proc = calloc(1, sizeof(*proc));
    envp = build_env(env);
    if (!proc || !envp || !argv || !argv[0]) {
        fprintf(stderr, "obxt_proc: out of memory or empty argv\n");
        goto fail;
    }
    proc->in_fd = proc->out_fd = -1;
    if (open_child_fds(proc, log_path, flags, child_fds) < 0)
        goto fail;
    proc->pid = fork();
    if (proc->pid == 0)
        child_exec(argv, envp, parent, child_fds[0], child_fds[1], child_fds[2]);
    for (int i = 0; i < 3; i++)
        if (child_fds[i] >= 0)
            close(child_fds[i]);
    if (proc->pid < 0) {
        fprintf(stderr, "obxt_proc: fork: %s\n", strerror(errno));
        goto fail;
    }
    free(envp);
    return proc;
fail:
    free(envp);
    obxt_proc_free(proc);
    return NULL;
}

pid_t
obxt_proc_pid(const struct obxt_proc *proc)
{
    return proc->pid;
}

/* Take the first line (or, at EOF, the rest) out of proc->buf. NULL if there is none yet. */
static char *
take_line(struct obxt_proc *proc)
{
    char *nl = memchr(proc->buf, '\n', proc->len);
    size_t line_len, used;
    char *line;

    if (!nl && !(proc->eof && proc->len > 0))
        return NULL;
    line_len = nl ? (size_t)(nl - proc->buf) : proc->len;
    used = nl ? line_len + 1 : line_len;
    line = strndup(proc->buf, line_len);
    memmove(proc->buf, proc->buf + used, proc->len - used);
    proc->len -= used;
    return line;
}

/* Read what is available on stdout into buf. Returns 0 (data or EOF), -1 on error. */
static int
fill_buffer(struct obxt_proc *proc)
{
    ssize_t n;

    if (proc->cap - proc->len < 4096) {
        char *grown = realloc(proc->buf, proc->cap + 8192);

        if (!grown)
            return -1;
        proc->buf = grown;
        proc->cap += 8192;
    }
    do
        n = read(proc->out_fd, proc->buf + proc->len, proc->cap - proc->len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    if (n == 0)
        proc->eof = true;
    proc->len += (size_t)n;
    return 0;
}

char *
obxt_proc_read_line(struct obxt_proc *proc, int timeout_ms)
{
    long long deadline = deadline_from(timeout_ms);

    if (proc->out_fd < 0) {
        errno = EBADF;
        return NULL;
    }
    for (;;) {
        struct pollfd pfd = {.fd = proc->out_fd, .events = POLLIN};
        char *line = proc->buf ? take_line(proc) : NULL;
        int ready;

        if (line)
            return line;
        if (proc->eof) {
            errno = 0;
            return NULL;
        }
        ready = poll(&pfd, 1, remaining_ms(deadline));
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready == 0) {
            errno = ETIMEDOUT;
            return NULL;
        }
        if (ready < 0 || fill_buffer(proc) < 0)
            return NULL;
    }
}

int
obxt_proc_send(struct obxt_proc *proc, const char *line)
{
    size_t len = strlen(line), off = 0;
    char *msg;

    if (proc->in_fd < 0)
        return -1;
    msg = malloc(len + 1);
    if (!msg)
        return -1;
    memcpy(msg, line, len);
    msg[len++] = '\n';
    while (off < len) {
        ssize_t n = write(proc->in_fd, msg + off, len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(msg);
            return -1;
        }
        off += (size_t)n;
    }
    free(msg);
    return 0;
}

char *
obxt_proc_command(struct obxt_proc *proc, const char *line, int timeout_ms)
{
    if (obxt_proc_send(proc, line) < 0)
        return NULL;
    return obxt_proc_read_line(proc, timeout_ms);
}

int
obxt_proc_kill(struct obxt_proc *proc, int sig)
{
    if (proc->reaped)
        return -1;
    return kill(proc->pid, sig);
}

/* Reap the child if it has exited. Returns true once it has been reaped. */
static bool
try_reap(struct obxt_proc *proc)
{
    int status;
    pid_t got;

    if (proc->reaped)
        return true;
    do
        got = waitpid(proc->pid, &status, WNOHANG);
    while (got < 0 && errno == EINTR);
    if (got == proc->pid || (got < 0 && errno == ECHILD)) {
        proc->reaped = true;
        proc->status = got == proc->pid ? status : 0;
    }
    return proc->reaped;
}

bool
obxt_proc_running(struct obxt_proc *proc)
{
    return !try_reap(proc);
}

int
obxt_proc_wait(struct obxt_proc *proc, int timeout_ms, int *status)
{
    long long deadline = deadline_from(timeout_ms);

    while (!try_reap(proc)) {
        if (remaining_ms(deadline) == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        sleep_ms(10);
    }
    if (status)
        *status = proc->status;
    return 0;
}

int
obxt_proc_exit_code(const struct obxt_proc *proc)
{
    if (!proc->reaped)
        return -1;
    if (WIFEXITED(proc->status))
        return WEXITSTATUS(proc->status);
    if (WIFSIGNALED(proc->status))
        return 128 + WTERMSIG(proc->status);
    return -1;
}

int
obxt_proc_close_stdin(struct obxt_proc *proc)
{
    if (proc->in_fd >= 0)
        close(proc->in_fd);
    proc->in_fd = -1;
    return 0;
}

int
obxt_proc_finish(struct obxt_proc *proc, int timeout_ms, int *status)
{
    int rc = 0;

    obxt_proc_close_stdin(proc);
    if (obxt_proc_wait(proc, timeout_ms, status) == 0)
        return 0;
    fprintf(stderr, "obxt_proc: pid %d did not exit within %d ms, sending SIGTERM\n",
            (int)proc->pid, timeout_ms);
    rc = -1;
    obxt_proc_kill(proc, SIGTERM);
    if (obxt_proc_wait(proc, 5000, status) == 0)
        return rc;
    fprintf(stderr, "obxt_proc: pid %d ignored SIGTERM, sending SIGKILL\n", (int)proc->pid);
    obxt_proc_kill(proc, SIGKILL);
    obxt_proc_wait(proc, -1, status);
    return rc;
}

void
obxt_proc_free(struct obxt_proc *proc)
{
    if (!proc)
        return;
    if (proc->pid > 0 && !try_reap(proc)) {
        obxt_proc_kill(proc, SIGKILL);
        obxt_proc_wait(proc, -1, NULL);
    }
    obxt_proc_close_stdin(proc);
    if (proc->out_fd >= 0)
        close(proc->out_fd);
    free(proc->buf);
    free(proc);
}

/* Process state letter from /proc/<pid>/stat, or 0 if it cannot be read. */
static char
proc_state(pid_t pid)
{
    char path[64], line[512];
    const char *paren;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return 0;
    n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';
    /* "pid (comm) S ...": comm may contain anything, so look after the last ')'. */
    paren = strrchr(line, ')');
    return paren && paren[1] == ' ' ? paren[2] : 0;
}

bool
obxt_proc_pid_alive(pid_t pid)
{
    char state;

    if (pid <= 0)
        return false;
    if (kill(pid, 0) != 0 && errno != EPERM)
        return false;
    state = proc_state(pid);
    return state != 'Z' && state != 'X';
}

int
obxt_proc_pid_wait_gone(pid_t pid, int timeout_ms)
{
    long long deadline = deadline_from(timeout_ms);

    while (obxt_proc_pid_alive(pid)) {
        if (remaining_ms(deadline) == 0)
            return -1;
        sleep_ms(10);
    }
    return 0;
}

char *
obxt_proc_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path;

    if (!base || !*base)
        base = "/tmp";
    if (asprintf(&path, "%s/obxt-%s-XXXXXX", base, tag ? tag : "test") < 0)
        return NULL;
    if (!mkdtemp(path)) {
        fprintf(stderr, "obxt_proc: mkdtemp %s: %s\n", path, strerror(errno));
        free(path);
        return NULL;
    }
    return path;
}

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0; /* keep going: what cannot be removed is reported by the final lstat */
}

int
obxt_proc_rmtree(const char *path)
{
    if (!obxt_proc_path_exists(path))
        return 0;
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return obxt_proc_path_exists(path) ? -1 : 0;
}

bool
obxt_proc_path_exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

char *
obxt_proc_path_join(const char *dir, const char *name)
{
    char *path;

    if (asprintf(&path, "%s/%s", dir, name) < 0)
        return NULL;
    return path;
}

bool
obxt_proc_log_contains(const char *file, const char *substring)
{
    FILE *f = fopen(file, "re");
    char *data = NULL;
    size_t len = 0, cap = 0, n;
    bool found = false;

    if (!f)
        return false;
    do {
        if (cap - len < 65536) {
            char *grown = realloc(data, cap + 65536);

            if (!grown)
                goto cleanup;
            data = grown;
            cap += 65536;
        }
        n = fread(data + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    found = memmem(data, len, substring, strlen(substring)) != NULL;
cleanup:
    free(data);
    fclose(f);
    return found;
}

int
obxt_proc_log_wait(const char *file, const char *substring, int timeout_ms)
{
    long long deadline = deadline_from(timeout_ms);

    while (!obxt_proc_log_contains(file, substring)) {
        if (remaining_ms(deadline) == 0)
            return -1;
        sleep_ms(50);
    }
    return 0;
}
