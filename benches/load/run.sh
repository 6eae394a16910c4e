#!/usr/bin/env bash
# SafeGate load harness: SafeGate and peer forward proxies against one nginx origin on
# loopback, all in one run, one table. See benches/README.md for what every row means,
# how each peer is configured, and how to add a peer or a scenario.
#
#   benches/load/run.sh                          # everything, ~12 minutes
#   REPEAT=1 DURATION=3 benches/load/run.sh       # quick look, ~3 minutes
#   PEERS="safegate squid" SCENARIOS="get1k_c16 connect_bulk" benches/load/run.sh
#
# Settings (environment):
#   DURATION      seconds measured per cell (default 5)
#   WARMUP        seconds of load before each measured cell, discarded (default 1)
#   REPEAT        runs of every cell; the table shows the median run (default 3)
#   PEERS         proxies to measure, in column order (default: every peer below)
#   SCENARIOS     scenario ids to run, in row order (default: every scenario below)
#   WRK_THREADS   wrk threads (default 1; client, proxies and origin share the cores)
#   NGINX_WORKERS nginx worker_processes (default 1)
#   BASE_PORT     first loopback port used (default 18000; up to BASE_PORT+59)
#   SKIP_INSTALL=1 / SKIP_BUILD=1   skip apt-get / cargo build
#   KEEP_WORKDIR=1 keep the temp dir with configs and logs
#
# Only 127.0.0.1 is ever loaded; no proxy is given a DNS server it could use.
set -euo pipefail

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
REPEAT=${REPEAT:-3}
CLK_TCK=$(getconf CLK_TCK)
WRK_THREADS=${WRK_THREADS:-1}
NGINX_WORKERS=${NGINX_WORKERS:-1}
BASE_PORT=${BASE_PORT:-18000}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOADGEN=$ROOT/target/release/safegate-loadgen
SAFEGATE=$ROOT/target/release/safegate

ORIGIN_PORT=$BASE_PORT            # nginx: /1k, /1m, /100k.html, /over-limit.html
TUNNEL_PORT=$((BASE_PORT + 1))    # safegate-loadgen serve: CONNECT target
ORIGIN=127.0.0.1:$ORIGIN_PORT
TUNNEL_ORIGIN=127.0.0.1:$TUNNEL_PORT

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------
# Peers. A peer is: a name in ALL_PEERS, a port in PEER_PORT, a label in PEER_LABEL
# and a start_<name> function that writes its config under $WORK/<name>/, starts it in
# the foreground-mode background (`... &`) and calls `track <name> $!`. Nothing else.

ALL_PEERS=(safegate squid tinyproxy e2guardian)
# Extra SafeGate variants, run only when named in PEERS: the same binary with no list
# at all, and with every UT1 category and Sinfonietta hosts file in ../shared blocked
# for the default role (about 640k entries), to show what the lists cost per request;
# without the visit log; with log-ins required (every request authenticated); and the
# same with a directory person (an LDAP user of a slapd the harness starts).
declare -A PEER_PORT=(
    [safegate]=$((BASE_PORT + 10))
    [safegate-nolists]=$((BASE_PORT + 12))
    [safegate-alllists]=$((BASE_PORT + 14))
    [safegate-nolog]=$((BASE_PORT + 16))
    [safegate-auth]=$((BASE_PORT + 18))
    [safegate-ldap]=$((BASE_PORT + 22))
    [safegate-baseline]=$((BASE_PORT + 26))
    [squid]=$((BASE_PORT + 20))
    [tinyproxy]=$((BASE_PORT + 30))
    [e2guardian]=$((BASE_PORT + 40))
)
declare -A PEER_LABEL=(
    [safegate]=safegate
    [safegate-nolists]=sg-nolists
    [safegate-alllists]=sg-alllists
    [safegate-nolog]=sg-nolog
    [safegate-auth]=sg-auth
    [safegate-ldap]=sg-ldap
    [safegate-baseline]=sg-baseline
    [squid]=squid
    [tinyproxy]=tinyproxy
    [e2guardian]=e2guardian
)

# The shipped policy as the harness runs it: the same rules and lists, except that
# pupils may reach sites by IP address (the origin is 127.0.0.1, which the shipped
# block_ip_hosts would block), with the list paths made absolute for the copy.
shipped_policy() {
    local policy=$WORK/policy-shipped.toml
    if [[ ! -f $policy ]]; then
        sed -e 's/^block_ip_hosts = true$/block_ip_hosts = false/' \
            -e "s|\"\\.\\./blocklists/|\"$ROOT/blocklists/|g" \
            "$ROOT/config/policy.toml" >"$policy"
        grep -q '^block_ip_hosts = true$' "$policy" && die "block_ip_hosts still on in $policy"
    fi
    echo "$policy"
}

start_safegate() {
    start_safegate_variant safegate "$(shipped_policy)"
}

start_safegate-nolists() {
    local policy=$WORK/policy-nolists.toml
    printf '%s\n' 'default_role = "pupil"' '[roles.pupil]' 'block = []' 'safesearch = false' \
        'youtube = "off"' '[roles.staff]' '[roles.filter-admin]' >"$policy"
    start_safegate_variant safegate-nolists "$policy"
}

start_safegate-alllists() {
    local policy=$WORK/policy-alllists.toml shared=$ROOT/../shared/blocklists
    [[ -d $shared/ut1 ]] || die "$shared/ut1 not found (../shared beside the checkout)"
    local names=() folder name hosts
    {
        echo 'default_role = "pupil"'
        for folder in "$shared"/ut1/*/; do
            [[ -L ${folder%/} ]] && continue   # aliases (porn -> adult) would double-count
            name=ut1-$(basename "$folder")
            printf '[categories.%s]\nsources = [{ format = "ut1", path = "%s" }]\n' "$name" "${folder%/}"
            names+=("\"$name\"")
        done
        for hosts in "$shared"/sinfonietta/*-hosts; do
            name=sf-$(basename "$hosts")
            printf '[categories.%s]\nsources = [{ format = "hosts", path = "%s" }]\n' "$name" "$hosts"
            names+=("\"$name\"")
        done
        local IFS=,
        printf '[roles.pupil]\nblock = [%s]\nsafesearch = false\nyoutube = "off"\n' "${names[*]}"
        printf '[roles.staff]\n[roles.filter-admin]\n'
    } >"$policy"
    start_safegate_variant safegate-alllists "$policy"
}

# The visit log off (it is on in the shipped configuration): what logging costs.
start_safegate-nolog() {
    start_safegate_variant safegate-nolog "$(shipped_policy)" --set store.visit_log=false
}

# Another build of SafeGate (SAFEGATE_BASELINE=/path/to/safegate, such as the previous
# commit's release binary) on the shipped configuration, so that a change is measured
# before and after in one run, interleaved cell by cell.
start_safegate-baseline() {
    [[ -x ${SAFEGATE_BASELINE:-} ]] ||
        die "safegate-baseline needs SAFEGATE_BASELINE=/path/to/another/safegate binary"
    SAFEGATE_BIN=$SAFEGATE_BASELINE start_safegate_variant safegate-baseline "$(shipped_policy)"
}

# Log-ins required (auth.required=true), and every request (wrk's, and the CONNECTs of
# safegate-loadgen) carrying the credentials of a user created before the start: what
# checking them costs per request. The user is a pupil, the role the other columns are
# decided for, so the decisions are the same and only authentication differs.
start_safegate-auth() {
    local dir=$WORK/safegate-auth password
    password=bench-$RANDOM$RANDOM$RANDOM
    mkdir -p "$dir/data"
    if ! printf '%s\n' "$password" | "$SAFEGATE" users add bench --role pupil --password-stdin \
        --config "$ROOT/config/safegate.toml" --set "data_dir=\"$dir/data\"" \
        >"$dir/users.log" 2>&1; then
        log "safegate-auth: safegate users add failed: $(tail -n 1 "$dir/users.log")"
        return 1
    fi
    PEER_HEADER[safegate-auth]="Proxy-Authorization: Basic $(printf 'bench:%s' "$password" | base64 -w0)"
    start_safegate_variant safegate-auth "$(shipped_policy)" --set auth.required=true
}

# As safegate-auth, but the person is not a SafeGate user: `bench` is in a slapd the
# harness starts (ldaps on loopback with a CA made here, port BASE_PORT+24), a pupil by
# their directory group. The first request binds to the directory; every later one is
# a credential-cache hit, which should cost what a local user's does.
start_safegate-ldap() {
    local dir=$WORK/safegate-ldap port=$((BASE_PORT + 24)) password
    password=bench-$RANDOM$RANDOM$RANDOM
    mkdir -p "$dir/db"
    [[ -x /usr/sbin/slapd ]] || { log "safegate-ldap: slapd is not installed"; return 1; }
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$dir/server.key" \
        -out "$dir/server.csr" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/san.ext" -out "$dir/server.pem" >/dev/null 2>&1
    printf '%s\n' 'include /etc/ldap/schema/core.schema' \
        'include /etc/ldap/schema/cosine.schema' \
        'include /etc/ldap/schema/inetorgperson.schema' \
        "pidfile $dir/slapd.pid" 'modulepath /usr/lib/ldap' 'moduleload back_mdb' \
        "TLSCertificateFile $dir/server.pem" "TLSCertificateKeyFile $dir/server.key" \
        'database mdb' 'maxsize 10485760' 'suffix "dc=bench,dc=test"' \
        'rootdn "cn=admin,dc=bench,dc=test"' 'rootpw bench-admin' "directory $dir/db" \
        'access to attrs=userPassword by self read by anonymous auth by * none' \
        'access to * by * read' >"$dir/slapd.conf"
    printf '%s\n' 'dn: dc=bench,dc=test' 'objectClass: dcObject' 'objectClass: organization' \
        'o: Bench' 'dc: bench' '' 'dn: uid=bench,dc=bench,dc=test' \
        'objectClass: inetOrgPerson' 'uid: bench' 'cn: Bench Person' 'sn: Person' \
        "userPassword: $password" '' 'dn: cn=pupils,dc=bench,dc=test' \
        'objectClass: groupOfNames' 'cn: pupils' 'member: uid=bench,dc=bench,dc=test' \
        >"$dir/fixture.ldif"
    /usr/sbin/slapadd -f "$dir/slapd.conf" -l "$dir/fixture.ldif" >"$dir/slapadd.log" 2>&1 ||
        { log "safegate-ldap: slapadd failed: $(tail -n 1 "$dir/slapadd.log")"; return 1; }
    /usr/sbin/slapd -f "$dir/slapd.conf" -h "ldaps://127.0.0.1:$port/" -d 0 >"$dir/slapd.log" 2>&1 &
    track slapd $!
    local i
    for ((i = 0; i < 100; i++)); do port_open "$port" && break; sleep 0.1; done
    PEER_HEADER[safegate-ldap]="Proxy-Authorization: Basic $(printf 'bench:%s' "$password" | base64 -w0)"
    local ldap="{ servers = [\"ldaps://127.0.0.1:$port\"], ca_file = \"$dir/ca.pem\","
    ldap+=" bind_dn = \"cn=admin,dc=bench,dc=test\", bind_password = \"bench-admin\","
    ldap+=" base_dn = \"dc=bench,dc=test\","
    ldap+=" group_filter = \"(&(objectClass=groupOfNames)(member={dn}))\","
    ldap+=" groups = [{ dn = \"cn=pupils,dc=bench,dc=test\", role = \"pupil\" }] }"
    start_safegate_variant safegate-ldap "$(shipped_policy)" --set auth.required=true \
        --set "auth.ldap=$ldap"
}

# start_safegate_variant NAME POLICY_FILE [EXTRA ARGS...]
start_safegate_variant() {
    local name=$1 policy=$2
    shift 2
    local dir=$WORK/$name port=${PEER_PORT[$name]}
    mkdir -p "$dir/data"
    "${SAFEGATE_BIN:-$SAFEGATE}" run --config "$ROOT/config/safegate.toml" \
        --set "policy.file=\"$policy\"" "$@" \
        --set "proxy.listen=\"127.0.0.1:$port\"" \
        --set "admin.listen=\"127.0.0.1:$((port + 1))\"" \
        --set "proxy.connect_ports=[443, $TUNNEL_PORT]" \
        --set 'upstream.allow_loopback=true' \
        --set "data_dir=\"$dir/data\"" \
        --set 'upstream.dns.servers=["127.0.0.1:9"]' \
        --set 'log.level="warn"' \
        >"$dir/out.log" 2>&1 &
    track "$name" $!
}

start_squid() {
    local dir=$WORK/squid port=${PEER_PORT[squid]}
    mkdir -p "$dir" && chmod 777 "$dir"   # squid drops to the 'proxy' user
    cat >"$dir/squid.conf" <<EOF
# Plain forward proxy: one process (-N), no cache, no access log, loopback only.
http_port 127.0.0.1:$port
workers 1
pid_filename $dir/squid.pid
cache_log $dir/cache.log
access_log none
cache_store_log none
cache deny all
cache_mem 0 MB
coredump_dir $dir
pinger_enable off
dns_nameservers 127.0.0.1
acl CONNECT method CONNECT
acl tunnel_ports port 443 $TUNNEL_PORT
http_access deny CONNECT !tunnel_ports
http_access allow localhost
http_access deny all
shutdown_lifetime 1 second
max_filedescriptors 16384
EOF
    squid -N -f "$dir/squid.conf" >"$dir/out.log" 2>&1 &
    track squid $!
}

start_tinyproxy() {
    local dir=$WORK/tinyproxy port=${PEER_PORT[tinyproxy]}
    mkdir -p "$dir" && chmod 777 "$dir"
    cat >"$dir/tinyproxy.conf" <<EOF
User nobody
Group nogroup
Port $port
Listen 127.0.0.1
Timeout 600
LogFile "$dir/tinyproxy.log"
LogLevel Error
PidFile "$dir/tinyproxy.pid"
MaxClients 1024
Allow 127.0.0.1
ConnectPort 443
ConnectPort $TUNNEL_PORT
EOF
    tinyproxy -d -c "$dir/tinyproxy.conf" >"$dir/out.log" 2>&1 &
    track tinyproxy $!
}

start_e2guardian() {
    # e2guardian 5.3 goes direct when proxyip is unset, so it runs standalone with
    # Debian's stock filter group (phrase filtering of text/*, stock site lists), but
    # scoring pages as SafeGate's shipped policy does: SafeGate's four starter
    # weighted lists as its only weighted phrases, no banned or exception phrases,
    # naughtynesslimit 100 (the pupils' limit). Plus: loopback listeners (its
    # transparent HTTPS port too), no access log, foreground.
    local dir=$WORK/e2guardian port=${PEER_PORT[e2guardian]}
    mkdir -p "$dir" && cp -r /etc/e2guardian/. "$dir/" && chmod -R a+rwX "$dir"
    local key list
    for key in filterip filterports transparenthttpsport pidfilename loglocation nodaemon \
        nologger loglevel filecachedir; do
        sed -i -E "/^\s*$key\s*=/d" "$dir/e2guardian.conf"
    done
    sed -i "s|/etc/e2guardian/|$dir/|g" "$dir/e2guardian.conf" "$dir/e2guardianf1.conf"
    : >"$dir/empty"
    for list in pornography gambling self-harm extremism; do
        cp "$ROOT/blocklists/content/$list.txt" "$dir/starter-$list.txt"
        printf '.Include<%s/starter-%s.txt>\n' "$dir" "$list"
    done >"$dir/weighted"
    chmod a+r "$dir"/starter-*.txt "$dir/weighted" "$dir/empty"
    sed -i -E -e "s#^\s*bannedphraselist\s*=.*#bannedphraselist = '$dir/empty'#" \
        -e "s#^\s*exceptionphraselist\s*=.*#exceptionphraselist = '$dir/empty'#" \
        -e "s#^\s*weightedphraselist\s*=.*#weightedphraselist = '$dir/weighted'#" \
        -e "s#^\s*naughtynesslimit\s*=.*#naughtynesslimit = 100#" "$dir/e2guardianf1.conf"
    cat >>"$dir/e2guardian.conf" <<EOF
filterip = 127.0.0.1
filterports = $port
transparenthttpsport = $((port + 1))
pidfilename = '$dir/e2guardian.pid'
loglocation = '$dir/access.log'
filecachedir = '$dir'
nodaemon = on
nologger = off
loglevel = 0
EOF
    e2guardian -N -c "$dir/e2guardian.conf" >"$dir/out.log" 2>&1 &
    track e2guardian $!
}

# ---------------------------------------------------------------------------------
# Scenarios. A scenario is an id in ALL_SCENARIOS, a title in SCENARIO_TITLE, and a
# line in SCENARIO_RUN: a runner (run_wrk / run_bulk / run_tunnels) and its
# arguments. A runner is called as `runner PROXY_ADDR_OR_EMPTY ARGS...` and prints one
# line: `primary=<n> unit=<u> p50=<ms|-> p99=<ms|-> errors=<n> note=<text>`.
# A peer that needs one more request header (credentials) sets PEER_HEADER[<name>] in
# its start function; runners send $EXTRA_HEADER, which holds that peer's header (or
# nothing) while its column runs.

ALL_SCENARIOS=(get1k_c1 get1k_c16 get1k_c128 get1m_c4 get100k_html_c16 connect_bulk connect_new)
declare -A SCENARIO_TITLE=(
    [get1k_c1]="GET 1 KiB keep-alive, 1 conn"
    [get1k_c16]="GET 1 KiB keep-alive, 16 conns"
    [get1k_c128]="GET 1 KiB keep-alive, 128 conns"
    [get1m_c4]="GET 1 MiB, 4 conns"
    [get100k_html_c16]="GET 100 KiB HTML, scanned, 16 conns"
    [connect_bulk]="CONNECT bulk download, 4 tunnels"
    [connect_new]="CONNECT new tunnels, 16 workers"
)
declare -A SCENARIO_RUN=(
    [get1k_c1]="run_wrk /1k 1"
    [get1k_c16]="run_wrk /1k 16"
    [get1k_c128]="run_wrk /1k 128"
    [get1m_c4]="run_wrk /1m 4"
    [get100k_html_c16]="run_wrk /100k.html 16"
    [connect_bulk]="run_bulk 4"
    [connect_new]="run_tunnels 16"
)

# wrk output time ("512.00us", "1.20ms", "2.00s", "1.00m") -> milliseconds.
to_ms() {
    awk -v t="$1" 'BEGIN {
        if (t ~ /us$/) { sub(/us$/, "", t); printf "%.3f", t / 1000 }
        else if (t ~ /ms$/) { sub(/ms$/, "", t); printf "%.3f", t }
        else if (t ~ /m$/) { sub(/m$/, "", t); printf "%.3f", t * 60000 }
        else if (t ~ /s$/) { sub(/s$/, "", t); printf "%.3f", t * 1000 }
        else print "-" }'
}

# wrk "Transfer/sec" ("13.99MB", binary units) -> MiB/s.
to_mib() {
    awk -v t="$1" 'BEGIN {
        f = 1 / 1048576
        if (t ~ /GB$/) f = 1024; else if (t ~ /MB$/) f = 1; else if (t ~ /KB$/) f = 1 / 1024
        sub(/[KMG]?B$/, "", t); printf "%.1f", t * f }'
}

run_wrk() {
    local proxy=$1 path=$2 conns=$3 url script threads=$WRK_THREADS out
    ((threads > conns)) && threads=$conns
    if [[ -z $proxy ]]; then
        url=http://$ORIGIN$path
        script=$WORK/wrk-origin-form.lua
    else
        url=http://$proxy$path
        script=$WORK/wrk-absolute${path//\//-}.lua
    fi
    local args=(-t "$threads" -c "$conns" --timeout 5s -s "$script")
    [[ -n ${EXTRA_HEADER:-} ]] && args+=(-H "$EXTRA_HEADER")
    if [[ $WARMUP != 0 ]]; then
        wrk "${args[@]}" -d "${WARMUP}s" "$url" >/dev/null 2>&1 || true
    fi
    out=$(wrk "${args[@]}" -d "${DURATION}s" --latency "$url" 2>&1) || {
        printf 'primary=- unit=- p50=- p99=- errors=- note=wrk-failed\n'
        return 0
    }
    printf '%s\n' "$out" >>"$WORK/wrk.log"
    local rps p50 p99 tput non2xx sockerr
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    tput=$(awk '/^Transfer\/sec:/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
    sockerr=$(awk -F'[ ,]+' '/Socket errors:/ {print $5 + $7 + $9 + $11}' <<<"$out")
    # errors: non-2xx responses / socket errors (connect+read+write+timeout).
    local errors="${non2xx:-0}/${sockerr:-0}"
    if [[ $path == /1m ]]; then
        printf 'primary=%s unit=MiB/s p50=%s p99=%s errors=%s note=-\n' \
            "$(to_mib "$tput")" "$p50" "$p99" "$errors"
    else
        printf 'primary=%s unit=req/s p50=%s p99=%s errors=%s note=-\n' \
            "$rps" "$p50" "$p99" "$errors"
    fi
}

loadgen_common() {
    local proxy=$1
    printf '%s\n' --target "$TUNNEL_ORIGIN" --duration "$DURATION" --warmup "$WARMUP"
    [[ -n $proxy ]] && printf '%s\n' --proxy "$proxy"
    [[ -n $proxy && -n ${EXTRA_HEADER:-} ]] && printf '%s\n' --proxy-header "$EXTRA_HEADER"
    return 0
}

# `result key=value ...` line -> value of key.
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }

run_bulk() {
    local proxy=$1 conns=$2 out
    local -a common
    mapfile -t common < <(loadgen_common "$proxy")
    out=$("$LOADGEN" bulk "${common[@]}" --connections "$conns" 2>>"$WORK/loadgen.err") || {
        printf 'primary=- unit=- p50=- p99=- errors=- note=loadgen-failed\n'
        return 0
    }
    out=$(grep '^result ' <<<"$out")
    printf 'primary=%s unit=MiB/s p50=- p99=- errors=%s note=-\n' \
        "$(field "$out" mib_per_s)" "$(field "$out" errors)"
}

run_tunnels() {
    local proxy=$1 conc=$2 out
    local -a common
    mapfile -t common < <(loadgen_common "$proxy")
    out=$("$LOADGEN" tunnels "${common[@]}" --concurrency "$conc" 2>>"$WORK/loadgen.err") || {
        printf 'primary=- unit=- p50=- p99=- errors=- note=loadgen-failed\n'
        return 0
    }
    out=$(grep '^result ' <<<"$out")
    printf 'primary=%s unit=tunnels/s p50=%s p99=%s errors=%s note=-\n' \
        "$(field "$out" tunnels_per_s)" "$(field "$out" p50_ms)" \
        "$(field "$out" p99_ms)" "$(field "$out" errors)"
}

# ---------------------------------------------------------------------------------
# Processes

declare -A PID=()
declare -A PEER_HEADER=()
declare -A SCAN_NOTE=()
track() { PID[$1]=$2; }

cleanup() {
    local name pid
    for name in "${!PID[@]}"; do
        pid=${PID[$name]}
        kill -TERM "$pid" 2>/dev/null || true
    done
    local i alive
    for ((i = 0; i < 30; i++)); do
        alive=0
        for name in "${!PID[@]}"; do kill -0 "${PID[$name]}" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for name in "${!PID[@]}"; do
        pid=${PID[$name]}
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not stop on SIGTERM within 3 s; killing it"
            pkill -KILL -P "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    if [[ -n ${WORK:-} && -d $WORK ]]; then
        if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local name=$1 port=$2 i
    for ((i = 0; i < 100; i++)); do
        port_open "$port" && return 0
        if ! kill -0 "${PID[$name]}" 2>/dev/null; then
            log "$name exited during start-up; its output:"
            tail -n 20 "$WORK/$name/out.log" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
    log "$name did not listen on port $port within 10 s"
    return 1
}

# Resident set of a process and its children, in KiB.
# Resident memory of a process and its children in KiB: VmRSS, or another field of
# /proc/PID/status given as $2 (RssAnon: the process's own memory, without the pages
# of its program file, which are shared with the page cache).
rss_kib() {
    local pid=$1 field=${2:-VmRSS} total=0 child kib
    kib=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kib:-0}))
    for child in $(pgrep -P "$pid" 2>/dev/null); do
        total=$((total + $(rss_kib "$child" "$field")))
    done
    echo "$total"
}

# utime + stime of a process and its children, in clock ticks.
cpu_ticks() {
    local pid=$1 total child
    # Fields after the ")" that closes the command name: utime and stime are 12 and 13.
    total=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')
    total=${total:-0}
    for child in $(pgrep -P "$pid" 2>/dev/null); do
        total=$((total + $(cpu_ticks "$child")))
    done
    echo "$total"
}

# A plain GET and a CONNECT through the proxy; a peer failing either is left out.
smoke_test() {
    local name=$1 port=${PEER_PORT[$1]} code
    local -a extra=()
    [[ -n ${PEER_HEADER[$name]:-} ]] && extra=(-H "${PEER_HEADER[$name]}")
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --noproxy '' "${extra[@]}" \
        -x "http://127.0.0.1:$port" "http://$ORIGIN/1k" || true)
    if [[ $code != 200 ]]; then
        log "$name: GET through it answered '$code'; leaving it out"
        return 1
    fi
    # Content scanning: the 100 KiB page passes whole, the page over the limit does
    # not (a note, not a failure: the other rows still hold).
    local page over
    page=$(curl -s --max-time 5 --noproxy '' "${extra[@]}" -x "http://127.0.0.1:$port" \
        "http://$ORIGIN/100k.html" | cmp -s - "$WORK/nginx/www/100k.html" && echo same || echo differs)
    over=$(curl -s --max-time 5 --noproxy '' "${extra[@]}" -x "http://127.0.0.1:$port" \
        "http://$ORIGIN/over-limit.html" | grep -c 'live sex cams' || true)
    if [[ $page != same || $over != 0 ]]; then
        SCAN_NOTE[$name]="scan check: 100 KiB page $page, over-limit page $([[ $over == 0 ]] && echo blocked || echo passed)"
        log "$name: ${SCAN_NOTE[$name]}"
    fi
    extra=()
    [[ -n ${PEER_HEADER[$name]:-} ]] && extra=(--proxy-header "${PEER_HEADER[$name]}")
    if ! "$LOADGEN" tunnels --target "$TUNNEL_ORIGIN" --proxy "127.0.0.1:$port" "${extra[@]}" \
        --duration 0.2 --warmup 0 --concurrency 1 >/dev/null 2>"$WORK/$name-smoke.err"; then
        log "$name: CONNECT through it failed: $(tail -n 1 "$WORK/$name-smoke.err")"
        return 1
    fi
}

# ---------------------------------------------------------------------------------
# Setup

install_packages() {
    local missing=() cmd pkg
    for pair in nginx:nginx-light wrk:wrk squid:squid tinyproxy:tinyproxy \
        e2guardian:e2guardian curl:curl; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing from Debian: ${missing[*]}"
    local sudo=()
    ((EUID != 0)) && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    # policy-rc.d-free: on machines with an init system, the packages' own services
    # start on their default ports; the harness uses none of them.
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
}

# A 100 KiB school-news page (text/html): head with a style and a script, articles of
# ordinary school words with links, entities and inline tags; no weighted phrase of
# the starter lists on it, so every proxy scans it whole and passes it. The same bytes
# on every run (awk's srand with a fixed seed).
write_html_page() {
    awk 'BEGIN {
        srand(22)
        n = split("school pupils parents teachers class year term week homework " \
            "library reading writing maths science history geography music art " \
            "sports day trip museum garden lunch assembly choir football netball " \
            "swimming uniform council fair books club visit project lesson spelling " \
            "fractions poems painting planting harvest concert holiday report " \
            "friday monday morning afternoon please bring water coat hat names " \
            "welcome news notice office community charity raised thank everyone", w, " ")
        printf "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        printf "<title>School news</title><style>body{font-family:sans-serif} "
        printf ".nav a{color:#036}</style><script>window.dataLayer=window.dataLayer||[];"
        printf "function gtag(){dataLayer.push(arguments)}</script></head><body>"
        printf "<nav class=\"nav\"><a href=\"/\">Home</a> <a href=\"/news\">News</a></nav><main>\n"
        size = 400
        for (i = 0; size < 102400 - 200; i++) {
            line = "<article class=\"post\"><h2>"
            for (k = 0; k < 6; k++) line = line w[int(rand() * n) + 1] " "
            line = line "</h2><p>"
            for (k = 0; k < 90; k++) {
                line = line w[int(rand() * n) + 1]
                if (k % 17 == 9) line = line " &amp; "
                else if (k % 17 == 16) line = line ". "
                else if (k % 23 == 5) line = line " <a href=\"/page?id=" i "\">more</a> "
                else if (k % 29 == 7) line = line " <b>" w[int(rand() * n) + 1] "</b> "
                else line = line " "
            }
            line = line "</p></article>"
            print line
            size += length(line) + 1
        }
        print "</main><footer>School office</footer></body></html>"
    }'
}

start_origin() {
    mkdir -p "$WORK/nginx/www" "$WORK/nginx/tmp"
    head -c 1024 /dev/zero | tr '\0' 'a' >"$WORK/nginx/www/1k"
    head -c 1048576 /dev/zero | tr '\0' 'b' >"$WORK/nginx/www/1m"
    write_html_page >"$WORK/nginx/www/100k.html"
    # The check that a proxy scans: a short page well over the limit of 100.
    printf '<html><body><p>%s</p></body></html>\n' \
        "Free porn videos, porn tube, hot milf and live sex cams. Online casino, casino bonus." \
        >"$WORK/nginx/www/over-limit.html"
    cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
worker_processes $NGINX_WORKERS;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    types { text/html html; }
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    client_body_temp_path $WORK/nginx/tmp;
    proxy_temp_path $WORK/nginx/tmp;
    fastcgi_temp_path $WORK/nginx/tmp;
    uwsgi_temp_path $WORK/nginx/tmp;
    scgi_temp_path $WORK/nginx/tmp;
    server {
        listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
        root $WORK/nginx/www;
        location / { etag off; }
    }
}
EOF
    nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
        >"$WORK/nginx/out.log" 2>&1 &
    track nginx $!
    wait_port nginx "$ORIGIN_PORT" || die "nginx did not start"

    mkdir -p "$WORK/loadgen-origin"
    "$LOADGEN" serve --listen "$TUNNEL_ORIGIN" >"$WORK/loadgen-origin/out.log" 2>&1 &
    track loadgen-origin $!
    wait_port loadgen-origin "$TUNNEL_PORT" || die "safegate-loadgen serve did not start"

    for path in /1k /1m /100k.html; do
        cat >"$WORK/wrk-absolute${path//\//-}.lua" <<EOF
-- Absolute-form request line, as browsers send to an explicit proxy.
wrk.path = "http://$ORIGIN$path"
wrk.headers["Host"] = "$ORIGIN"
EOF
    done
    echo '-- origin-form, straight at nginx' >"$WORK/wrk-origin-form.lua"
}

# ---------------------------------------------------------------------------------
# Main

read -r -a PEERS <<<"${PEERS:-${ALL_PEERS[*]}}"
read -r -a SCENARIOS <<<"${SCENARIOS:-${ALL_SCENARIOS[*]}}"
for p in "${PEERS[@]}"; do [[ -n ${PEER_PORT[$p]:-} ]] || die "unknown peer '$p'"; done
for s in "${SCENARIOS[@]}"; do [[ -n ${SCENARIO_RUN[$s]:-} ]] || die "unknown scenario '$s'"; done

[[ ${SKIP_INSTALL:-0} == 1 ]] || install_packages
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building safegate and safegate-loadgen (release)"
    # Two invocations: SafeGate is built exactly as `cargo build --release` builds it.
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p safegate
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" \
        -p safegate-benches --bin safegate-loadgen
fi
[[ -x $SAFEGATE && -x $LOADGEN ]] || die "missing $SAFEGATE or $LOADGEN"

# All in lower case: e2guardian lower-cases the paths in its phrase lists' .Include<>
# lines, so a mixed-case temp dir name would hide its lists from it.
WORK=/tmp/safegate-load.$$.$(date +%s%N)
mkdir -m 700 "$WORK"
chmod 755 "$WORK"   # nginx workers and dropped-privilege proxies read from here
trap cleanup EXIT
trap 'exit 130' INT TERM

start_origin

ACTIVE=()
for p in "${PEERS[@]}"; do
    log "starting $p on 127.0.0.1:${PEER_PORT[$p]}"
    if "start_$p" && wait_port "$p" "${PEER_PORT[$p]}" && smoke_test "$p"; then
        ACTIVE+=("$p")
    else
        log "$p is left out of this run"
    fi
done
sleep 2
declare -A RSS_IDLE=() RSS_AFTER=() ANON_IDLE=() ANON_AFTER=()
for p in "${ACTIVE[@]}"; do
    RSS_IDLE[$p]=$(rss_kib "${PID[$p]}")
    ANON_IDLE[$p]=$(rss_kib "${PID[$p]}" RssAnon)
done

COLUMNS_=(direct "${ACTIVE[@]}")
declare -A RESULT=() RUNS=()
cells=$(( ${#SCENARIOS[@]} * ${#COLUMNS_[@]} * REPEAT ))
log "running ${#SCENARIOS[@]} scenarios x ${#COLUMNS_[@]} targets x $REPEAT = $cells cells," \
    "about $(( cells * (DURATION + WARMUP + 1) / 60 + 1 )) min"
for s in "${SCENARIOS[@]}"; do
    read -r -a run <<<"${SCENARIO_RUN[$s]}"
    # Rounds outermost, so slow drifts of the machine hit every column alike.
    for ((round = 1; round <= REPEAT; round++)); do
        for col in "${COLUMNS_[@]}"; do
            proxy="" EXTRA_HEADER=${PEER_HEADER[$col]:-}
            [[ $col != direct ]] && proxy=127.0.0.1:${PEER_PORT[$col]}
            # CPU time of the proxy's process tree over the whole cell (warm-up
            # included, the load is steady): cores busy, for the cost-per-unit rows.
            t0=$EPOCHREALTIME c0=0
            [[ $col != direct ]] && c0=$(cpu_ticks "${PID[$col]}")
            line=$("${run[0]}" "$proxy" "${run[@]:1}")
            t1=$EPOCHREALTIME cores=-
            if [[ $col != direct ]]; then
                cores=$(awk -v c="$(( $(cpu_ticks "${PID[$col]}") - c0 ))" -v hz="$CLK_TCK" \
                    -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.2f", c / hz / (t1 - t0) }')
            fi
            RUNS[$s,$col,$round]="$line cores=$cores"
            log "$s / $col (round $round): ${RUNS[$s,$col,$round]}"
            sleep 0.5
        done
    done
    # Keep the round with the median primary figure of each column.
    for col in "${COLUMNS_[@]}"; do
        median=$(for ((round = 1; round <= REPEAT; round++)); do
            v=$(tr ' ' '\n' <<<"${RUNS[$s,$col,$round]}" | awk -F= '$1 == "primary" {print $2}')
            [[ $v == - || -z $v ]] && v=-1
            printf '%s %s\n' "$v" "$round"
        done | sort -g | awk -v m=$(((REPEAT + 1) / 2)) 'NR == m {print $2}')
        RESULT[$s,$col]=${RUNS[$s,$col,$median]}
    done
done
sleep 3
for p in "${ACTIVE[@]}"; do
    RSS_AFTER[$p]=$(rss_kib "${PID[$p]}")
    ANON_AFTER[$p]=$(rss_kib "${PID[$p]}" RssAnon)
done

# ---------------------------------------------------------------------------------
# Report

get() {
    tr ' ' '\n' <<<"${RESULT[$1,$2]:-}" |
        awk -v k="$3" 'index($0, k "=") == 1 {print substr($0, length(k) + 2)}'
}

# "value (ratio)" with ratio = value / direct.
cell() {
    local v=$1 d=$2
    if [[ $v == - || -z $v ]]; then echo "n/a"; return; fi
    awk -v v="$v" -v d="$d" 'BEGIN {
        fmt = (v >= 100) ? "%.0f" : "%.2f"
        s = sprintf(fmt, v)
        if (d != "-" && d != "" && d + 0 > 0) s = s sprintf(" (%.2fx)", v / d)
        print s }'
}

print_row() {
    local label=$1 s=$2 key=$3 col d
    d=$(get "$s" direct "$key")
    printf '%-48s' "$label"
    for col in "${COLUMNS_[@]}"; do
        if [[ $col == direct ]]; then printf ' | %-16s' "$(cell "$(get "$s" "$col" "$key")" -)"
        else printf ' | %-16s' "$(cell "$(get "$s" "$col" "$key")" "$d")"; fi
    done
    printf '\n'
}

# Proxy CPU: cores busy during the cell, and CPU time per unit of work.
print_cpu_rows() {
    local s=$1 unit=$2 col
    printf '%-48s | %-16s' "  proxy CPU, cores busy" "-"
    for col in "${COLUMNS_[@]:1}"; do printf ' | %-16s' "$(get "$s" "$col" cores)"; done
    local per=${unit%/s}
    [[ $per == tunnels ]] && per=tunnel
    printf '\n%-48s | %-16s' "  proxy CPU, us per $per" "-"
    for col in "${COLUMNS_[@]:1}"; do
        printf ' | %-16s' "$(awk -v c="$(get "$s" "$col" cores)" -v v="$(get "$s" "$col" primary)" \
            'BEGIN { if (c == "-" || v == "-" || v + 0 <= 0) print "n/a"; else printf "%.1f", c * 1e6 / v }')"
    done
    printf '\n'
}

{
    echo
    echo "SafeGate load harness, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores shared by" \
        "client, proxy and origin; ${DURATION}s per cell after ${WARMUP}s warm-up;" \
        "wrk -t$WRK_THREADS, nginx worker_processes $NGINX_WORKERS; median of $REPEAT run(s)"
    echo "Cells: value (ratio to direct in this run). Throughput: higher is better;" \
        "latency (ms): lower is better."
    echo
    printf '%-48s' "scenario"
    for col in "${COLUMNS_[@]}"; do printf ' | %-16s' "${PEER_LABEL[$col]:-$col}"; done
    printf '\n'
    printf '%s\n' "$(printf '%.0s-' $(seq 1 $((48 + 19 * ${#COLUMNS_[@]}))))"
    for s in "${SCENARIOS[@]}"; do
        unit=$(get "$s" direct unit)
        [[ $unit == - || -z $unit ]] && unit=$(get "$s" "${ACTIVE[0]:-direct}" unit)
        print_row "${SCENARIO_TITLE[$s]}: $unit" "$s" primary
        print_cpu_rows "$s" "$unit"
        if [[ $(get "$s" direct p50) != - ]]; then
            print_row "  p50 latency ms" "$s" p50
            print_row "  p99 latency ms" "$s" p99
        fi
        any_errors=0
        for col in "${COLUMNS_[@]}"; do
            e=$(get "$s" "$col" errors)
            [[ -n $e && $e != 0 && $e != 0/0 ]] && any_errors=1
        done
        if ((any_errors)); then
            printf '%-48s' "  errors (wrk: non-2xx/socket; CONNECT: failed)"
            for col in "${COLUMNS_[@]}"; do printf ' | %-16s' "$(get "$s" "$col" errors)"; done
            printf '\n'
        fi
    done
    echo
    if [[ -n ${RESULT[get1k_c16,safegate]:-} && -n ${RESULT[get1k_c16,squid]:-} ]]; then
        awk -v a="$(get get1k_c16 safegate primary)" -v b="$(get get1k_c16 squid primary)" \
            'BEGIN { if (b > 0) printf "GET 1 KiB, 16 conns: safegate / squid = %.2fx (target >= 2x)\n", a / b }'
    fi
    if [[ -n ${RESULT[get1k_c16,safegate]:-} ]]; then
        awk -v a="$(get get1k_c16 safegate primary)" -v d="$(get get1k_c16 direct primary)" \
            'BEGIN { if (d > 0) printf "GET 1 KiB, 16 conns: safegate / direct = %.0f%% (target >= 35%%)\n", 100 * a / d }'
    fi
    if [[ -n ${RESULT[get1k_c16,safegate]:-} && -n ${RESULT[get1k_c16,safegate-auth]:-} ]]; then
        awk -v a="$(get get1k_c16 safegate-auth primary)" -v b="$(get get1k_c16 safegate primary)" \
            'BEGIN { if (b > 0) printf "GET 1 KiB, 16 conns: sg-auth / safegate = %.1f%% (target >= 95%%)\n", 100 * a / b }'
    fi
    if [[ -n ${RESULT[get1k_c16,safegate-auth]:-} && -n ${RESULT[get1k_c16,safegate-ldap]:-} ]]; then
        awk -v a="$(get get1k_c16 safegate-ldap primary)" -v b="$(get get1k_c16 safegate-auth primary)" \
            'BEGIN { if (b > 0) printf "GET 1 KiB, 16 conns: sg-ldap / sg-auth = %.1f%% (directory person vs local user; target >= 95%%)\n", 100 * a / b }'
    fi
    for scenario in get1k_c16 connect_new; do
        if [[ -n ${RESULT[$scenario,safegate]:-} && -n ${RESULT[$scenario,safegate-baseline]:-} ]]; then
            awk -v a="$(get "$scenario" safegate primary)" -v b="$(get "$scenario" safegate-baseline primary)" \
                -v s="$scenario" 'BEGIN { if (b > 0) printf "%s: safegate / sg-baseline = %.1f%%\n", s, 100 * a / b }'
        fi
    done
    if [[ -n ${RESULT[get100k_html_c16,safegate]:-} && -n ${RESULT[get100k_html_c16,e2guardian]:-} ]]; then
        awk -v a="$(get get100k_html_c16 safegate primary)" -v b="$(get get100k_html_c16 e2guardian primary)" \
            'BEGIN { if (b > 0) printf "GET 100 KiB HTML, scanned, 16 conns: safegate / e2guardian = %.1fx (target >= 10x)\n", a / b }'
    fi
    if [[ -n ${RESULT[connect_bulk,safegate]:-} ]]; then
        awk -v a="$(get connect_bulk safegate primary)" -v d="$(get connect_bulk direct primary)" \
            'BEGIN { if (d > 0) printf "CONNECT bulk: safegate / direct = %.0f%% (target >= 80%%)\n", 100 * a / d }'
    fi
    echo
    echo "Resident memory (VmRSS, process and children):"
    for p in "${ACTIVE[@]}"; do
        printf '  %-12s idle after start-up: %6.1f MiB   idle after the load: %6.1f MiB   (anonymous: %5.1f / %5.1f MiB)\n' \
            "$p" "$(awk -v k="${RSS_IDLE[$p]}" 'BEGIN{print k/1024}')" \
            "$(awk -v k="${RSS_AFTER[$p]}" 'BEGIN{print k/1024}')" \
            "$(awk -v k="${ANON_IDLE[$p]}" 'BEGIN{print k/1024}')" \
            "$(awk -v k="${ANON_AFTER[$p]}" 'BEGIN{print k/1024}')"
    done
    echo "  (anonymous: the process's own memory; the rest of VmRSS is its program's code and"
    echo "   data pages, shared with the page cache)"
    echo "  (target: safegate < 30 MiB at idle)"
    echo "wrk counts every connection a proxy closes after a response as a socket (read)" \
        "error: a peer without client keep-alive shows about one per request."
    for s in "${SCENARIOS[@]}"; do
        for col in "${COLUMNS_[@]}"; do
            n=$(get "$s" "$col" note)
            [[ $n == - ]] && continue
            echo "note: $s / $col: $n"
        done
    done
    for p in "${PEERS[@]}"; do
        [[ " ${ACTIVE[*]} " == *" $p "* ]] || echo "note: $p could not run (see log above)"
        if [[ -n ${SCAN_NOTE[$p]:-} ]]; then echo "note: $p: ${SCAN_NOTE[$p]}"; fi
    done
    echo "Scanning: the 100 KiB page passed whole and the over-limit page was blocked by" \
        "every proxy without a scan-check note (squid and tinyproxy do not scan)."
}
