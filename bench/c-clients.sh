#!/usr/bin/env bash
# The broker's "32 clients x 1 message per request" figure from clients
# written in C instead of the bench's own (docs/benchmarks.md, "Targets"):
# h2load over gRPC, wrk over REST, 32 connections with one request in
# flight each, 1 KiB messages into a topic with one subscription (so every
# message is stored and fsynced before its answer).
#
#   apt-get install nghttp2-client wrk    # h2load, wrk
#   cargo build --release
#   bench/c-clients.sh [path/to/labrelay]
#
# Prints each tool's summary and the broker's CPU per message, by thread,
# and fails unless the broker stored every message the tools counted as
# answered: h2load counts a request as succeeded on HTTP status 200, which a
# gRPC error (grpc-status in the trailers) also has, so the check reads the
# subscription's backlog from the broker's /metrics.
# Needs python3 and curl. Environment: PORT (default 18085), MESSAGES for
# h2load (default 200000), SECONDS_REST for wrk (default 10).
set -euo pipefail

labrelay=${1:-target/release/labrelay}
port=${PORT:-18085}
messages=${MESSAGES:-200000}
seconds_rest=${SECONDS_REST:-10}
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

# Messages stored for the subscription and not yet pulled.
backlog() {
  curl -sf "$base/metrics" | awk '
    /^labrelay_broker_backlog_messages\{subscription="projects\/bench\/subscriptions\/c-clients"\}/ {
      printf "%d\n", $2; found = 1 }
    END { if (!found) print 0 }'
}

thread_cpu >"$work/before"
h2load -c32 -m1 -t1 -n"$messages" -d "$work/publish.grpc" \
  -H 'content-type: application/grpc' -H 'te: trailers' \
  "$base/google.pubsub.v1.Publisher/Publish" | tee "$work/h2load.txt"
report "gRPC, h2load" "$messages"
succeeded=$(awk '/^requests:/ {print $8}' "$work/h2load.txt")
stored=$(backlog)
echo "gRPC: $succeeded of $messages requests answered 200, $stored messages stored"
if [ "$succeeded" != "$messages" ] || [ "$stored" != "$messages" ]; then
  echo "c-clients: h2load's requests did not all store their message" >&2
  exit 1
fi

thread_cpu >"$work/before"
wrk -t1 -c32 -d"${seconds_rest}s" -s "$work/publish.lua" \
  "$base/v1/projects/bench/topics/c-clients:publish" | tee "$work/wrk.txt"
answered=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
report "REST, wrk" "$answered"
stored=$(($(backlog) - messages))
echo "REST: $answered requests answered, $stored messages stored"
# wrk counts the answers it read; up to one request per connection can be
# stored and cut off unanswered when wrk stops.
if grep -q -e 'Non-2xx' -e 'Socket errors' "$work/wrk.txt" ||
  [ "$stored" -lt "$answered" ] || [ "$stored" -gt $((answered + 32)) ]; then
  echo "c-clients: wrk saw errors, or the stored count does not match its answers" >&2
  exit 1
fi
