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
#     off and on (ClickHouse live, export.clickhouse.interval INTERVAL), interleaved,
#     REPEAT rounds, the median round kept; with the CPU time SafeGate and ClickHouse
#     used per 1,000 requests in each (utime + stime from /proc, all threads).
#
# Needs clickhouse-server (Debian: 18.16.1), nginx-light and wrk; builds the release
# binary. Only 127.0.0.1 is used. Settings: FILL_SECONDS (20), DURATION (30: several
# export intervals, so the window sees the export's steady state), REPEAT (3), BATCH
# (20000, export.clickhouse.batch_records), INTERVAL (5s, the shipped
# export.clickhouse.interval, for the cost rounds), BASE_PORT (19000),
# NO_BUILD=1 (use target/release/safegate as it is), SKIP_DRAIN=1 (cost rounds only).
set -euo pipefail

FILL_SECONDS=${FILL_SECONDS:-20}
DURATION=${DURATION:-30}
REPEAT=${REPEAT:-3}
BATCH=${BATCH:-20000}
INTERVAL=${INTERVAL:-5s}
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
chmod 755 "$WORK"   # nginx's workers (user nobody) read the page from here
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

# The shipped policy, except that pupils may reach sites by IP address (the origin is
# 127.0.0.1, which the shipped block_ip_hosts would block: every request would be a
# block page and a record of a block), with the list paths made absolute for the copy
# (as benches/load/run.sh runs it).
bench_policy() {
    sed -e 's/^block_ip_hosts = true$/block_ip_hosts = false/' \
        -e "s|\"\\.\\./blocklists/|\"$ROOT/blocklists/|g" \
        "$ROOT/config/policy.toml" >"$WORK/policy.toml"
    grep -q '^block_ip_hosts = true$' "$WORK/policy.toml" && die "block_ip_hosts still on"
    return 0
}

ch() { curl -sS "http://127.0.0.1:$CH_HTTP/" --data-binary "$1"; }

# start_safegate NAME EXPORT_URL|"" [INTERVAL] : one SafeGate on the shipped
# configuration (the export looks at an empty outbox every INTERVAL, default 100ms).
start_safegate() {
    local name=$1 url=$2 interval=${3:-100ms} sets=()
    mkdir -p "$WORK/data"
    if [[ -n $url ]]; then
        sets=(--set "export.clickhouse={ url = \"$url\", school = \"bench\", batch_records = $BATCH, interval = \"$interval\" }")
    fi
    "$SAFEGATE" run --config "$ROOT/config/safegate.toml" \
        --set "policy.file=\"$WORK/policy.toml\"" \
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

# CPU clock ticks (user + system, every thread) a process has used so far.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# measure: wrk for DURATION seconds; prints "req/s safegate-ms clickhouse-ms", the
# last two the CPU milliseconds each used per 1,000 requests meanwhile.
measure() {
    local sg0 ch0 sg1 ch1 rps hz
    hz=$(getconf CLK_TCK)
    sg0=$(cpu_ticks "${PID[safegate]}") ch0=$(cpu_ticks "${PID[clickhouse]}")
    rps=$(wrk_rps "$DURATION")
    sg1=$(cpu_ticks "${PID[safegate]}") ch1=$(cpu_ticks "${PID[clickhouse]}")
    awk -v r="$rps" -v d="$DURATION" -v s="$((sg1 - sg0))" -v c="$((ch1 - ch0))" -v hz="$hz" \
        'BEGIN {n = r * d / 1000; printf "%s %.1f %.1f\n", r, s * 1000 / hz / n, c * 1000 / hz / n}'
}

start_origin
start_clickhouse
bench_policy
"$SAFEGATE" export init-clickhouse --config "$ROOT/config/safegate.toml" \
    --set "export.clickhouse={ url = \"http://127.0.0.1:$CH_HTTP\", school = \"bench\" }" >&2

# 1. Drain.
if [[ -z ${SKIP_DRAIN:-} ]]; then
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
fi

# 2. Proxy cost, interleaved rounds.
off=() on=()
for round in $(seq 1 "$REPEAT"); do
    start_safegate off ""
    [[ $(curl -s -o /dev/null -w '%{http_code}' -x "127.0.0.1:$PROXY" "http://$ORIGIN/1k") == 200 ]] ||
        die "the proxy does not pass the bench page (200)"
    wrk_rps 1 >/dev/null
    read -r rps sg_ms ch_ms < <(measure)
    off+=("$rps")
    stop_safegate
    log "round $round: export off $rps req/s; CPU ms per 1,000 requests: safegate $sg_ms, clickhouse $ch_ms"
    start_safegate on "http://127.0.0.1:$CH_HTTP" "$INTERVAL"
    wrk_rps 1 >/dev/null
    read -r rps sg_ms ch_ms < <(measure)
    on+=("$rps")
    shipped=$(metric 'safegate_export_sent_total{kind="visit"}')
    stop_safegate
    log "round $round: export on  $rps req/s; CPU ms per 1,000 requests: safegate $sg_ms, clickhouse $ch_ms ($shipped records sent)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
off_m=$(median "${off[@]}")
on_m=$(median "${on[@]}")

printf '\nExport to ClickHouse %s (loopback, %s cores; %s)\n' "$(ch 'SELECT version()')" "$(nproc)" "$(uptime)"
[[ -n ${SKIP_DRAIN:-} ]] || printf '  drain: %s records (and %s alerts) in %.2f s = %s records/s (in ClickHouse, FINAL: %s)\n' \
    "$sent" "$alerts" "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" "$drain_rate" "$stored"
printf '  proxy, 1 KiB GETs, 16 connections, export interval %s, median of %s: export off %s req/s, on %s req/s (on/off %s)\n' \
    "$INTERVAL" "$REPEAT" "$off_m" "$on_m" "$(awk -v a="$on_m" -v b="$off_m" 'BEGIN {printf "%.3f", a / b}')"
