#!/usr/bin/env bash
# SafeGate list-update benchmark (issue 19 point 6): a generated 5-million-domain feed,
# named by a policy category, installed and reloaded into a running SafeGate while
# wrk keeps 16 connections busy through it. Prints, for each update, the time from
# the start of `safegate lists update` (fetch, verify, install, signal) to the
# running SafeGate's "policy reloaded" line, wrk's p99
# before and during the reload, and resident memory (steady before, peak during,
# steady after), then the memory per listed domain.
#
#   benches/lists/run.sh                  # 5 million domains, ~3 minutes on 2 cores
#   DOMAINS=1000000 benches/lists/run.sh  # a quicker look
#   FORMAT=ut1 benches/lists/run.sh       # the feed as a UT1 category folder
#
# Settings (environment):
#   DOMAINS     entries in the generated feed (default 5000000)
#   FORMAT      domains (one file, default) or ut1 (a tar.gz with one UT1 category folder)
#   CONNS       wrk connections (default 16)
#   SECONDS_BEFORE  seconds of the "before" wrk runs (default 10)
#   BASE_PORT   first loopback port used (default 18200; up to BASE_PORT+3)
#   SKIP_BUILD=1    use target/release/safegate as it is
#   SAFEGATE    the binary to run (default target/release/safegate; e.g. a copy of
#               the previous commit's, for a before/after comparison)
#   KEEP_WORKDIR=1  keep the temp dir (feeds, policy, SafeGate's log) at the end
#
# Steps: (1) SafeGate starts on the shipped policy plus a category `feed` (blocked for
# pupils) whose list is feed `bench` (a local file as its URL), installed by `safegate
# lists update` with 10 domains; (2) 16 wrk connections for SECONDS_BEFORE s: the p99
# with the starter lists; (3) the 5M-domain feed (version 1) is published and `safegate
# lists update --feed bench` runs (it verifies, installs and signals SafeGate), with
# wrk running from just before the command until the reload is logged (the first
# install); (4) the same with version 2 of the feed (5 % of the domains changed: a
# daily update), after a SECONDS_BEFORE s wrk run with version 1 in force (the
# "before" of the target).
# Between steps the script waits until resident memory stops falling (jemalloc hands
# freed pages back within seconds), at most 40 s. The peak is VmHWM, reset through
# /proc/PID/clear_refs just before each update.
#
# Only 127.0.0.1 is ever contacted: wrk asks SafeGate for
# http://www.bench-origin.test:PORT/1k, a DNS stub in the script answers every name
# with 127.0.0.1, and every non-loopback network is in upstream.deny_networks. The
# policy watcher is off, so each reload is exactly one `lists update`. Every wait is bounded;
# the script stops everything it started on exit.
set -euo pipefail

DOMAINS=${DOMAINS:-5000000}
FORMAT=${FORMAT:-domains}
CONNS=${CONNS:-16}
SECONDS_BEFORE=${SECONDS_BEFORE:-10}
BASE_PORT=${BASE_PORT:-18200}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SAFEGATE=${SAFEGATE:-$ROOT/target/release/safegate}
ORIGIN=127.0.0.1:$BASE_PORT
PROXY=127.0.0.1:$((BASE_PORT + 1))
ADMIN=127.0.0.1:$((BASE_PORT + 2))
DNS_PORT=$((BASE_PORT + 3))
SITE=www.bench-origin.test:$BASE_PORT

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $FORMAT == domains || $FORMAT == ut1 ]] || die "FORMAT is domains or ut1"
for tool in nginx wrk curl python3; do
    command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] ||
        die "$tool not found (apt-get install nginx-light wrk curl)"
done
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building target/release/safegate"
    (cd "$ROOT" && cargo build --release -p safegate --quiet)
fi

WORK=$(mktemp -d)
# nginx's worker drops to another user when started as root: it must reach the files.
chmod 755 "$WORK"
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

# The feeds, generated before anything runs (not part of any measured time).
log "generating $DOMAINS domains (two versions of the feed)"
python3 "$ROOT/benches/lists/gen_domains.py" "$DOMAINS" 1 >"$WORK/feed-v1.txt"
python3 "$ROOT/benches/lists/gen_domains.py" "$DOMAINS" 2 >"$WORK/feed-v2.txt"
head -n 10 "$WORK/feed-v1.txt" >"$WORK/feed-small.txt"

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

# The policy: the shipped one, in a copy of the repository's layout (config/ and
# blocklists/ side by side), plus category `feed` blocked for pupils, whose list is
# feed `bench`: a local file (the feed's URL) that `safegate lists update` verifies and
# installs into blocklists/bench/ exactly as it would a download.
mkdir -p "$WORK/config"
cp -r "$ROOT/blocklists" "$WORK/blocklists"
FEED_URL=$WORK/feed-published.txt
if [[ $FORMAT == ut1 ]]; then
    FEED_URL=$WORK/feed-published.tar.gz
    feed_source='{ format = "ut1", path = "../blocklists/bench/feed" }'
else
    feed_source='{ format = "domains", path = "../blocklists/bench/list.txt" }'
fi
# Publishes feed file $1 at the feed's URL (as a UT1 archive with FORMAT=ut1).
publish() {
    if [[ $FORMAT == ut1 ]]; then
        rm -rf "$WORK/ut1" && mkdir -p "$WORK/ut1/blacklists/feed"
        cp "$1" "$WORK/ut1/blacklists/feed/domains"
        tar -C "$WORK/ut1" -czf "$FEED_URL.new" blacklists
    else
        cp "$1" "$FEED_URL.new"
    fi
    mv "$FEED_URL.new" "$FEED_URL"
}
{
    # The pupil role's block list gains the feed (staff and filter-admin keep theirs).
    awk '/^\[roles\.pupil\]$/ { pupil = 1 } pupil && /^block = \[$/ { print; print "  \"feed\","; pupil = 0; next } { print }' \
        "$ROOT/config/policy.toml"
    printf '\n[categories.feed]\ndescription = "Generated feed (benchmark)"\nsources = [%s]\n' "$feed_source"
} >"$WORK/config/policy.toml"
grep -A1 '^\[roles\.pupil\]$' "$WORK/config/policy.toml" | grep -q '^block = \[$' &&
    grep -q '^  "feed",$' "$WORK/config/policy.toml" || die "could not add the feed to the pupil role"

mkdir -p "$WORK/data"
SETTINGS=(--config "$ROOT/config/safegate.toml"
    --set "policy.file=\"$WORK/config/policy.toml\"" --set 'policy.watch=false'
    --set "proxy.listen=\"$PROXY\"" --set "admin.listen=\"$ADMIN\""
    --set "data_dir=\"$WORK/data\""
    --set "lists.feeds=[{ name = \"bench\", format = \"$FORMAT\", url = \"$FEED_URL\" }]"
    --set 'upstream.allow_loopback=true'
    --set 'upstream.deny_networks=["0.0.0.0/2", "64.0.0.0/3", "96.0.0.0/4", "112.0.0.0/5", "120.0.0.0/6", "124.0.0.0/7", "126.0.0.0/8", "128.0.0.0/1", "::/0"]'
    --set "upstream.dns.servers=[\"127.0.0.1:$DNS_PORT\"]" --set 'upstream.dns.timeout="1s"'
    --set 'log.level="info"')
publish "$WORK/feed-small.txt"
"$SAFEGATE" lists update "${SETTINGS[@]}" >"$WORK/update-small.txt" 2>&1 ||
    die "the first lists update failed: $(cat "$WORK/update-small.txt")"
"$SAFEGATE" run "${SETTINGS[@]}" >"$WORK/safegate.log" 2>&1 &
SG_PID=$!
PIDS+=("$SG_PID")
wait_port "$ADMIN"
status() { curl -s -o "$WORK/last-body" --max-time 5 -w '%{http_code}' -x "$PROXY" "$1" || true; }
code=$(status "http://$SITE/1k")
[[ $code == 200 ]] || die "the origin answers $code through SafeGate: $(head -c 300 "$WORK/last-body")"
code=$(status "http://$(head -n 1 "$WORK/feed-small.txt"):$BASE_PORT/")
[[ $code == 403 ]] || die "a feed domain is not blocked ($code)"

status_kib() { awk -v key="$1:" '$1 == key {print $2}' "/proc/$SG_PID/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# Waits (at most 40 s) until VmRSS has not fallen by more than 1 MiB in 3 s; prints it (KiB).
steady_rss() {
    local prev now i
    prev=$(status_kib VmRSS)
    for ((i = 0; i < 40; i += 3)); do
        sleep 3
        now=$(status_kib VmRSS)
        ((prev - now < 1024)) && break
        prev=$now
    done
    status_kib VmRSS
}

# wrk's figures from its --latency output: "req/s p50_ms p99_ms errors".
wrk_figures() {
    awk '
        function ms(v) {
            if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
            if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v }
        $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rate = $2 }
        /Non-2xx/ { errors += $NF } /Socket errors/ { errors += $4 + $6 + $8 + $10 }
        END { printf "%.0f %.2f %.2f %d\n", rate, p50, p99, errors }' "$1"
}

cat >"$WORK/get.lua" <<EOF
wrk.method = "GET"
wrk.path = "http://$SITE/1k"
wrk.headers["Host"] = "$SITE"
EOF
run_wrk() { # seconds output
    wrk -t 1 -c "$CONNS" -d "${1}s" --timeout 5s --latency -s "$WORK/get.lua" "http://$PROXY/" >"$2" 2>&1
}

reloads_logged() { grep -c 'policy reloaded' "$WORK/safegate.log" || true; }

# Publishes feed file $1 and runs `safegate lists update` (fetch, verify, install,
# SIGHUP to the running SafeGate), with wrk running from half a second before until
# the reload is logged. Sets RELOAD_S (from the command's start to SafeGate's `policy
# reloaded`), PEAK_KIB, RSS_SAMPLES_MAX_KIB and the wrk output file $2.
reload_under_load() {
    local new=$1 out=$2 before t0 t1 wrk_pid update_pid deadline max=0 rss
    publish "$new"
    before=$(reloads_logged)
    echo 5 >"/proc/$SG_PID/clear_refs" # resets VmHWM to the current VmRSS
    wrk -t 1 -c "$CONNS" -d 300s --timeout 5s --latency -s "$WORK/get.lua" "http://$PROXY/" >"$out" 2>&1 &
    wrk_pid=$!
    sleep 0.5
    t0=$EPOCHREALTIME
    "$SAFEGATE" lists update --feed bench "${SETTINGS[@]}" >"$out.update" 2>&1 &
    update_pid=$!
    deadline=$((SECONDS + 120))
    while (($(reloads_logged) == before)); do
        ((SECONDS < deadline)) || { kill -INT "$wrk_pid"; die "no reload logged within 120 s"; }
        grep -q 'NOT reloaded\|REFUSED' "$WORK/safegate.log" && { kill -INT "$wrk_pid"; die "reload refused: $(tail -n 3 "$WORK/safegate.log")"; }
        if ! kill -0 "$update_pid" 2>/dev/null && ! wait "$update_pid"; then
            kill -INT "$wrk_pid"
            die "lists update failed: $(cat "$out.update")"
        fi
        rss=$(status_kib VmRSS)
        ((rss > max)) && max=$rss
        sleep 0.02
    done
    t1=$EPOCHREALTIME
    kill -INT "$wrk_pid"
    wait "$wrk_pid" || true
    wait "$update_pid" || die "lists update failed: $(cat "$out.update")"
    RELOAD_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
    PEAK_KIB=$(status_kib VmHWM)
    RSS_SAMPLES_MAX_KIB=$max
}

log "SafeGate up with the starter lists and a 10-domain feed; measuring"
run_wrk 2 "$WORK/wrk-warmup.txt"
RSS_STARTER=$(steady_rss)
run_wrk "$SECONDS_BEFORE" "$WORK/wrk-starter.txt"
read -r RATE_S P50_S P99_S ERR_S < <(wrk_figures "$WORK/wrk-starter.txt")
RSS_STARTER_AFTER=$(steady_rss)

log "installing feed version 1 ($DOMAINS domains)"
reload_under_load "$WORK/feed-v1.txt" "$WORK/wrk-install.txt"
INSTALL_S=$RELOAD_S INSTALL_PEAK=$PEAK_KIB
read -r RATE_I P50_I P99_I ERR_I < <(wrk_figures "$WORK/wrk-install.txt")
RSS_V1=$(steady_rss)
run_wrk "$SECONDS_BEFORE" "$WORK/wrk-before.txt"
read -r RATE_B P50_B P99_B ERR_B < <(wrk_figures "$WORK/wrk-before.txt")
RSS_V1_AFTER=$(steady_rss)

log "updating to feed version 2 (5 % of the domains changed)"
reload_under_load "$WORK/feed-v2.txt" "$WORK/wrk-update.txt"
UPDATE_S=$RELOAD_S UPDATE_PEAK=$PEAK_KIB UPDATE_SAMPLED=$RSS_SAMPLES_MAX_KIB
read -r RATE_U P50_U P99_U ERR_U < <(wrk_figures "$WORK/wrk-update.txt")
RSS_V2=$(steady_rss)
code=$(status "http://$(head -n 1 "$WORK/feed-v2.txt"):$BASE_PORT/")
[[ $code == 403 ]] || die "a domain new in feed version 2 is not blocked after the update ($code)"
kill -0 "$SG_PID" 2>/dev/null || die "safegate exited: $(tail -n 5 "$WORK/safegate.log")"
compile_ms=$(grep 'policy reloaded' "$WORK/safegate.log" | sed -n 's/.*compile_ms=\([0-9]*\).*/\1/p' | tr '\n' ' ')

{
    echo
    echo "SafeGate list update, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; feed of $DOMAINS" \
        "generated domains ($FORMAT), wrk -t1 -c$CONNS through SafeGate to a loopback origin"
    printf '%-52s %10s %8s %8s %7s\n' "wrk window" "req/s" "p50 ms" "p99 ms" errors
    printf '%-52s %10s %8s %8s %7s\n' "starter lists, ${SECONDS_BEFORE} s" "$RATE_S" "$P50_S" "$P99_S" "$ERR_S"
    printf '%-52s %10s %8s %8s %7s\n' "during the first install (${INSTALL_S} s)" "$RATE_I" "$P50_I" "$P99_I" "$ERR_I"
    printf '%-52s %10s %8s %8s %7s\n' "feed v1 in force, ${SECONDS_BEFORE} s (before)" "$RATE_B" "$P50_B" "$P99_B" "$ERR_B"
    printf '%-52s %10s %8s %8s %7s\n' "during the update to v2 (${UPDATE_S} s)" "$RATE_U" "$P50_U" "$P99_U" "$ERR_U"
    echo
    echo "lists update to 'policy reloaded': install ${INSTALL_S} s, update ${UPDATE_S} s (target < 15 s);" \
        "compile_ms logged: ${compile_ms}"
    awk -v d="$P99_U" -v b="$P99_B" 'BEGIN { if (b > 0) printf "p99 during the update / before: %.2fx (target <= 3x)\n", d / b }'
    echo "Resident memory (VmRSS, steady = no longer falling):"
    printf '  starter lists: %s MiB (%s MiB after the wrk run)\n' "$(mib "$RSS_STARTER")" "$(mib "$RSS_STARTER_AFTER")"
    printf '  first install: peak %s MiB, then steady %s MiB (%s MiB after the wrk run)\n' \
        "$(mib "$INSTALL_PEAK")" "$(mib "$RSS_V1")" "$(mib "$RSS_V1_AFTER")"
    printf '  update to v2:  peak %s MiB (VmHWM; highest sampled VmRSS %s MiB), then steady %s MiB\n' \
        "$(mib "$UPDATE_PEAK")" "$(mib "$UPDATE_SAMPLED")" "$(mib "$RSS_V2")"
    awk -v p="$UPDATE_PEAK" -v s="$RSS_V1_AFTER" 'BEGIN { printf "  peak during the update / steady before: %.2fx (target < 2x)\n", p / s }'
    awk -v a="$RSS_V2" -v b="$RSS_STARTER_AFTER" -v n="$DOMAINS" \
        'BEGIN { printf "  per listed domain: (%.1f - %.1f MiB) / %d = %.1f bytes (target < 48)\n", a / 1024, b / 1024, n, (a - b) * 1024 / n }'
}
