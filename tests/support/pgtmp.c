/* pgtmp.c - obx-pgtmp: supervisor of one throwaway PostgreSQL cluster for tests, the demo and the
 * benchmarks.
 *
 *   obx-pgtmp [-s name=value]...
 *
 * Creates a fresh directory under $TMPDIR (or /tmp), runs initdb and starts the server on
 * 127.0.0.1 and a free port (as the `postgres` user when run as root), then prints one line on
 * stdout, a libpq conninfo:
 *
 *   host=127.0.0.1 port=N user=postgres dbname=postgres
 *
 * and answers commands read on stdin, one line each, with one line `ok [value]` or `error <why>`:
 *
 *   stop fast | stop immediate | start | restart fast | restart immediate
 *   datadir (ok <PGDATA>) | dir (ok <temp dir>) | log (ok <server log>) | pid (ok <postmaster pid>)
 *   conninfo (ok <conninfo>)
 *
 * On stdin EOF, SIGTERM, SIGINT, SIGHUP or the death of its parent it stops the server
 * (immediate), makes sure every server process is gone, removes the directory and exits 0.
 * It is a child subreaper, so the postmaster (daemonized by pg_ctl) stays its child and can be
 * waited for exactly. Exit status 1 if the cluster cannot be created or started. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PGTMP_DEFAULT_BINDIR "/usr/lib/postgresql/15/bin"
#define PGTMP_START_TRIES 5
#define PGTMP_MAX_SETTINGS 64
#define PGTMP_LINE_MAX 4096

struct pgtmp {
    char bindir[PATH_MAX];
    char dir[PATH_MAX - 64]; /* the temp directory; everything lives below it */
    char datadir[PATH_MAX];  /* dir/data */
    char logfile[PATH_MAX];  /* dir/postgresql.log */
    bool drop_privileges;    /* run initdb/pg_ctl as the postgres user */
    uid_t uid;
    gid_t gid;
    int port;
    pid_t postmaster; /* 0 while stopped (or once it died and was reaped) */
    int sigfd;
    const char *settings[PGTMP_MAX_SETTINGS];
    int n_settings;
    char line[PGTMP_LINE_MAX]; /* stdin bytes not yet consumed */
    size_t line_len;
};

static void
sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void
usage(void)
{
    fprintf(stderr, "usage: obx-pgtmp [-s name=value]...\n"
                    "starts a throwaway PostgreSQL cluster, prints its conninfo on stdout and\n"
                    "reads commands on stdin; EOF stops it and removes every file\n");
}

/* Run argv as the cluster owner with stdin and stdout on /dev/null, stderr inherited.
 * Returns the exit status (0 = success) or -1 if it could not be run or was killed. */
static int
run(struct pgtmp *pg, const char *const argv[])
{
    sigset_t none;
    int status;
    pid_t pid = fork();

    if (pid < 0) {
        fprintf(stderr, "obx-pgtmp: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);

        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0)
            _exit(127);
        close_range(3, ~0U, 0);
        if (pg->drop_privileges &&
            (setgroups(0, NULL) != 0 || setgid(pg->gid) != 0 || setuid(pg->uid) != 0))
            _exit(127);
        if (chdir(pg->dir) != 0)
            _exit(127);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "obx-pgtmp: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* True (and sets pg->bindir) if dir holds an executable initdb. */
static bool
try_bindir(struct pgtmp *pg, const char *dir)
{
    char initdb[PATH_MAX + 16];

    if (!dir || !dir[0] || strlen(dir) >= sizeof(pg->bindir))
        return false;
    snprintf(initdb, sizeof(initdb), "%s/initdb", dir);
    if (access(initdb, X_OK) != 0)
        return false;
    snprintf(pg->bindir, sizeof(pg->bindir), "%s", dir);
    return true;
}

/* Sets pg->bindir: $OBX_PG_BINDIR (and nothing else when it is set: never silently run another
 * version), else `pg_config --bindir`, else the Debian default. Returns 0 or -1 with a hint. */
static int
find_bindir(struct pgtmp *pg)
{
    const char *env = getenv("OBX_PG_BINDIR");
    char from_pg_config[PATH_MAX] = "";
    FILE *p;

    if (env && env[0]) {
        if (try_bindir(pg, env))
            return 0;
        fprintf(stderr, "obx-pgtmp: no initdb in $OBX_PG_BINDIR (%s)\n", env);
        return -1;
    }
    p = popen("pg_config --bindir 2>/dev/null", "re");
    if (p) {
        if (!fgets(from_pg_config, sizeof(from_pg_config), p))
            from_pg_config[0] = '\0';
        from_pg_config[strcspn(from_pg_config, "\n")] = '\0';
        pclose(p);
    }
    if (try_bindir(pg, from_pg_config) || try_bindir(pg, PGTMP_DEFAULT_BINDIR))
        return 0;
    fprintf(stderr,
            "obx-pgtmp: initdb not found (tried pg_config --bindir and %s): install the server "
            "with apt-get install postgresql-15, or set OBX_PG_BINDIR to its bin directory\n",
            PGTMP_DEFAULT_BINDIR);
    return -1;
}

/* Who runs the server: ourselves, or the postgres user when we are root (initdb refuses root). */
static int
find_owner(struct pgtmp *pg)
{
    struct passwd *pw;

    if (geteuid() != 0)
        return 0;
    pw = getpwnam("postgres");
    if (!pw) {
        fprintf(stderr, "obx-pgtmp: running as root needs a 'postgres' user to own the cluster "
                        "(apt-get install postgresql-15 creates it)\n");
        return -1;
    }
    pg->drop_privileges = true;
    pg->uid = pw->pw_uid;
    pg->gid = pw->pw_gid;
    return 0;
}

static int
make_dir(struct pgtmp *pg)
{
    const char *base = getenv("TMPDIR");

    if (!base || !*base)
        base = "/tmp";
    snprintf(pg->dir, sizeof(pg->dir), "%s/obx-pgtmp-XXXXXX", base);
    if (!mkdtemp(pg->dir)) {
        fprintf(stderr, "obx-pgtmp: mkdtemp %s: %s\n", pg->dir, strerror(errno));
        pg->dir[0] = '\0';
        return -1;
    }
    snprintf(pg->datadir, sizeof(pg->datadir), "%s/data", pg->dir);
    snprintf(pg->logfile, sizeof(pg->logfile), "%s/postgresql.log", pg->dir);
    if (pg->drop_privileges && chown(pg->dir, pg->uid, pg->gid) != 0) {
        fprintf(stderr, "obx-pgtmp: chown %s: %s\n", pg->dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int
run_initdb(struct pgtmp *pg)
{
    char initdb[PATH_MAX + 16];
    const char *argv[] = {initdb,     "-D", pg->datadir, "-A",         "trust",     "-U",
                          "postgres", "-E", "UTF8",      "--locale=C", "--no-sync", NULL};

    snprintf(initdb, sizeof(initdb), "%s/initdb", pg->bindir);
    if (run(pg, argv) != 0) {
        fprintf(stderr, "obx-pgtmp: initdb -D %s failed\n", pg->datadir);
        return -1;
    }
    return 0;
}

/* Append one `name = 'value'` line; a value already in quotes is written as is. */
static void
write_setting(FILE *conf, const char *setting)
{
    const char *eq = strchr(setting, '=');
    const char *value = eq + 1;

    fprintf(conf, "%.*s = ", (int)(eq - setting), setting);
    if (value[0] == '\'') {
        fprintf(conf, "%s\n", value);
        return;
    }
    fputc('\'', conf);
    for (; *value; value++) {
        if (*value == '\'')
            fputc('\'', conf);
        fputc(*value, conf);
    }
    fputs("'\n", conf);
}

/* Append our settings, then the -s ones (later lines win), then the port (if port > 0). */
static int
append_conf(struct pgtmp *pg, bool with_defaults)
{
    char path[PATH_MAX + 32];
    FILE *conf;

    snprintf(path, sizeof(path), "%s/postgresql.conf", pg->datadir);
    conf = fopen(path, "ae");
    if (!conf) {
        fprintf(stderr, "obx-pgtmp: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (with_defaults) {
        fprintf(conf,
                "\n# obx-pgtmp\nlisten_addresses = '127.0.0.1'\n"
                "unix_socket_directories = '%s'\nwal_level = logical\n"
                "max_wal_senders = 10\nmax_replication_slots = 10\nfsync = off\n"
                "shared_buffers = 32MB\nlogging_collector = off\n",
                pg->dir);
        for (int i = 0; i < pg->n_settings; i++)
            write_setting(conf, pg->settings[i]);
    }
    if (pg->port > 0)
        fprintf(conf, "port = %d\n", pg->port);
    if (fclose(conf) != 0) {
        fprintf(stderr, "obx-pgtmp: write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* A port on 127.0.0.1 nobody listens on right now (the kernel's pick for port 0). */
static int
free_port(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = -1;

    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

/* The postmaster pid from PGDATA/postmaster.pid, or 0. */
static pid_t
read_pidfile(const struct pgtmp *pg)
{
    char path[PATH_MAX + 32];
    long pid = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/postmaster.pid", pg->datadir);
    f = fopen(path, "re");
    if (!f)
        return 0;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    return (pid_t)pid;
}

/* Parent pid of pid from /proc/<pid>/stat, or 0. */
static pid_t
parent_of(pid_t pid)
{
    char path[64], line[512];
    const char *paren;
    long ppid = 0;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return 0;
    n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';
    /* "pid (comm) S ppid ...": comm may contain anything, so parse after the last ')'. */
    paren = strrchr(line, ')');
    if (!paren || sscanf(paren + 1, " %*c %ld", &ppid) != 1)
        return 0;
    return (pid_t)ppid;
}

/* Reap every exited child. We are a subreaper and run nothing else in the background, so our
 * children are the postmaster and, once it died, its orphans. Returns true while any remain. */
static bool
server_alive(struct pgtmp *pg)
{
    pid_t pid;
    int status;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        if (pid == pg->postmaster)
            pg->postmaster = 0;
    return pid == 0;
}

/* SIGKILL every child of ours (found by scanning /proc for our pid as parent). */
static void
kill_children(void)
{
    DIR *proc = opendir("/proc");
    struct dirent *de;

    if (!proc)
        return;
    while ((de = readdir(proc)) != NULL) {
        pid_t pid = (pid_t)atol(de->d_name);

        if (pid > 0 && parent_of(pid) == getpid())
            kill(pid, SIGKILL);
    }
    closedir(proc);
}

/* Wait until every server process is gone; SIGKILL stragglers after grace_ms (and again every
 * second: a killed process's children become ours). Returns 0, or -1 if some are still there
 * 10 s after that. */
static int
wait_server_gone(struct pgtmp *pg, int grace_ms)
{
    int waited = 0;

    while (server_alive(pg)) {
        if (waited >= grace_ms && (waited - grace_ms) % 1000 == 0) {
            fprintf(stderr, "obx-pgtmp: server processes still alive after %d ms, killing\n",
                    waited);
            kill_children();
        }
        if (waited > grace_ms + 10000)
            return -1;
        sleep_ms(10);
        waited += 10;
    }
    return 0;
}

static int
pg_ctl_start(struct pgtmp *pg)
{
    char pg_ctl[PATH_MAX + 16];
    const char *argv[] = {pg_ctl, "start",     "-w", "-t",        "60", "-s",
                          "-D",   pg->datadir, "-l", pg->logfile, NULL};

    snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg->bindir);
    int rc = run(pg, argv);
    pid_t pid = read_pidfile(pg);

    /* Even a failed start may leave a postmaster behind (timeout): it is ours to kill then.
     * A stale postmaster.pid names someone else's process, so trust only our own child. */
    if (pid > 0 && parent_of(pid) == getpid()) {
        pg->postmaster = pid;
    }
    return rc == 0 && pg->postmaster > 0 ? 0 : -1;
}

/* Print the last lines of the server log on stderr (why a start failed). */
static void
print_log_tail(const struct pgtmp *pg)
{
    char tail[4096];
    FILE *f = fopen(pg->logfile, "re");
    size_t n;

    if (!f)
        return;
    if (fseek(f, -(long)(sizeof(tail) - 1), SEEK_END) != 0)
        rewind(f);
    n = fread(tail, 1, sizeof(tail) - 1, f);
    fclose(f);
    tail[n] = '\0';
    fprintf(stderr, "obx-pgtmp: end of %s:\n%s\n", pg->logfile, tail);
}

/* True if the server log says the port was taken (someone bound it after we picked it). */
static bool
port_was_taken(const struct pgtmp *pg)
{
    char buf[65536];
    FILE *f = fopen(pg->logfile, "re");
    size_t n;

    if (!f)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, "Address already in use") != NULL;
}

/* Start the server; on the first start, retry with another port if ours was taken meanwhile.
 * Returns 0 or -1 (with the server log's tail on stderr). */
static int
start_server(struct pgtmp *pg, bool first)
{
    for (int attempt = 1; attempt <= PGTMP_START_TRIES; attempt++) {
        if (first) {
            pg->port = free_port();
            if (pg->port < 0 || append_conf(pg, attempt == 1) < 0)
                return -1;
        }
        if (pg_ctl_start(pg) == 0)
            return 0;
        wait_server_gone(pg, 5000);
        if (!first || !port_was_taken(pg))
            break;
    }
    fprintf(stderr, "obx-pgtmp: the server did not start\n");
    print_log_tail(pg);
    return -1;
}

/* pg_ctl stop -m mode, then wait for every server process to be gone (killing stragglers).
 * Returns 0 or -1. */
static int
stop_server(struct pgtmp *pg, const char *mode)
{
    char pg_ctl[PATH_MAX + 16];
    const char *argv[] = {pg_ctl, "stop",      "-w", "-t",         "60", "-s",
                          "-D",   pg->datadir, "-m", (char *)mode, NULL};
    int rc;

    snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg->bindir);
    /* Without a live postmaster of ours, postmaster.pid is stale: only orphans are left. */
    rc = pg->postmaster > 0 ? run(pg, argv) : -1;
    if (wait_server_gone(pg, rc == 0 ? 10000 : 0) < 0)
        return -1;
    pg->postmaster = 0;
    return rc == 0 ? 0 : -1;
}

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fprintf(stderr, "obx-pgtmp: remove %s: %s\n", path, strerror(errno));
    return 0;
}

/* Stop whatever runs and remove the directory. Returns 0 if nothing is left. */
static int
cleanup(struct pgtmp *pg)
{
    int rc = 0;

    if (server_alive(pg) && stop_server(pg, "immediate") < 0 && server_alive(pg)) {
        fprintf(stderr, "obx-pgtmp: server processes of %s survived\n", pg->datadir);
        rc = -1;
    }
    if (pg->dir[0]) {
        nftw(pg->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        if (access(pg->dir, F_OK) == 0) {
            fprintf(stderr, "obx-pgtmp: could not remove %s\n", pg->dir);
            rc = -1;
        }
    }
    return rc;
}

/* Write one whole line to stdout. Returns 0, or -1 when the reader is gone. */
static int reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
reply(const char *fmt, ...)
{
    char buf[PATH_MAX + 128];
    va_list ap;
    size_t len, off = 0;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    len = strlen(buf);
    buf[len++] = '\n';
    while (off < len) {
        ssize_t n = write(1, buf + off, len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return 0;
}

static int
reply_conninfo(const struct pgtmp *pg, const char *prefix)
{
    return reply("%shost=127.0.0.1 port=%d user=postgres dbname=postgres", prefix, pg->port);
}

/* stop / start / restart: the commands that change the server's state. */
static int
do_lifecycle(struct pgtmp *pg, const char *cmd)
{
    bool running = server_alive(pg) && pg->postmaster > 0;
    const char *mode = NULL;

    if (strcmp(cmd, "stop fast") == 0 || strcmp(cmd, "restart fast") == 0)
        mode = "fast";
    else if (strcmp(cmd, "stop immediate") == 0 || strcmp(cmd, "restart immediate") == 0)
        mode = "immediate";
    if (strncmp(cmd, "stop", 4) == 0 && !running)
        return reply("error not running");
    if (strcmp(cmd, "start") == 0 && running)
        return reply("error already running");
    if (mode && running && stop_server(pg, mode) < 0)
        return reply("error pg_ctl stop -m %s failed, see %s", mode, pg->logfile);
    if (strncmp(cmd, "stop", 4) != 0) {
        char pidfile[PATH_MAX + 32];

        /* A server that died by itself may have left processes and a stale postmaster.pid:
         * clear them before starting (with no child left, no server process of ours runs). */
        if (wait_server_gone(pg, 5000) < 0)
            return reply("error old server processes do not go away");
        snprintf(pidfile, sizeof(pidfile), "%s/postmaster.pid", pg->datadir);
        unlink(pidfile);
        if (start_server(pg, false) < 0)
            return reply("error start failed, see %s", pg->logfile);
    }
    return reply("ok");
}

/* Answer one command line. Returns 0, or -1 when the answer could not be written. */
static int
do_command(struct pgtmp *pg, const char *cmd)
{
    static const char *const lifecycle[] = {"stop fast",    "stop immediate",    "start",
                                            "restart fast", "restart immediate", NULL};

    for (int i = 0; lifecycle[i]; i++)
        if (strcmp(cmd, lifecycle[i]) == 0)
            return do_lifecycle(pg, cmd);
    if (strcmp(cmd, "datadir") == 0)
        return reply("ok %s", pg->datadir);
    if (strcmp(cmd, "dir") == 0)
        return reply("ok %s", pg->dir);
    if (strcmp(cmd, "log") == 0)
        return reply("ok %s", pg->logfile);
    if (strcmp(cmd, "conninfo") == 0)
        return reply_conninfo(pg, "ok ");
    if (strcmp(cmd, "pid") == 0) {
        if (server_alive(pg) && pg->postmaster > 0)
            return reply("ok %d", (int)pg->postmaster);
        return reply("error not running");
    }
    return reply("error unknown command '%.200s' (stop fast|stop immediate|start|restart "
                 "fast|restart immediate|datadir|dir|log|pid|conninfo)",
                 cmd);
}

/* Consume the complete lines in pg->line. Returns 0, or -1 when a reply could not be written. */
static int
do_lines(struct pgtmp *pg)
{
    char *nl;

    while ((nl = memchr(pg->line, '\n', pg->line_len)) != NULL) {
        size_t used = (size_t)(nl - pg->line) + 1;

        *nl = '\0';
        if (nl > pg->line && nl[-1] == '\r')
            nl[-1] = '\0';
        if (do_command(pg, pg->line) < 0)
            return -1;
        memmove(pg->line, pg->line + used, pg->line_len - used);
        pg->line_len -= used;
    }
    if (pg->line_len == sizeof(pg->line)) {
        pg->line_len = 0;
        return reply("error line too long");
    }
    return 0;
}

/* Serve commands until stdin EOF, a terminating signal, or a broken stdout. */
static void
serve(struct pgtmp *pg)
{
    for (;;) {
        struct pollfd fds[2] = {{.fd = 0, .events = POLLIN}, {.fd = pg->sigfd, .events = POLLIN}};
        int ready = poll(fds, 2, 500);
        ssize_t n;

        server_alive(pg);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0 || fds[1].revents)
            return;
        if (!fds[0].revents)
            continue;
        n = read(0, pg->line + pg->line_len, sizeof(pg->line) - pg->line_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        pg->line_len += (size_t)n;
        if (do_lines(pg) < 0)
            return;
    }
}

/* -s name=value: name is a plain GUC name, there is a value. */
static bool
valid_setting(const char *setting)
{
    const char *eq = strchr(setting, '=');

    if (!eq || eq == setting || strchr(setting, '\n'))
        return false;
    for (const char *c = setting; c < eq; c++)
        if (!(*c == '_' || *c == '.' || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9')))
            return false;
    return true;
}

static int
parse_args(struct pgtmp *pg, int argc, char **argv)
{
    int opt;

    while ((opt = getopt(argc, argv, "s:h")) != -1) {
        if (opt == 's' && valid_setting(optarg) && pg->n_settings < PGTMP_MAX_SETTINGS) {
            pg->settings[pg->n_settings++] = optarg;
            continue;
        }
        if (opt == 's')
            fprintf(stderr, "obx-pgtmp: bad setting '%s' (want name=value)\n", optarg);
        usage();
        return -1;
    }
    if (optind != argc) {
        usage();
        return -1;
    }
    return 0;
}

/* Terminating signals arrive on a signalfd; a broken stdout is a write error, not a SIGPIPE. */
static int
setup_signals(struct pgtmp *pg)
{
    sigset_t set;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    pg->sigfd = signalfd(-1, &set, SFD_CLOEXEC);
    return pg->sigfd < 0 ? -1 : 0;
}

int
main(int argc, char **argv)
{
    static struct pgtmp pg;
    pid_t parent = getppid();
    int rc = 1;

    /* Whatever happens to our parent (a crashed test), we get SIGTERM and clean up. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        return 1;
    /* The postmaster, daemonized by pg_ctl, is reparented to us: we can wait for it. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    /* Out of our parent's process group, so a killpg(SIGKILL) aimed at a test (libcheck's and
     * meson's timeouts do that) ends the test and our parent-death signal lets us clean up.
     * Not when reading a terminal: a background group reading it would be stopped. */
    if (!isatty(0))
        setpgid(0, 0);
    if (parse_args(&pg, argc, argv) < 0)
        return 2;
    if (setup_signals(&pg) < 0) {
        fprintf(stderr, "obx-pgtmp: signals: %s\n", strerror(errno));
        return 1;
    }
    if (find_bindir(&pg) < 0 || find_owner(&pg) < 0 || make_dir(&pg) < 0 || run_initdb(&pg) < 0 ||
        start_server(&pg, true) < 0)
        goto cleanup;
    if (reply_conninfo(&pg, "") == 0)
        serve(&pg);
    rc = 0;
cleanup:
    if (cleanup(&pg) < 0)
        rc = 1;
    return rc;
}
