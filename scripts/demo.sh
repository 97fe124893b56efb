#!/usr/bin/env bash
# demo.sh - see outboxd work end to end on this machine: installs what is missing, builds, starts
# a throwaway PostgreSQL and a local Kafka-protocol broker, runs outboxd, writes sample outbox
# events (as table rows and as logical messages) and shows them as a Kafka consumer sees them.
# Everything it starts is stopped and removed when it ends.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=build/demo
work=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-demo.XXXXXX")
pids=()

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

cleanup() {
    set +e
    [[ -n "${outboxd_pid:-}" ]] && kill -TERM "$outboxd_pid" 2>/dev/null && wait "$outboxd_pid" 2>/dev/null
    exec 7>&- 8>&- 2>/dev/null # EOF on their stdin: broker and PostgreSQL stop and clean up
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "installing what is missing and building"
./scripts/deps.sh
if [[ ! -f "$build/build.ninja" ]]; then
    meson setup "$build" -Dbuildtype=release >/dev/null
fi
ninja -C "$build" >/dev/null
support="$build/tests/support"

# first_line FILE: waits for a supervisor's first output line (its address).
first_line() {
    for _ in $(seq 1 600); do
        if [[ -s "$1" ]] && line=$(head -n 1 "$1") && [[ -n "$line" ]]; then
            echo "$line"
            return 0
        fi
        sleep 0.1
    done
    echo "demo.sh: timed out waiting for $1" >&2
    return 1
}

say "starting a throwaway PostgreSQL 15 (wal_level = logical)"
mkfifo "$work/pg.in" "$work/kafka.in"
"$support/obx-pgtmp" <"$work/pg.in" >"$work/pg.out" &
pids+=($!)
exec 7>"$work/pg.in"
conninfo=$(first_line "$work/pg.out")
echo "    $conninfo"

say "starting a local Kafka-protocol broker (librdkafka mock cluster, 3 brokers)"
"$support/kafka-broker" <"$work/kafka.in" >"$work/kafka.out" &
pids+=($!)
exec 8>"$work/kafka.in"
bootstrap=$(first_line "$work/kafka.out")
echo "    bootstrap servers: $bootstrap"

sql() { psql "$conninfo" -X -q -v ON_ERROR_STOP=1 "$@"; }

say "creating the outbox table (sql/outbox.sql) and outbox_emit() (sql/emit.sql)"
sql -f sql/outbox.sql
sql -f sql/emit.sql

say "starting outboxd"
"$build/outboxd" \
    -X "postgres.conninfo=$conninfo" \
    -X "kafka.bootstrap.servers=$bootstrap" \
    -X postgres.messages=true \
    -X outbox.headers.source=true \
    2>"$work/outboxd.log" &
outboxd_pid=$!
for _ in $(seq 1 100); do
    grep -q "streaming" "$work/outboxd.log" 2>/dev/null && break
    kill -0 "$outboxd_pid" 2>/dev/null || { cat "$work/outboxd.log" >&2; exit 1; }
    sleep 0.1
done
sed 's/^/    /' "$work/outboxd.log"

say "writing events: two orders through the outbox table, one customer through outbox_emit()"
sql <<'SQL'
BEGIN;
INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
VALUES ('order', 'order-1001', 'OrderPlaced', '{"orderId": 1001, "total": 42.50, "items": 3}');
INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
VALUES ('order', 'order-1001', 'OrderPaid', '{"orderId": 1001, "method": "card"}');
-- insert then delete in the same transaction: the table stays empty, the event is still sent
DELETE FROM outbox;
COMMIT;

INSERT INTO outbox (aggregatetype, aggregateid, type, payload, headers)
VALUES ('order', 'order-1002', 'OrderPlaced', '{"orderId": 1002, "total": 7.00, "items": 1}',
        '{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}');

BEGIN;
SELECT outbox_emit('customer', 'customer-7', 'CustomerRegistered',
                   '{"customerId": 7, "name": "Ada"}') IS NOT NULL AS emitted;
COMMIT;
SQL

say "reading the topics back as a Kafka consumer sees them (topic, partition, key, headers, value)"
"$support/obx-consume" -b "$bootstrap" -t outbox.event.order -t outbox.event.customer \
    -n 4 -T 30000 | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print("%s [partition %d, offset %d] key=%s" % (r["topic"], r["partition"], r["offset"], r["key"]))
    for name, value in r["headers"]:
        print("    header %s: %s" % (name, value))
    print("    value: %s" % (r["value"],))
'

say "the slot is confirmed behind what Kafka acknowledged"
sleep 1.5
sql -c "SELECT slot_name, plugin, confirmed_flush_lsn, pg_current_wal_lsn() FROM pg_replication_slots"

say "stopping outboxd (SIGTERM: flush Kafka, send the final status update, exit 0)"
kill -TERM "$outboxd_pid"
wait "$outboxd_pid" && echo "    outboxd exited 0"
outboxd_pid=
tail -n 2 "$work/outboxd.log" | sed 's/^/    /'
say "done: PostgreSQL and the broker are stopped and removed"
