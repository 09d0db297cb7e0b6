#!/usr/bin/env bash
# The broker's "32 clients x 1 message per request" figure from clients
# written in C instead of the bench's own (BENCHMARKS.md, sixth session):
# h2load over gRPC, wrk over REST, 32 connections with one request in
# flight each, 1 KiB messages into a topic with one subscription (so every
# message is stored and fsynced before its answer).
#
#   apt-get install nghttp2-client wrk    # h2load, wrk
#   cargo build --release
#   bench/c-clients.sh [path/to/labrelay]
#
# Prints each tool's summary and the broker's CPU per message, by thread.
# Needs python3 and curl; the port is $PORT (default 18085).
set -euo pipefail

labrelay=${1:-target/release/labrelay}
port=${PORT:-18085}
work=$(mktemp -d)
trap 'kill -INT "$broker" 2>/dev/null; wait "$broker" 2>/dev/null; rm -rf "$work"' EXIT

# The request bodies: a gRPC frame around a PublishRequest, and its JSON form.
python3 - "$work" <<'EOF'
import base64, json, os, struct, sys

work = sys.argv[1]
data = os.urandom(1024)

def varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])

def field(number, payload):  # a length-delimited protobuf field
    return varint(number << 3 | 2) + varint(len(payload)) + payload

request = field(1, b"projects/bench/topics/c-clients") + field(2, field(1, data))
with open(f"{work}/publish.grpc", "wb") as f:
    f.write(b"\0" + struct.pack(">I", len(request)) + request)
body = json.dumps({"messages": [{"data": base64.b64encode(data).decode()}]})
with open(f"{work}/publish.lua", "w") as f:
    f.write('wrk.method = "POST"\n')
    f.write('wrk.headers["Content-Type"] = "application/json"\n')
    f.write(f"wrk.body = [[{body}]]\n")
EOF

"$labrelay" broker --port "$port" --data-dir "$work/data" >"$work/broker.log" 2>&1 &
broker=$!
base=http://127.0.0.1:$port
until curl -sf -o /dev/null "$base/v1/projects/bench/topics"; do sleep 0.1; done
curl -sf -o /dev/null -X PUT "$base/v1/projects/bench/topics/c-clients" \
  -H 'content-type: application/json' -d '{}'
curl -sf -o /dev/null -X PUT "$base/v1/projects/bench/subscriptions/c-clients" \
  -H 'content-type: application/json' -d '{"topic":"projects/bench/topics/c-clients"}'

# CPU seconds of each of the broker's threads, by thread name.
thread_cpu() {
  for stat in /proc/"$broker"/task/*/stat; do
    sed -E 's/^[0-9]+ \((.*)\) . ([^ ]+ ){10}([0-9]+) ([0-9]+).*/\1 \3 \4/' "$stat"
  done | awk '{cpu[$1] += $2 + $3} END {for (t in cpu) print t, cpu[t]}'
}

# report NAME MESSAGES: the broker's CPU per message since `thread_cpu >before`.
report() {
  thread_cpu >"$work/after"
  echo "broker CPU per message ($1), by thread:"
  awk -v n="$2" -v hz="$(getconf CLK_TCK)" '
    NR == FNR { before[$1] = $2; next }
    { printf "  %-16s %6.1f us\n", $1, ($2 - before[$1]) / hz / n * 1e6 }' \
    "$work/before" "$work/after"
}

thread_cpu >"$work/before"
h2load -c32 -m1 -t1 -n200000 -d "$work/publish.grpc" \
  -H 'content-type: application/grpc' -H 'te: trailers' \
  "$base/google.pubsub.v1.Publisher/Publish" | tee "$work/h2load.txt"
report "gRPC, h2load" 200000

thread_cpu >"$work/before"
wrk -t1 -c32 -d10s -s "$work/publish.lua" \
  "$base/v1/projects/bench/topics/c-clients:publish" | tee "$work/wrk.txt"
report "REST, wrk" "$(awk '/requests in/ {print $1}' "$work/wrk.txt")"
