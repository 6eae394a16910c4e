#!/usr/bin/env bash
# Export to a trust's ClickHouse (issue 25), on loopback, in one run:
#
#  1. drain: how fast one SafeGate empties its export outbox into ClickHouse. SafeGate
#     runs with [export.clickhouse] pointing at a port nobody listens on while wrk sends
#     FILL_SECONDS of requests (every record waits in the outbox), then it is restarted
#     pointing at the real ClickHouse and the time until the outbox is empty is
#     measured (safegate_export_backlog, safegate_export_sent_total): sustained
#     records/s from one SafeGate, end to end (read from sled, JSONEachRow, HTTP
#     insert, removal), checked against count() in ClickHouse.
#  2. cost: the proxy's requests/s (wrk, 1 KiB GETs, 16 connections) with the export
#     off and on (ClickHouse live), interleaved, REPEAT rounds, the median round kept.
#
# Needs clickhouse-server (Debian: 18.16.1), nginx-light and wrk; builds the release
# binary. Only 127.0.0.1 is used. Settings: FILL_SECONDS (20), DURATION (10),
# REPEAT (3), BATCH (20000, export.clickhouse.batch_records), BASE_PORT (19000),
# NO_BUILD=1 (use target/release/safegate as it is).
set -euo pipefail

FILL_SECONDS=${FILL_SECONDS:-20}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
BATCH=${BATCH:-20000}
BASE_PORT=${BASE_PORT:-19000}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SAFEGATE=$ROOT/target/release/safegate
ORIGIN=127.0.0.1:$BASE_PORT
CH_HTTP=$((BASE_PORT + 1))
CH_TCP=$((BASE_PORT + 2))
DEAD=$((BASE_PORT + 3))          # nothing listens here: the export fails, records wait
PROXY=$((BASE_PORT + 10))
ADMIN=$((BASE_PORT + 11))

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in wrk nginx clickhouse-server curl; do
    command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || die "$tool not installed"
done
[[ -n ${NO_BUILD:-} ]] || (cd "$ROOT" && cargo build --release -p safegate --bin safegate >&2)

WORK=$(mktemp -d)
declare -A PID=()
cleanup() {
    local name
    for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n ${KEEP_WORKDIR:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
    local i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

start_origin() {
    mkdir -p "$WORK/nginx/www" "$WORK/nginx/tmp"
    head -c 1024 /dev/zero | tr '\0' 'a' >"$WORK/nginx/www/1k"
    cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $WORK/nginx/tmp;
    proxy_temp_path $WORK/nginx/tmp;
    fastcgi_temp_path $WORK/nginx/tmp;
    uwsgi_temp_path $WORK/nginx/tmp;
    scgi_temp_path $WORK/nginx/tmp;
    server { listen $ORIGIN; root $WORK/nginx/www; }
}
EOF
    nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
    PID[nginx]=$!
    wait_port "$BASE_PORT" || die "nginx did not start"
    printf 'wrk.path = "http://%s/1k"\nwrk.headers["Host"] = "%s"\n' "$ORIGIN" "$ORIGIN" >"$WORK/absolute.lua"
}

start_clickhouse() {
    local d=$WORK/ch
    mkdir -p "$d"
    cat >"$d/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$d/server.log</log><errorlog>$d/err.log</errorlog></logger>
  <http_port>$CH_HTTP</http_port><tcp_port>$CH_TCP</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$d/data/</path><tmp_path>$d/tmp/</tmp_path>
  <user_files_path>$d/user_files/</user_files_path>
  <format_schema_path>$d/format_schemas/</format_schema_path>
  <mark_cache_size>268435456</mark_cache_size>
  <users_config>$d/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <timezone>UTC</timezone><mlock_executable>false</mlock_executable>
</yandex>
EOF
    cat >"$d/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
EOF
    clickhouse-server --config-file="$d/config.xml" >/dev/null 2>&1 &
    PID[clickhouse]=$!
    wait_port "$CH_HTTP" || die "clickhouse-server did not start"
}

ch() { curl -sS "http://127.0.0.1:$CH_HTTP/" --data-binary "$1"; }

# start_safegate NAME EXPORT_URL|"" : one SafeGate on the shipped configuration.
start_safegate() {
    local name=$1 url=$2 sets=()
    mkdir -p "$WORK/data"
    if [[ -n $url ]]; then
        sets=(--set "export.clickhouse={ url = \"$url\", school = \"bench\", batch_records = $BATCH, interval = \"100ms\" }")
    fi
    "$SAFEGATE" run --config "$ROOT/config/safegate.toml" \
        --set "policy.file=\"$ROOT/config/policy.toml\"" \
        --set "proxy.listen=\"127.0.0.1:$PROXY\"" --set "admin.listen=\"127.0.0.1:$ADMIN\"" \
        --set 'upstream.allow_loopback=true' --set "data_dir=\"$WORK/data\"" \
        --set 'upstream.dns.servers=["127.0.0.1:9"]' --set 'log.level="warn"' \
        "${sets[@]}" >>"$WORK/safegate.log" 2>&1 &
    PID[safegate]=$!
    wait_port "$PROXY" || die "safegate ($name) did not start: $(tail -5 "$WORK/safegate.log")"
}

stop_safegate() {
    kill -TERM "${PID[safegate]}" && wait "${PID[safegate]}" || true
    unset 'PID[safegate]'
}

metric() {
    curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

wrk_rps() {
    wrk -t 1 -c 16 -d "${1}s" --timeout 5s -s "$WORK/absolute.lua" "http://127.0.0.1:$PROXY/1k" 2>&1 |
        awk '/^Requests\/sec:/ {print $2}'
}

start_origin
start_clickhouse
"$SAFEGATE" export init-clickhouse --config "$ROOT/config/safegate.toml" \
    --set "export.clickhouse={ url = \"http://127.0.0.1:$CH_HTTP\", school = \"bench\" }" >&2

# 1. Drain.
log "filling the outbox: ${FILL_SECONDS}s of requests, ClickHouse unreachable"
start_safegate fill "http://127.0.0.1:$DEAD"
wrk_rps "$FILL_SECONDS" >/dev/null
sleep 2   # the writer's last flush interval
waiting=$(metric safegate_export_backlog)
stop_safegate
log "$waiting entries (records and alerts) waiting; restarting with ClickHouse reachable"
start_safegate drain "http://127.0.0.1:$CH_HTTP"
# Timed from the first insert ClickHouse accepted (start-up left out) to the empty
# outbox; that first insert's rows are left out of the count too.
first=""
while :; do
    now=$(date +%s.%N)
    sent=$(metric 'safegate_export_sent_total{kind="visit"}')
    if [[ -z $first && -n $sent && $sent != 0 ]]; then
        first=$sent start=$now
    fi
    [[ $(metric safegate_export_backlog) == 0 ]] && break
    sleep 0.02
done
end=$(date +%s.%N)
sent=$(metric 'safegate_export_sent_total{kind="visit"}')
alerts=$(metric 'safegate_export_sent_total{kind="alert"}')
stored=$(ch "SELECT count() FROM safegate.visits FINAL")
stop_safegate
drain_rate=$(awk -v n="$((sent - first))" -v a="$start" -v b="$end" 'BEGIN {printf "%.0f", n / (b - a)}')

# 2. Proxy cost, interleaved rounds.
off=() on=()
for round in $(seq 1 "$REPEAT"); do
    start_safegate off ""
    wrk_rps 1 >/dev/null
    off+=("$(wrk_rps "$DURATION")")
    stop_safegate
    start_safegate on "http://127.0.0.1:$CH_HTTP"
    wrk_rps 1 >/dev/null
    on+=("$(wrk_rps "$DURATION")")
    stop_safegate
    log "round $round: export off ${off[-1]} req/s, on ${on[-1]} req/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
off_m=$(median "${off[@]}")
on_m=$(median "${on[@]}")

printf '\nExport to ClickHouse %s (loopback, %s cores)\n' "$(ch 'SELECT version()')" "$(nproc)"
printf '  drain: %s records (and %s alerts) in %.2f s = %s records/s (in ClickHouse, FINAL: %s)\n' \
    "$sent" "$alerts" "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" "$drain_rate" "$stored"
printf '  proxy, 1 KiB GETs, 16 connections, median of %s: export off %s req/s, on %s req/s (on/off %s)\n' \
    "$REPEAT" "$off_m" "$on_m" "$(awk -v a="$on_m" -v b="$off_m" 'BEGIN {printf "%.3f", a / b}')"
