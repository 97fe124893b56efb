#!/usr/bin/env bash
# capture-fixtures.sh - regenerates tests/fixtures/*.bin: real pgoutput bytes from PostgreSQL.
#
#   tests/support/capture-fixtures.sh [BUILD_DIR] [SCENARIO...]
#
# BUILD_DIR defaults to ./build; environment: OBX_FIXTURES_OUT (output directory, default
# tests/fixtures), OBX_PGTMP (the obx-pgtmp to use), PGBIN (PostgreSQL binaries, default 15's).
#
# Starts a throwaway server (build-dir/tests/support/obx-pgtmp when it works, else a cluster of
# its own made with initdb, run as the postgres user when we are root), and for each scenario:
# runs its setup SQL, creates a fresh pgoutput slot, runs its SQL, notes pg_current_wal_lsn(),
# writes one more (unpublished) row so decoding moves past that LSN, and records the slot with
# obx-pgcapture up to that LSN into tests/fixtures/<scenario>.bin. The unit tests
# (tests/unit/test_pgoutput.c) check the exact values written here: change them together.
# Fixture format and contents: tests/fixtures/README.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
[[ $# -gt 0 ]] && shift
fixtures=${OBX_FIXTURES_OUT:-$root/tests/fixtures} # elsewhere to compare without overwriting
capture=$build/tests/support/obx-pgcapture
pgtmp=${OBX_PGTMP:-$build/tests/support/obx-pgtmp}
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}

# Server settings every scenario needs: logical decoding, prepared transactions for two-phase,
# and a small decoding memory limit so that a few hundred rows are enough to stream.
settings=(wal_level=logical max_prepared_transactions=10 logical_decoding_work_mem=64kB
    max_wal_senders=10 max_replication_slots=10 timezone=UTC)

[[ -x $capture ]] || { echo "capture-fixtures: build $capture first (ninja -C $build)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/obx-capture.XXXXXX")
conninfo=
pgtmp_pid=
own_data=

cleanup() {
    if [[ -n $pgtmp_pid ]]; then
        exec {pgtmp_in}>&- || true # stdin EOF: obx-pgtmp stops the server and cleans up
        wait "$pgtmp_pid" || true
    fi
    if [[ -n $own_data ]]; then
        as_postgres "$pgbin/pg_ctl" -D "$own_data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

as_postgres() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# obx-pgtmp prints the conninfo on its first stdout line and cleans up on stdin EOF.
start_pgtmp() {
    local args=() s
    [[ -x $pgtmp ]] || return 1
    for s in "${settings[@]}"; do args+=(-s "$s"); done
    mkfifo "$tmp/pgtmp.in" "$tmp/pgtmp.out"
    "$pgtmp" "${args[@]}" <"$tmp/pgtmp.in" >"$tmp/pgtmp.out" 2>"$tmp/pgtmp.err" &
    pgtmp_pid=$!
    exec {pgtmp_in}>"$tmp/pgtmp.in"
    exec {pgtmp_out}<"$tmp/pgtmp.out"
    if ! read -r -t 120 conninfo <&"$pgtmp_out" || [[ $conninfo != *port=* ]]; then
        echo "capture-fixtures: obx-pgtmp did not start; starting a cluster by hand" >&2
        cat "$tmp/pgtmp.err" >&2 || true
        exec {pgtmp_in}>&-
        wait "$pgtmp_pid" || true
        pgtmp_pid=
        conninfo=
        return 1
    fi
}

# A cluster of our own: initdb in the temp dir, Unix socket only (in that private directory).
start_own() {
    local data=$tmp/data port s
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    [[ $(id -u) == 0 ]] && chown postgres "$tmp"
    as_postgres "$pgbin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$tmp/initdb.log"
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$tmp'"
        echo "port = $port"
        echo "fsync = off"
        for s in "${settings[@]}"; do echo "${s%%=*} = '${s#*=}'"; done
    } >>"$data/postgresql.conf"
    own_data=$data
    as_postgres "$pgbin/pg_ctl" -D "$data" -l "$tmp/server.log" -w start >/dev/null
    conninfo="host=$tmp port=$port user=postgres dbname=postgres"
}

sql() { "$pgbin/psql" "$conninfo" -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

# scenario NAME PROTO "CAPTURE OPTIONS" SETUP_SQL SQL [two_phase_slot]
scenario() {
    local name=$1 proto=$2 opts=$3 setup=$4 body=$5 twophase=${6:-false}
    local slot=obx_cap_$name end
    [[ ${#only[@]} -eq 0 || " ${only[*]} " == *" $name "* ]] || return 0
    # from stdin, so each statement is its own transaction (-c would wrap them in one)
    sql <<<"$setup" >/dev/null
    sql -c "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput', false, $twophase)" \
        >/dev/null
    sql <<<"$body" >/dev/null
    end=$(sql -c "SELECT pg_current_wal_lsn()")
    sql -c "INSERT INTO obx_marker DEFAULT VALUES"
    # shellcheck disable=SC2086 # opts is a list of flags
    "$capture" -d "$conninfo" -S "$slot" -P "obx_pub_$name" -V "$proto" $opts -e "$end" \
        -o "$fixtures/$name.bin"
    sql -c "SELECT pg_drop_replication_slot('$slot')" >/dev/null
}

only=("$@")
start_pgtmp || start_own
echo "capture-fixtures: $(sql -c 'SHOW server_version') at $conninfo" >&2
sql -c "CREATE TABLE obx_marker (id serial PRIMARY KEY)"

# insert: three single-row transactions: plain values, every column NULL, unicode.
scenario insert 1 "" "
CREATE TABLE obx_insert (id int PRIMARY KEY, txt text, num numeric, flag bool, js jsonb,
                         ts timestamptz);
CREATE PUBLICATION obx_pub_insert FOR TABLE obx_insert;" "
INSERT INTO obx_insert VALUES (1, 'hello', 1.5, true, '{\"a\": 1}', '2024-01-02 03:04:05+00');
INSERT INTO obx_insert VALUES (2, NULL, NULL, NULL, NULL, NULL);
INSERT INTO obx_insert VALUES (3, 'grüße 東京 🚀', -0.25, false, '[\"ü\"]', NULL);"

# multirow: one transaction, five rows into one table and two into another.
scenario multirow 1 "" "
CREATE TABLE obx_multi (id int PRIMARY KEY, label text);
CREATE TABLE obx_multi2 (k text PRIMARY KEY, n bigint);
CREATE PUBLICATION obx_pub_multirow FOR TABLE obx_multi, obx_multi2;" "
BEGIN;
INSERT INTO obx_multi SELECT g, 'row ' || g FROM generate_series(1, 5) g;
INSERT INTO obx_multi2 VALUES ('a', 9007199254740993), ('b', -1);
COMMIT;"

# bytea: hex output of a few byte strings, the empty one and NULL.
scenario bytea 1 "" "
CREATE TABLE obx_bytea (id int PRIMARY KEY, b bytea);
CREATE PUBLICATION obx_pub_bytea FOR TABLE obx_bytea;" "
INSERT INTO obx_bytea VALUES (1, '\\x00ff10'), (2, ''), (3, NULL),
    (4, (SELECT string_agg(set_byte('\\x00'::bytea, 0, g), ''::bytea ORDER BY g)
         FROM generate_series(0, 255) g));"

# large: one 1 MiB text value ('0123456789abcdef' x 65536) and a small row after it.
scenario large 1 "" "
CREATE TABLE obx_large (id int PRIMARY KEY, big text);
CREATE PUBLICATION obx_pub_large FOR TABLE obx_large;" "
INSERT INTO obx_large VALUES (1, repeat('0123456789abcdef', 65536));
INSERT INTO obx_large VALUES (2, 'small');"

# schema: the Relation is resent after ADD COLUMN and again after DROP COLUMN.
scenario schema 1 "" "
CREATE TABLE obx_schema (id int PRIMARY KEY, a text);
CREATE PUBLICATION obx_pub_schema FOR TABLE obx_schema;" "
INSERT INTO obx_schema VALUES (1, 'one');
ALTER TABLE obx_schema ADD COLUMN b int;
INSERT INTO obx_schema VALUES (2, 'two', 2);
ALTER TABLE obx_schema DROP COLUMN a;
INSERT INTO obx_schema VALUES (3, 3);"

# truncate: two tables with RESTART IDENTITY CASCADE (options 3), then one plain (options 0).
scenario truncate 1 "" "
CREATE TABLE obx_trunc1 (id serial PRIMARY KEY);
CREATE TABLE obx_trunc2 (id serial PRIMARY KEY);
CREATE PUBLICATION obx_pub_truncate FOR TABLE obx_trunc1, obx_trunc2;
INSERT INTO obx_trunc1 DEFAULT VALUES;
INSERT INTO obx_trunc2 DEFAULT VALUES;" "
TRUNCATE obx_trunc1, obx_trunc2 RESTART IDENTITY CASCADE;
TRUNCATE obx_trunc1;"

# update: no old tuple, old key (key changed), old row (REPLICA IDENTITY FULL), unchanged TOAST.
scenario update 1 "" "
CREATE TABLE obx_upd (id int PRIMARY KEY, v text);
CREATE TABLE obx_upd_full (id int, v text);
ALTER TABLE obx_upd_full REPLICA IDENTITY FULL;
CREATE TABLE obx_upd_toast (id int PRIMARY KEY, big text, v text);
ALTER TABLE obx_upd_toast ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE PUBLICATION obx_pub_update FOR TABLE obx_upd, obx_upd_full, obx_upd_toast;
INSERT INTO obx_upd VALUES (1, 'a');
INSERT INTO obx_upd_full VALUES (1, 'x');
INSERT INTO obx_upd_toast VALUES (1, repeat('t', 4000), 'before');" "
UPDATE obx_upd SET v = 'b' WHERE id = 1;
UPDATE obx_upd SET id = 2 WHERE id = 1;
UPDATE obx_upd_full SET v = 'y' WHERE id = 1;
UPDATE obx_upd_toast SET v = 'after' WHERE id = 1;"

# delete: old key (default identity: non-key columns NULL) and old row (FULL).
scenario delete 1 "" "
CREATE TABLE obx_del (id int PRIMARY KEY, v text);
CREATE TABLE obx_del_full (id int, v text);
ALTER TABLE obx_del_full REPLICA IDENTITY FULL;
CREATE PUBLICATION obx_pub_delete FOR TABLE obx_del, obx_del_full;
INSERT INTO obx_del VALUES (1, 'gone');
INSERT INTO obx_del_full VALUES (7, 'gone too');" "
DELETE FROM obx_del WHERE id = 1;
DELETE FROM obx_del_full WHERE id = 7;"

# message: a transactional message beside an insert, then two non-transactional ones.
scenario message 1 "--messages" "
CREATE TABLE obx_msg (id int PRIMARY KEY);
CREATE PUBLICATION obx_pub_message FOR TABLE obx_msg;" "
BEGIN;
INSERT INTO obx_msg VALUES (1);
SELECT pg_logical_emit_message(true, 'obx.tx', 'transactional payload');
COMMIT;
SELECT pg_logical_emit_message(false, 'obx.nontx', 'non-transactional payload');
SELECT pg_logical_emit_message(false, 'obx.bin', '\\x00ff00'::bytea);"

# origin: a transaction replayed under a replication origin carries an Origin message.
scenario origin 1 "" "
CREATE TABLE obx_orig (id int PRIMARY KEY, v text);
CREATE PUBLICATION obx_pub_origin FOR TABLE obx_orig;
SELECT pg_replication_origin_create('obx_origin');" "
SELECT pg_replication_origin_session_setup('obx_origin');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/12345678', '2024-01-01 00:00:00+00');
INSERT INTO obx_orig VALUES (1, 'from origin');
COMMIT;
SELECT pg_replication_origin_session_reset();"

# type: a column of a user-defined enum announces its type with a Type message.
scenario type 1 "" "
CREATE TYPE obx_mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE obx_typed (id int PRIMARY KEY, mood obx_mood);
CREATE PUBLICATION obx_pub_type FOR TABLE obx_typed;" "
INSERT INTO obx_typed VALUES (1, 'happy');"

# binary: binary 'true' sends columns in their binary send format.
scenario binary 1 "--binary" "
CREATE TABLE obx_bin (id int PRIMARY KEY, v text, n bigint, nothing text);
CREATE PUBLICATION obx_pub_binary FOR TABLE obx_bin;" "
INSERT INTO obx_bin VALUES (258, 'bin', -2, NULL);"

# stream (protocol 2): a committed large transaction (streamed in blocks, Stream Commit), a
# large one that aborts (Stream Abort, subxid = xid) and one whose large subtransaction rolls
# back to a savepoint (Stream Abort with subxid != xid) before it commits.
scenario stream 2 "--streaming" "
CREATE TABLE obx_stream (id int PRIMARY KEY);
CREATE PUBLICATION obx_pub_stream FOR TABLE obx_stream;" "
BEGIN;
INSERT INTO obx_stream SELECT g FROM generate_series(1, 1000) g;
COMMIT;
BEGIN;
INSERT INTO obx_stream SELECT g FROM generate_series(1001, 2000) g;
ROLLBACK;
BEGIN;
INSERT INTO obx_stream VALUES (3001);
SAVEPOINT s1;
INSERT INTO obx_stream SELECT g FROM generate_series(3002, 4000) g;
ROLLBACK TO SAVEPOINT s1;
INSERT INTO obx_stream VALUES (3002);
COMMIT;"

# twophase (protocol 3): PREPARE TRANSACTION then COMMIT PREPARED, and another rolled back.
scenario twophase 3 "--two-phase" "
CREATE TABLE obx_2pc (id int PRIMARY KEY, v text);
CREATE PUBLICATION obx_pub_twophase FOR TABLE obx_2pc;" "
BEGIN;
INSERT INTO obx_2pc VALUES (1, 'prepared');
PREPARE TRANSACTION 'obx-gid-1';
COMMIT PREPARED 'obx-gid-1';
BEGIN;
INSERT INTO obx_2pc VALUES (2, 'rolled back');
PREPARE TRANSACTION 'obx-gid-2';
ROLLBACK PREPARED 'obx-gid-2';" true

# stream_prepare (protocol 3, streaming + two-phase): a large prepared transaction is streamed
# and ends with Stream Prepare; COMMIT PREPARED follows.
scenario stream_prepare 3 "--streaming --two-phase" "
CREATE TABLE obx_sp (id int PRIMARY KEY);
CREATE PUBLICATION obx_pub_stream_prepare FOR TABLE obx_sp;" "
BEGIN;
INSERT INTO obx_sp SELECT g FROM generate_series(1, 1000) g;
PREPARE TRANSACTION 'obx-gid-sp';
COMMIT PREPARED 'obx-gid-sp';" true

ls -l "$fixtures"/*.bin >&2
