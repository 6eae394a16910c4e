#!/usr/bin/env bash
# SafeGate soak benchmark: millions of requests through one SafeGate on the shipped
# configuration (shipped policy and lists, visit log and alerts on), printing its
# resident memory after every million requests, to show that memory levels off.
#
#   benches/soak/run.sh                      # 10 million requests, ~8 minutes on 2 cores
#   TOTAL=3000000 benches/soak/run.sh        # a quicker look
#
# Settings (environment):
#   TOTAL         requests to send (default 10000000)
#   EVERY         print a row every this many requests (default 1000000)
#   CONNS         wrk connections (default 64)
#   BASE_PORT     first loopback port used (default 18100; up to BASE_PORT+3)
#   SAFEGATE_SET  extra `--set key=value` settings, space-separated (e.g. store.visit_log=false)
#   SKIP_BUILD=1  use target/release/safegate as it is
#   KEEP_WORKDIR=1  keep the temp dir (SafeGate's data_dir and log) at the end
#   SAFEGATE_WRAPPER  a command to run SafeGate under, e.g. "heaptrack -o /tmp/sg" to
#                 see what holds memory (RSS figures are then the wrapper's)
#
# The traffic is a mix a school's pupils make, every URL different so that no
# per-URL state is reused: a quarter allowed pages from the nginx origin, a quarter
# blocked gambling, a quarter blocked adult sites (both decided by the shipped lists,
# never connected to), a quarter web searches (SafeSearch enforced, search terms
# recorded; a DNS stub in the script answers every name with 127.0.0.1, so they reach
# the nginx origin). Only 127.0.0.1 is ever contacted: every non-loopback network is
# in upstream.deny_networks and DNS goes to the stub.
set -euo pipefail

TOTAL=${TOTAL:-10000000}
EVERY=${EVERY:-1000000}
CONNS=${CONNS:-64}
BASE_PORT=${BASE_PORT:-18100}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SAFEGATE=$ROOT/target/release/safegate
ORIGIN=127.0.0.1:$BASE_PORT
PROXY=127.0.0.1:$((BASE_PORT + 1))
ADMIN=127.0.0.1:$((BASE_PORT + 2))
DNS_PORT=$((BASE_PORT + 3))

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in nginx wrk curl python3; do
    command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] ||
        die "$tool not found (apt-get install nginx-light wrk curl)"
done
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building target/release/safegate"
    (cd "$ROOT" && cargo build --release -p safegate --quiet)
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 1 --noproxy '*' "http://$1/" && return 0
        sleep 0.1
    done
    die "nothing listens on $1"
}

# The origin: nginx serving 1 KiB for every path.
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
    server {
        listen $ORIGIN backlog=4096;
        root $WORK/nginx/www;
        location / { try_files /1k =404; }
    }
}
EOF
nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)
wait_port "$ORIGIN"

# The DNS stub: every name is 127.0.0.1 (A), and has no IPv6 address (AAAA: none).
cat >"$WORK/dns.py" <<'EOF'
import socket, struct, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    query, client = sock.recvfrom(1500)
    if len(query) < 12:
        continue
    end = query.index(b"\0", 12) + 5
    qtype = struct.unpack(">H", query[end - 4:end - 2])[0]
    answer = b""
    if qtype == 1:
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 300, 4) + socket.inet_aton("127.0.0.1")
    header = query[:2] + b"\x81\x80" + query[4:6] + struct.pack(">HHH", 1 if answer else 0, 0, 0)
    sock.sendto(header + query[12:end] + answer, client)
EOF
python3 "$WORK/dns.py" "$DNS_PORT" &
PIDS+=($!)

# SafeGate on the shipped configuration, its own data directory, loopback only.
mkdir -p "$WORK/data"
extra=()
for set in ${SAFEGATE_SET:-}; do extra+=(--set "$set"); done
# shellcheck disable=SC2086 # the wrapper is a command with its arguments
${SAFEGATE_WRAPPER:-} "$SAFEGATE" run --config "$ROOT/config/safegate.toml" \
    --set "proxy.listen=\"$PROXY\"" --set "admin.listen=\"$ADMIN\"" \
    --set "data_dir=\"$WORK/data\"" \
    --set 'upstream.allow_loopback=true' \
    --set 'upstream.deny_networks=["0.0.0.0/2", "64.0.0.0/3", "96.0.0.0/4", "112.0.0.0/5", "120.0.0.0/6", "124.0.0.0/7", "126.0.0.0/8", "128.0.0.0/1", "::/0"]' \
    --set "upstream.dns.servers=[\"127.0.0.1:$DNS_PORT\"]" --set 'upstream.dns.timeout="1s"' \
    --set 'log.level="warn"' "${extra[@]}" >"$WORK/safegate.log" 2>&1 &
SG_PID=$!
PIDS+=("$SG_PID")
wait_port "$ADMIN"

cat >"$WORK/mix.lua" <<EOF
-- Every request a different URL: allowed, gambling, adult, search, in turn.
local n = 0
request = function()
    n = n + 1
    local kind = n % 4
    if kind == 0 then
        return wrk.format("GET", "http://$ORIGIN/page/" .. n, { Host = "$ORIGIN" })
    elseif kind == 1 then
        return wrk.format("GET", "http://www.bet365.com/odds/" .. n, { Host = "www.bet365.com" })
    elseif kind == 2 then
        return wrk.format("GET", "http://www.pornhub.com/view/" .. n, { Host = "www.pornhub.com" })
    else
        return wrk.format("GET", "http://www.bing.com:$BASE_PORT/search?q=homework+" .. n, { Host = "www.bing.com:$BASE_PORT" })
    end
end
EOF

requests() {
    curl -s --noproxy '*' "http://$ADMIN/metrics" |
        awk '$1 == "safegate_requests_total" {printf "%d", $2}'
}
status_kib() { awk -v key="$1:" '$1 == key {print $2}' "/proc/$SG_PID/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

printf '%12s %10s %10s %12s %9s\n' requests "RSS MiB" "peak MiB" "sled MiB" "req/s"
printf '%12s %10s %10s %12s %9s\n' 0 "$(mib "$(status_kib VmRSS)")" "$(mib "$(status_kib VmHWM)")" \
    "$(du -sm "$WORK/data" | cut -f1)" -
next=$EVERY
last_count=0
last_time=$(date +%s.%N)
while :; do
    wrk -t 1 -c "$CONNS" -d 5s --timeout 5s -s "$WORK/mix.lua" "http://$PROXY/" >/dev/null 2>&1 ||
        die "wrk failed"
    kill -0 "$SG_PID" 2>/dev/null || die "safegate exited: $(tail -n 5 "$WORK/safegate.log")"
    count=$(requests)
    ((count >= next)) || continue
    now=$(date +%s.%N)
    rate=$(awk -v c=$((count - last_count)) -v a="$last_time" -v b="$now" 'BEGIN {printf "%d", c / (b - a)}')
    printf '%12d %10s %10s %12s %9s\n' "$count" "$(mib "$(status_kib VmRSS)")" \
        "$(mib "$(status_kib VmHWM)")" "$(du -sm "$WORK/data" | cut -f1)" "$rate"
    last_count=$count last_time=$now
    while ((next <= count)); do next=$((next + EVERY)); done
    ((count >= TOTAL)) && break
done
errors=$(grep -c ' ERROR ' "$WORK/safegate.log" || true)
metric() {
    curl -s --noproxy '*' "http://$ADMIN/metrics" | awk -v name="$1" '$1 == name {printf "%d", $2}'
}
log "done: $count requests; visit-log records dropped: $(metric safegate_visit_log_records_dropped_total)," \
    "not checked for alerts: $(metric safegate_visit_log_observer_dropped_total);" \
    "$errors error lines in SafeGate's log"
