#!/usr/bin/env bash
# Runs orch's benchmark beside the peers and the bare database loops, back to back on
# this machine, so the figures in the README compare like with like.
#
# Needs: the peers built from ../shared/peerbench into $PEER_BIN
#   (cd ../shared/peerbench && CARGO_TARGET_DIR=/var/tmp/peerbench-target cargo build --release \
#      -p peerbench-graphile-worker -p peerbench-apalis \
#    && CARGO_TARGET_DIR=/var/tmp/peerbench-target cargo build --release \
#      --manifest-path peers/apalis-mysql/Cargo.toml),
# orch-bench built in release (cargo build --release -p orch-tests --bin orch-bench),
# pymysql for the MariaDB loop, and the servers of the README's test section.
#
# Usage: tests/bench/compare.sh [output dir]   (default /tmp/orch-compare-<time>)
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/tmp/orch-compare-$(date +%H%M%S)}
mkdir -p "$OUT"
cd "$OUT" || exit 1
export PEERBENCH_PG_URL=${PEERBENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
export PEERBENCH_MYSQL_URL=${PEERBENCH_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}
export PEERBENCH_SQLITE_DIR=${PEERBENCH_SQLITE_DIR:-/var/tmp/pb}
export ORCH_PG_URL=${ORCH_PG_URL:-$PEERBENCH_PG_URL} ORCH_MYSQL_URL=${ORCH_MYSQL_URL:-$PEERBENCH_MYSQL_URL}
mkdir -p "$PEERBENCH_SQLITE_DIR"
PB=${PEER_BIN:-/var/tmp/peerbench-target/release}
OB=${ORCH_BENCH:-${CARGO_TARGET_DIR:-$here/target}/release/orch-bench}
L=$here/../shared/peerbench-limits
mark() { echo "$1 $(date -Is)" >> times.txt; }
graphile() {
    psql "$PEERBENCH_PG_URL" -qc 'VACUUM ANALYZE' >/dev/null 2>&1
    "$PB/peerbench-graphile-worker" --backend postgres --variant tuned --jobs 20000 \
        > "graphile-tuned-$1.out" 2> "graphile-tuned-$1.log"
    mark "graphile-$1"
}
mark start
bash "$L/pg_limit.sh" "$PEERBENCH_PG_URL" > limit-pg.txt 2>&1
python3 "$L/mariadb_limit.py" "$PEERBENCH_MYSQL_URL" > limit-mysql.txt 2>&1
python3 "$L/sqlite_limit.py" > limit-sqlite.txt 2>&1
mark limits
# PostgreSQL: graphile_worker tuned and orch alternate, the disk's speed drifts.
graphile 1
"$OB" --backend pg --prefetch 4000 --max-pull 2000 > orch-pg-4000-a.out 2>&1; mark orch-pg-4000-a
graphile 2
"$OB" --backend pg --prefetch 4000 --max-pull 2000 --skip-push --history 0 > orch-pg-4000-b.out 2>&1; mark orch-pg-4000-b
"$OB" --backend pg --prefetch 1000 --max-pull 500 --skip-push --history 0 > orch-pg-1000-b.out 2>&1; mark orch-pg-1000-b
graphile 3
"$OB" --backend pg --prefetch 4000 --max-pull 2000 --skip-push --history 0 > orch-pg-4000-c.out 2>&1; mark orch-pg-4000-c
"$PB/peerbench-apalis" --backend postgres --variant default --jobs 20000 > apalis-pg.out 2> apalis-pg.log; mark apalis-pg
"$OB" --backend pg --prefetch 4000 --max-pull 2000 --history 0 > orch-pg-4000-d.out 2>&1; mark orch-pg-4000-d
"$PB/peerbench-apalis-mysql" --backend mysql --variant default --jobs 20000 > apalis-mysql.out 2> apalis-mysql.log; mark apalis-mysql
"$OB" --backend mysql --prefetch 1000 --max-pull 500 > orch-mysql-1000.out 2>&1; mark orch-mysql
"$PB/peerbench-apalis" --backend sqlite --variant default --jobs 20000 > apalis-sqlite.out 2> apalis-sqlite.log; mark apalis-sqlite
"$OB" --backend sqlite --prefetch 1000 --max-pull 500 > orch-sqlite-1000.out 2>&1; mark orch-sqlite
"$OB" --backend all --skip-push --history 0 > orch-default.out 2>&1; mark orch-default
mark end
grep -h '^RESULT ' ./*.out | sed 's/^RESULT //' > peers.jsonl
echo "results in $OUT"
