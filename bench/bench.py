#!/usr/bin/env python3
"""bench.py - outboxd's benchmark harness (issue 6), run by bench/run.sh after it has built
everything. It starts a throwaway PostgreSQL and a local Kafka-protocol broker, runs every
workload and every contender, prints the results and writes docs/benchmarks.md with its plots.

    bench.py --root REPO --build BUILD_DIR --tools BENCH_TOOLS_DIR --results DIR

Environment (defaults in brackets): BENCH_ROWS [200000] rows of the drain workloads,
BENCH_REPEAT [3] runs of each drain contender (the median run is reported), BENCH_STEADY_S [30]
seconds per steady rate, BENCH_IDLE_S [60] idle seconds, BENCH_BIG_ROWS [1000000] rows of the
one big transaction, BENCH_LARGE_ROWS [5000] rows of the 64 KiB workload.

Only the Python standard library: PostgreSQL is reached through libpq with ctypes."""

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PUBLICATION = "bench"
PG_BIN = "/usr/lib/postgresql/15/bin"
PG_SETTINGS = [
    "shared_buffers=256MB",
    "track_commit_timestamp=on",  # commit time of every row, for the latency runs
    "max_wal_size=8GB",
    "checkpoint_timeout=1h",
    "autovacuum=off",  # no background work in the middle of a measurement
    "max_replication_slots=20",
    "max_wal_senders=20",
]
TOPICS = ["outbox.event.bench", "outbox.event.lat", "outbox.event.large"]


def env_int(name, default):
    return int(os.environ.get(name, default))


ROWS = env_int("BENCH_ROWS", 200000)
REPEAT = env_int("BENCH_REPEAT", 3)
STEADY_S = env_int("BENCH_STEADY_S", 30)
IDLE_S = env_int("BENCH_IDLE_S", 60)
BIG_ROWS = env_int("BENCH_BIG_ROWS", 1000000)
LARGE_ROWS = env_int("BENCH_LARGE_ROWS", 5000)
RATES = [1000, 5000, 10000]


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def now():
    return time.time()


# ---------------------------------------------------------------------------------------------
# libpq through ctypes


class Pg:
    """One libpq connection; query() returns rows as tuples of str (None for NULL)."""

    def __init__(self, conninfo):
        lib = ctypes.CDLL(ctypes.util.find_library("pq") or "libpq.so.5")
        vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        for name, res, args in [
            ("PQconnectdb", vp, [cp]),
            ("PQstatus", ci, [vp]),
            ("PQexec", vp, [vp, cp]),
            ("PQresultStatus", ci, [vp]),
            ("PQntuples", ci, [vp]),
            ("PQnfields", ci, [vp]),
            ("PQgetvalue", cp, [vp, ci, ci]),
            ("PQgetisnull", ci, [vp, ci, ci]),
            ("PQclear", None, [vp]),
            ("PQerrorMessage", cp, [vp]),
            ("PQfinish", None, [vp]),
        ]:
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        self.lib = lib
        self.conn = lib.PQconnectdb(conninfo.encode())
        if lib.PQstatus(self.conn) != 0:
            raise RuntimeError("connect: " + lib.PQerrorMessage(self.conn).decode())

    def query(self, sql):
        lib = self.lib
        res = lib.PQexec(self.conn, sql.encode())
        try:
            if lib.PQresultStatus(res) not in (1, 2):  # PGRES_COMMAND_OK, PGRES_TUPLES_OK
                raise RuntimeError("%s: %s" % (sql[:200], lib.PQerrorMessage(self.conn).decode()))
            nf = lib.PQnfields(res)
            return [
                tuple(
                    None if lib.PQgetisnull(res, r, c) else lib.PQgetvalue(res, r, c).decode()
                    for c in range(nf)
                )
                for r in range(lib.PQntuples(res))
            ]
        finally:
            lib.PQclear(res)

    def value(self, sql):
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def close(self):
        self.lib.PQfinish(self.conn)


# ---------------------------------------------------------------------------------------------
# processes


def cpu_s(pid):
    """utime + stime of the whole process (every thread), in seconds; None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def threads_cpu_ns(pid):
    """CPU time of each thread of pid, by thread name (summed), in ns (schedstat)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                comm = f.read().strip()
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                out[comm] = out.get(comm, 0) + int(f.read().split()[0])
        except OSError:
            pass
    return out


def status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Supervisor:
    """obx-pgtmp or kafka-broker: first stdout line is its address, commands on stdin, EOF ends
    it (and it removes everything it created)."""

    def __init__(self, argv, errlog):
        self.err = open(errlog, "w")
        self.p = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True
        )
        self.address = self.p.stdout.readline().strip()
        if not self.address:
            raise RuntimeError("%s did not start (see %s)" % (argv[0], errlog))

    def command(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        answer = self.p.stdout.readline().strip()
        if not answer.startswith("ok"):
            raise RuntimeError("%s: %s" % (line, answer))
        return answer[2:].strip()

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()


LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
CHILDREN = []  # every process the benchmark starts, stopped by stop_children()


def die_with_parent():
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(argv, **kw):
    """subprocess.Popen that is SIGTERMed when the benchmark dies and stopped at its end."""
    p = subprocess.Popen(argv, preexec_fn=die_with_parent, **kw)
    CHILDREN.append(p)
    return p


def stop_children():
    for p in CHILDREN:
        if p.returncode is None and p.poll() is None:
            p.terminate()
    for p in CHILDREN:
        if p.returncode is None:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_for_line(path, text, proc, timeout=30):
    deadline = now() + timeout
    while now() < deadline:
        with open(path) as f:
            if text in f.read():
                return
        if proc.poll() is not None:
            raise RuntimeError("process exited (status %s), see %s" % (proc.returncode, path))
        time.sleep(0.02)
    raise RuntimeError("timed out waiting for %r in %s" % (text, path))


def cpu_busy():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    total = sum(v[:8])
    return total - v[3] - v[4], total


def busy_pct(before, after):
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else float("nan")


def median_run(runs, key="seconds"):
    ordered = sorted(runs, key=lambda r: r[key])
    return ordered[(len(ordered) - 1) // 2]


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]


# ---------------------------------------------------------------------------------------------
# the benchmark


class Bench:
    def __init__(self, args):
        self.root = os.path.abspath(args.root)
        self.build = os.path.abspath(args.build)
        self.tools = os.path.abspath(args.tools)
        self.results = os.path.abspath(args.results)
        self.work = tempfile.mkdtemp(prefix="outboxd-bench.")
        self.outboxd = os.path.join(self.build, "outboxd")
        self.support = os.path.join(self.build, "tests", "support")
        self.pg = self.broker = self.db = None
        self.res = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "loadavg": []}
        self.seq = 0

    # setup / teardown --------------------------------------------------------------------------

    def start(self):
        argv = [os.path.join(self.support, "obx-pgtmp")]
        for s in PG_SETTINGS:
            argv += ["-s", s]
        self.pg = Supervisor(argv, os.path.join(self.work, "pgtmp.err"))
        self.conninfo = self.pg.address
        self.broker = Supervisor(
            [os.path.join(self.support, "kafka-broker")], os.path.join(self.work, "broker.err")
        )
        self.bootstrap = self.broker.address
        for t in TOPICS:
            self.broker.command("topic %s 4" % t)
        self.broker_pid = self.broker.p.pid
        self.db = Pg(self.conninfo)
        self.sql_file(os.path.join(self.root, "sql", "outbox.sql"))
        self.db.query(
            "CREATE PUBLICATION %s FOR TABLE public.outbox WITH (publish = 'insert')" % PUBLICATION
        )
        self.db.query(
            """CREATE FUNCTION bench_payload(n bigint) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
               SELECT jsonb_build_object('n', n, 'orderId', n, 'customerId',
                 'customer-' || (n % 1000), 'status', 'PLACED', 'currency', 'EUR',
                 'total', 42.50, 'items', jsonb_build_array(
                   jsonb_build_object('sku', 'SKU-' || (n % 97), 'qty', 2, 'price', 12.25),
                   jsonb_build_object('sku', 'SKU-' || (n % 89), 'qty', 1, 'price', 18.00)))
               $$"""
        )
        self.db.query(
            """CREATE TABLE public.outbox_poll (
                 seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 id uuid NOT NULL DEFAULT gen_random_uuid(),
                 aggregatetype varchar(255) NOT NULL,
                 aggregateid varchar(255) NOT NULL,
                 type varchar(255) NOT NULL,
                 payload jsonb,
                 headers jsonb,
                 published_at timestamptz)"""
        )
        self.db.query(
            "CREATE INDEX outbox_poll_unpublished ON public.outbox_poll (seq) "
            "WHERE published_at IS NULL"
        )
        self.describe_machine()

    def sql_file(self, path):
        subprocess.run(
            ["psql", self.conninfo, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", path], check=True
        )

    def stop(self):
        stop_children()
        if self.db is not None:
            self.db.close()
        for s in (self.broker, self.pg):
            if s is not None:
                s.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def describe_machine(self):
        m = {"nproc": os.cpu_count(), "kernel": platform.release()}
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    m["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    m["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
        m["postgresql"] = self.db.value("SELECT version()")
        m["librdkafka"] = subprocess.run(
            ["pkg-config", "--modversion", "rdkafka"], capture_output=True, text=True
        ).stdout.strip()
        m["libpq"] = subprocess.run(
            ["pkg-config", "--modversion", "libpq"], capture_output=True, text=True
        ).stdout.strip()
        rev = subprocess.run(
            ["git", "-C", self.root, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
        )
        m["outboxd"] = rev.stdout.strip() or "unknown"
        self.res["machine"] = m

    def note_load(self, what):
        with open("/proc/loadavg") as f:
            self.res["loadavg"].append((what, f.read().split()[0]))

    # slots and data ----------------------------------------------------------------------------

    def slot_name(self, prefix):
        self.seq += 1
        return "%s_%d" % (prefix, self.seq)

    def create_slot(self, name):
        self.db.query("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')" % name)

    def clone_slot(self, src):
        dst = self.slot_name("c")
        self.db.query("SELECT pg_copy_logical_replication_slot('%s', '%s')" % (src, dst))
        return dst

    def drop_slot(self, name):
        deadline = now() + 30
        while self.db.value(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '%s'" % name
        ):
            if now() > deadline:
                raise RuntimeError("slot %s still active" % name)
            time.sleep(0.05)
        self.db.query("SELECT pg_drop_replication_slot('%s')" % name)

    def write_rows(self, rows, per_txn, payload="bench_payload(i)", aggtype="bench"):
        """rows outbox rows in transactions of per_txn rows, payload n = 1..rows."""
        t0 = now()
        self.db.query(
            """DO $$
               BEGIN
                 FOR t IN 0 .. %d LOOP
                   INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload)
                   SELECT '%s', 'agg-' || (i %% 1000), 'BenchEvent', %s
                   FROM generate_series(t * %d + 1, (t + 1) * %d) i;
                   COMMIT;
                 END LOOP;
               END $$"""
            % (rows // per_txn - 1, aggtype, payload, per_txn, per_txn)
        )
        log("wrote %d rows (%d per transaction) in %.1f s" % (rows, per_txn, now() - t0))
        return self.db.value("SELECT pg_current_wal_lsn()")

    def lsn_reached(self, slot, lsn):
        row = self.db.query(
            "SELECT active_pid, confirmed_flush_lsn >= '%s'::pg_lsn FROM pg_replication_slots "
            "WHERE slot_name = '%s'" % (lsn, slot)
        )[0]
        return (int(row[0]) if row[0] else None), row[1] == "t"

    # contenders --------------------------------------------------------------------------------

    def run_ceiling(self, src, end_lsn, events, payload_bytes):
        slot = self.clone_slot(src)
        argv = [
            os.path.join(PG_BIN, "pg_recvlogical"),
            "-d",
            self.conninfo,
            "--slot",
            slot,
            "--start",
            "--endpos",
            end_lsn,
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=" + PUBLICATION,
            "-f",
            "/dev/null",
            "--no-loop",
        ]
        self.busy0 = cpu_busy()
        t0 = now()
        p = spawn(argv, stdin=subprocess.DEVNULL)
        ws_pid, ws_cpu, ru = None, None, None
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid != 0:
                break
            if ws_pid is None:
                ws_pid, _ = self.lsn_reached(slot, end_lsn)
            if ws_pid is not None:
                ws_cpu = cpu_s(ws_pid) or ws_cpu
            time.sleep(0.01)
        t1 = now()
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise RuntimeError("pg_recvlogical exited with %d" % p.returncode)
        self.drop_slot(slot)
        return self.result(
            t1 - t0,
            events,
            payload_bytes,
            client_cpu=ru.ru_utime + ru.ru_stime,
            server_cpu=ws_cpu,
            rss_kb=ru.ru_maxrss,
        )

    def result(self, seconds, events, payload_bytes, client_cpu, server_cpu, rss_kb, **extra):
        r = {
            "machine_busy_pct": busy_pct(self.busy0, cpu_busy()),
            "seconds": seconds,
            "events": events,
            "events_s": events / seconds,
            "mb_s": payload_bytes / seconds / 1e6,
            "client_cpu_s": client_cpu,
            "server_cpu_s": server_cpu,
            "client_cpu_per_m": client_cpu * 1e6 / events if client_cpu is not None else None,
            "server_cpu_per_m": server_cpu * 1e6 / events if server_cpu is not None else None,
            "peak_rss_kb": rss_kb,
        }
        r.update(extra)
        return r

    def spawn_outboxd(self, slot, name, acks=None, extra=()):
        logpath = os.path.join(self.work, name + ".log")
        summary = os.path.join(self.work, name + ".acks-summary")
        # default settings: no OUTBOXD_* variable of the caller's environment applies
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
        env["LD_PRELOAD"] = os.path.join(self.tools, "ackspy.so")
        env["ACKSPY_SUMMARY"] = summary
        if acks:
            env["ACKSPY_ACKS"] = acks
        argv = [
            self.outboxd,
            "-X",
            "postgres.conninfo=" + self.conninfo,
            "-X",
            "kafka.bootstrap.servers=" + self.bootstrap,
            "-X",
            "postgres.slot=" + slot,
            "-X",
            "postgres.publication=" + PUBLICATION,
            "-X",
            "postgres.slot.create=false",
            "-X",
            "postgres.publication.create=false",
        ]
        for kv in extra:
            argv += ["-X", kv]
        with open(logpath, "w") as errf:
            p = spawn(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf, env=env
            )
        p.logpath, p.summary = logpath, summary
        return p

    def stop_outboxd(self, p):
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.returncode != 0:
            raise RuntimeError("outboxd exited with %d, see %s" % (p.returncode, p.logpath))
        summary = {}
        with open(p.summary) as f:
            for line in f:
                k, v = line.split()
                summary[k] = int(v)
        if summary.get("errors"):
            raise RuntimeError("outboxd had %d failed deliveries" % summary["errors"])
        return summary

    def wait_confirmed(self, p, slot, lsn, timeout=600):
        """Polls the slot until confirmed_flush_lsn >= lsn; returns (time, walsender pid,
        walsender CPU s). Samples the walsender's CPU as it goes (it exits with outboxd)."""
        deadline = now() + timeout
        ws_pid, ws_cpu = None, None
        while now() < deadline:
            pid, done = self.lsn_reached(slot, lsn)
            t = now()
            ws_pid = pid or ws_pid
            if ws_pid is not None:
                ws_cpu = cpu_s(ws_pid) or ws_cpu
            if done:
                return t, ws_pid, ws_cpu
            if p.poll() is not None:
                raise RuntimeError("outboxd exited (%d), see %s" % (p.returncode, p.logpath))
            time.sleep(0.02)
        raise RuntimeError("outboxd did not confirm %s within %d s" % (lsn, timeout))

    def run_outboxd(self, src, end_lsn, events, payload_bytes):
        slot = self.clone_slot(src)
        b0 = cpu_s(self.broker_pid)
        self.busy0 = cpu_busy()
        t0 = now()
        p = self.spawn_outboxd(slot, slot)
        t1, _, ws_cpu = self.wait_confirmed(p, slot, end_lsn)
        cpu, rss = cpu_s(p.pid), status_kb(p.pid, "VmHWM")
        broker_cpu = cpu_s(self.broker_pid) - b0
        acks = self.stop_outboxd(p)
        self.drop_slot(slot)
        if acks["count"] < events:
            raise RuntimeError("outboxd acknowledged %d of %d events" % (acks["count"], events))
        ack_s = acks["last_us"] / 1e6 - t0
        return self.result(
            t1 - t0,
            events,
            payload_bytes,
            client_cpu=cpu,
            server_cpu=ws_cpu,
            rss_kb=rss,
            acked_s=ack_s,
            acked_events_s=events / ack_s,
            broker_cpu_s=broker_cpu,
        )

    def fill_poll_table(self):
        self.db.query("TRUNCATE public.outbox_poll RESTART IDENTITY")
        self.db.query(
            "INSERT INTO public.outbox_poll (id, aggregatetype, aggregateid, type, payload, "
            "headers) SELECT id, aggregatetype, aggregateid, type, payload, headers "
            "FROM public.outbox ORDER BY (payload->>'n')::bigint"
        )
        self.db.query("VACUUM ANALYZE public.outbox_poll")

    def run_poller(self, workers, events, payload_bytes):
        self.fill_poll_table()
        argv = [
            os.path.join(self.tools, "bench-poller"),
            "-d",
            self.conninfo,
            "-b",
            self.bootstrap,
            "-w",
        ]
        b0 = cpu_s(self.broker_pid)
        lsn0 = self.db.value("SELECT pg_current_wal_lsn()")
        self.busy0 = cpu_busy()
        t0 = now()
        procs = [
            spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(workers)
        ]
        backends, done, t1 = {}, {}, None
        while len(done) < workers:
            ready, _, _ = select.select([p.stdout for p in procs if p.pid not in done], [], [], 60)
            if not ready:
                raise RuntimeError("poller stalled")
            for p in procs:
                if p.stdout not in ready:
                    continue
                line = p.stdout.readline().split()
                if not line:
                    raise RuntimeError("poller %d exited (%s)" % (p.pid, p.wait()))
                if line[0] == "backend":
                    backends[p.pid] = int(line[1])
                elif line[0] == "done":
                    done[p.pid] = int(line[1])
                    t1 = now()
        cpu = sum(cpu_s(p.pid) for p in procs)
        server_cpu = sum(cpu_s(b) or 0 for b in backends.values())
        rss = max(status_kb(p.pid, "VmHWM") or 0 for p in procs)
        broker_cpu = cpu_s(self.broker_pid) - b0
        for p in procs:
            p.stdin.close()
            p.wait(timeout=60)
        wal = self.db.value("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '%s')" % lsn0)
        published = sum(done.values())
        if published != events:
            raise RuntimeError("pollers published %d of %d rows" % (published, events))
        return self.result(
            t1 - t0,
            events,
            payload_bytes,
            client_cpu=cpu,
            server_cpu=server_cpu,
            rss_kb=rss,
            broker_cpu_s=broker_cpu,
            wal_bytes=int(float(wal)),
        )

    # workloads ---------------------------------------------------------------------------------

    def drain(self, key, title, per_txn, rows, payload="bench_payload(i)", pollers=True):
        log("%s: %s" % (key, title))
        self.note_load(key)
        src = self.slot_name("src")
        self.db.query("TRUNCATE public.outbox")
        self.db.query("CHECKPOINT")
        self.create_slot(src)
        end_lsn = self.write_rows(rows, per_txn, payload)
        payload_bytes = int(self.db.value("SELECT sum(octet_length(payload::text)) FROM outbox"))
        runs = {"ceiling": [], "outboxd": []}
        for i in range(REPEAT):
            runs["ceiling"].append(self.run_ceiling(src, end_lsn, rows, payload_bytes))
            runs["outboxd"].append(self.run_outboxd(src, end_lsn, rows, payload_bytes))
            log(
                "  run %d: ceiling %.2f s, outboxd %.2f s (last ack %.2f s)"
                % (
                    i + 1,
                    runs["ceiling"][-1]["seconds"],
                    runs["outboxd"][-1]["seconds"],
                    runs["outboxd"][-1]["acked_s"],
                )
            )
        self.drop_slot(src)
        if pollers:
            for workers in (1, 4):
                name = "poller-%d" % workers
                runs[name] = [self.run_poller(workers, rows, payload_bytes) for _ in range(REPEAT)]
                log("  %s: %s s" % (name, ", ".join("%.2f" % r["seconds"] for r in runs[name])))
        w = {"title": title, "rows": rows, "per_txn": per_txn, "payload_bytes": payload_bytes}
        w["runs"] = runs
        w["median"] = {k: median_run(v) for k, v in runs.items()}
        self.res[key] = w

    def steady(self):
        log("steady: %s events/s, %d s each" % (", ".join(map(str, RATES)), STEADY_S))
        self.note_load("steady")
        self.db.query("TRUNCATE public.outbox")
        slot = self.slot_name("lat")
        self.create_slot(slot)
        acks_path = os.path.join(self.work, "acks.txt")
        recv_path = os.path.join(self.work, "recv.txt")
        p = self.spawn_outboxd(slot, "steady", acks=acks_path)
        wait_for_line(p.logpath, "streaming from", p)
        cons = spawn(
            [
                os.path.join(self.tools, "bench-latcons"),
                "-b",
                self.bootstrap,
                "-t",
                "outbox.event.lat",
                "-o",
                recv_path,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if cons.stdout.readline().strip() != "ready":
            raise RuntimeError("bench-latcons did not start")
        self.loadgen(1000, 3, 0)  # warm-up (metadata, producer id, connections): not measured
        time.sleep(1)
        phases = []
        for i, rate in enumerate(RATES):
            first = (i + 1) * 100000000
            c0, w0, m0 = cpu_s(p.pid), self.walsender_cpu(slot), cpu_busy()
            t0 = now()
            out = self.loadgen(rate, STEADY_S, first)
            t1 = now()
            c1, w1, m1 = cpu_s(p.pid), self.walsender_cpu(slot), cpu_busy()
            phases.append(
                {
                    "rate": rate,
                    "first": first,
                    "loadgen": out,
                    "outboxd_cpu_pct": 100 * (c1 - c0) / (t1 - t0),
                    "walsender_cpu_pct": 100 * (w1 - w0) / (t1 - t0),
                    "rss_kb": status_kb(p.pid, "VmRSS"),
                    "machine_busy_pct": busy_pct(m0, m1),
                }
            )
            log("  %d/s: %s" % (rate, out))
            time.sleep(2)
        end_lsn = self.db.value("SELECT pg_current_wal_lsn()")
        self.wait_confirmed(p, slot, end_lsn, timeout=120)
        time.sleep(1)
        cons.stdin.close()
        cons.wait(timeout=30)
        self.stop_outboxd(p)
        self.drop_slot(slot)
        self.latency_stats(phases, acks_path, recv_path)
        self.res["steady"] = {"seconds": STEADY_S, "phases": phases}

    def walsender_cpu(self, slot):
        pid = self.db.value(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '%s'" % slot
        )
        return cpu_s(int(pid)) if pid else 0.0

    def loadgen(self, rate, seconds, first):
        out = subprocess.run(
            [
                os.path.join(self.tools, "bench-loadgen"),
                "-d",
                self.conninfo,
                "-r",
                str(rate),
                "-s",
                str(seconds),
                "-n",
                str(first),
                "-a",
                "lat",
            ],
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=die_with_parent,
        )
        return out.stdout.strip()

    def latency_stats(self, phases, acks_path, recv_path):
        def load(path):
            with open(path) as f:
                return {int(a): int(b) for a, b in (line.split() for line in f)}

        acks, recv = load(acks_path), load(recv_path)
        commits = {
            int(n): int(t)
            for n, t in self.db.query(
                "SELECT (payload->>'n')::bigint, "
                "(extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint "
                "FROM public.outbox WHERE aggregatetype = 'lat'"
            )
        }
        os.makedirs(self.results, exist_ok=True)
        for ph in phases:
            lo, hi = ph["first"], ph["first"] + ph["rate"] * STEADY_S
            ns = [n for n in commits if lo <= n < hi]
            lat_ack = [(acks[n] - commits[n]) / 1000.0 for n in ns if n in acks]
            lat_recv = [(recv[n] - commits[n]) / 1000.0 for n in ns if n in recv]
            self.timeline(ph, ns, commits, acks)
            ph["events"] = len(ns)
            ph["missing_acks"] = len(ns) - len(lat_ack)
            ph["missing_recv"] = len(ns) - len(lat_recv)
            for name, lat in (("ack", lat_ack), ("recv", lat_recv)):
                ph[name] = {
                    "p50": pct(lat, 50),
                    "p99": pct(lat, 99),
                    "p999": pct(lat, 99.9),
                    "max": max(lat) if lat else float("nan"),
                }
                with open(os.path.join(self.results, "cdf-%s-%d.dat" % (name, ph["rate"])), "w") as f:
                    v = sorted(lat)
                    step = max(1, len(v) // 2000)
                    for i in range(0, len(v), step):
                        f.write("%.3f %.6f\n" % (v[i], (i + 1) / len(v)))
                    if v:
                        f.write("%.3f 1.0\n" % v[-1])

    def timeline(self, ph, ns, commits, acks):
        """Per second of the phase: p50, p99 and max of commit -> ack (results/timeline-R.dat)."""
        if not ns:
            return
        t0 = min(commits[n] for n in ns)
        buckets = {}
        for n in ns:
            if n in acks:
                buckets.setdefault((commits[n] - t0) // 1000000, []).append(
                    (acks[n] - commits[n]) / 1000.0
                )
        with open(os.path.join(self.results, "timeline-%d.dat" % ph["rate"]), "w") as f:
            for sec in sorted(buckets):
                v = buckets[sec]
                f.write("%d %.3f %.3f %.3f\n" % (sec, pct(v, 50), pct(v, 99), max(v)))

    def big_transaction(self):
        log("big: one transaction of %d rows" % BIG_ROWS)
        self.note_load("big")
        self.db.query("TRUNCATE public.outbox")
        slot, src = self.slot_name("big"), self.slot_name("src")
        self.create_slot(slot)
        self.create_slot(src)
        p = self.spawn_outboxd(slot, "big")
        wait_for_line(p.logpath, "streaming from", p)
        busy0 = cpu_busy()
        ins0 = now()
        self.db.query(
            "INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload) "
            "SELECT 'bench', 'agg-' || (i %% 1000), 'BenchEvent', bench_payload(i) "
            "FROM generate_series(1, %d) i" % BIG_ROWS
        )
        committed = now()
        end_lsn = self.db.value("SELECT pg_current_wal_lsn()")
        peak = 0
        t1, _, ws_cpu = None, None, None
        while True:  # like wait_confirmed, sampling RSS as it goes
            pid, done = self.lsn_reached(slot, end_lsn)
            t = now()
            ws_cpu = (cpu_s(pid) if pid else None) or ws_cpu
            peak = max(peak, status_kb(p.pid, "VmHWM") or 0)
            if done:
                t1 = t
                break
            if p.poll() is not None or t - committed > 600:
                raise RuntimeError("outboxd did not finish the big transaction")
            time.sleep(0.05)
        cpu, rss = cpu_s(p.pid), status_kb(p.pid, "VmHWM")
        busy = busy_pct(busy0, cpu_busy())
        acks = self.stop_outboxd(p)
        self.drop_slot(slot)
        if acks["count"] < BIG_ROWS:
            raise RuntimeError("outboxd acknowledged %d of %d" % (acks["count"], BIG_ROWS))
        ceiling = self.run_ceiling(src, end_lsn, BIG_ROWS, 0)
        self.drop_slot(src)
        self.res["big"] = {
            "rows": BIG_ROWS,
            "insert_s": committed - ins0,
            "confirmed_s": t1 - committed,
            "acked_s": acks["last_us"] / 1e6 - committed,
            "peak_rss_kb": max(peak, rss or 0),
            "outboxd_cpu_s": cpu,
            "walsender_cpu_s": ws_cpu,
            "ceiling_s": ceiling["seconds"],
            "machine_busy_pct": busy,
        }
        log("  %s" % json.dumps(self.res["big"]))

    def idle(self):
        log("idle: %d s" % IDLE_S)
        self.note_load("idle")
        slot = self.slot_name("idle")
        self.create_slot(slot)
        p = self.spawn_outboxd(slot, "idle")
        wait_for_line(p.logpath, "streaming from", p)
        time.sleep(1)
        c0, t0, m0, th0 = cpu_s(p.pid), now(), cpu_busy(), threads_cpu_ns(p.pid)
        time.sleep(IDLE_S)
        c1, t1, m1, th1 = cpu_s(p.pid), now(), cpu_busy(), threads_cpu_ns(p.pid)
        threads_ms = {k: (th1[k] - th0.get(k, 0)) / 1e6 for k in th1}
        self.res["idle"] = {
            "seconds": t1 - t0,
            "cpu_s": c1 - c0,
            "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
            "threads_cpu_ms": threads_ms,
            "rss_kb": status_kb(p.pid, "VmRSS"),
            "hwm_kb": status_kb(p.pid, "VmHWM"),
            "machine_busy_pct": busy_pct(m0, m1),
        }
        self.stop_outboxd(p)
        self.drop_slot(slot)
        log("  %s" % json.dumps(self.res["idle"]))

    def run(self):
        t0 = now()
        self.start()
        try:
            self.drain("drain1", "{:,} events as 1-row transactions".format(ROWS), 1, ROWS)
            self.drain("drain100", "{:,} events as 100-row transactions".format(ROWS), 100, ROWS)
            self.drain(
                "large",
                "%d events of 64 KiB, 1-row transactions" % LARGE_ROWS,
                1,
                LARGE_ROWS,
                payload="jsonb_build_object('n', i, 'data', (SELECT string_agg(md5(i || '-' || j), "
                "'') FROM generate_series(1, 2048) j))",
                pollers=False,
            )
            self.steady()
            self.big_transaction()
            self.idle()
            self.note_load("end")
        finally:
            self.stop()
        self.res["elapsed_s"] = now() - t0
        os.makedirs(self.results, exist_ok=True)
        with open(os.path.join(self.results, "results.json"), "w") as f:
            json.dump(self.res, f, indent=1)
        return self.res


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs the cleanup in finally
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--tools", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--report-only", action="store_true", help="re-render from results.json")
    args = ap.parse_args()
    import report  # bench/report.py: the table, docs/benchmarks.md and the plots

    if args.report_only:
        with open(os.path.join(args.results, "results.json")) as f:
            res = json.load(f)
    else:
        res = Bench(args).run()
    report.render(res, args.root, args.results)


if __name__ == "__main__":
    main()
