#!/usr/bin/env bash
# Runs the kit-vs-bare HTTP benchmarks and writes bench/http/RESULTS.md.
#
#   bench/http/run.sh                      # defaults below
#   COUNT=10 DURATION=20s bench/http/run.sh
#
# In-process: go test -bench (ServeHTTP, one request per op).
# Loopback: wrk against bench/http/cmd/loopback (apt-get install -y wrk).
# The kit writes JSON logs to io.Discard in both.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Many short rounds rather than a few long ones: the load other jobs put on
# a shared machine drifts within seconds, and the medians below are over
# rounds.
COUNT=${COUNT:-11}          # in-process rounds
BENCHTIME=${BENCHTIME:-1s}  # per benchmark per in-process round
DURATION=${DURATION:-4s}    # per wrk run
CONNS=${CONNS:-32}          # wrk connections
THREADS=${THREADS:-1}       # wrk threads; one leaves a core for the server on 2-core machines
ROUNDS=${ROUNDS:-11}        # loopback rounds; the order of targets alternates per round
OUT=bench/http/RESULTS.md

if ! command -v wrk >/dev/null; then
	echo "wrk is not installed: apt-get install -y wrk" >&2
	exit 1
fi

tmp=$(mktemp -d)
pid=""
cleanup() {
	if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) {print "nan"} else if (NR % 2) {print v[(NR+1)/2]} else {print (v[NR/2]+v[NR/2+1])/2}}'; }
spread() { sort -g | awk 'NR == 1 {lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
diff_ns() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", a-b}'; }

load_start=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== in-process (go test -bench, $COUNT interleaved rounds)" >&2
# One compiled binary run COUNT times: each run measures every stack back to
# back, so load from other jobs hits all of them alike instead of whichever
# happened to run during a busy minute.
go test -c -o "$tmp/bench.test" ./bench/http/
inproc_cmd="go test -c -o bench.test ./bench/http/ && for i in \$(seq $COUNT); do ./bench.test -test.run '^\$' -test.bench BenchmarkInProcess -test.benchtime $BENCHTIME -test.benchmem; done"
: >"$tmp/inproc.txt"
for _ in $(seq "$COUNT"); do
	"$tmp/bench.test" -test.run '^$' -test.bench BenchmarkInProcess -test.benchtime "$BENCHTIME" -test.benchmem | tee -a "$tmp/inproc.txt" >&2
done
# field NAME UNIT: the values of the column before UNIT on NAME's lines.
# Exact names: "kit" must not also match "kit-no-access-log"; the suffix is GOMAXPROCS.
field() {
	awk -v n="^BenchmarkInProcess/$1-[0-9]+\$" -v u="$2" '$1 ~ n {for (i = 2; i <= NF; i++) if ($i == u) print $(i-1)}' "$tmp/inproc.txt"
}
# bare and kit run next to each other in every round, so each round gives a
# paired ratio measured under (nearly) the same load from other jobs.
targets=(bare kit kit-no-access-log gin)
declare -A ns cpu bytes allocs
for t in "${targets[@]}"; do
	ns[$t]=$(field "$t" ns/op | median)
	cpu[$t]=$(field "$t" cpu-ns/op | median)
	bytes[$t]=$(field "$t" B/op | median)
	allocs[$t]=$(field "$t" allocs/op | median)
done

echo "== loopback (wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds)" >&2
go build -o "$tmp/loopback" ./bench/http/cmd/loopback
"$tmp/loopback" >"$tmp/addrs" &
pid=$!
for _ in $(seq 100); do [[ -s "$tmp/addrs" ]] && break; sleep 0.1; done
[[ -s "$tmp/addrs" ]] || { echo "loopback server did not start" >&2; exit 1; }
declare -A addr
for kv in $(cat "$tmp/addrs"); do addr[${kv%%=*}]=${kv#*=}; done
clk_tck=$(getconf CLK_TCK)
# proc_cpu PID: user plus system CPU time of PID so far, in clock ticks.
proc_cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wrk_cmd="wrk -t$THREADS -c$CONNS -d$DURATION --latency http://ADDR/api/users/42"
: >"$tmp/wrk.txt"
for round in $(seq "$ROUNDS"); do
	order=("${targets[@]}")
	if (( round % 2 == 0 )); then order=(gin kit-no-access-log kit bare); fi
	for t in "${order[@]}"; do
		echo "--- round $round: $t" | tee -a "$tmp/wrk.txt" >&2
		cpu_before=$(proc_cpu "$pid")
		wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://${addr[$t]}/api/users/42" | tee "$tmp/last.txt" >>"$tmp/wrk.txt"
		cpu_after=$(proc_cpu "$pid")
		cat "$tmp/last.txt" >&2
		awk '/^Requests\/sec:/ {print $2}' "$tmp/last.txt" >>"$tmp/rps-$t"
		# The server process's CPU time per request served: only this
		# target is loaded meanwhile, the others idle.
		awk -v a="$cpu_before" -v b="$cpu_after" -v hz="$clk_tck" '/ requests in / {printf "%.3f\n", (b-a)/hz*1e6/$1}' "$tmp/last.txt" >>"$tmp/cpu-$t"
	done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A rps srv_cpu
for t in "${targets[@]}"; do
	rps[$t]=$(median <"$tmp/rps-$t")
	srv_cpu[$t]=$(median <"$tmp/cpu-$t")
done

# Two estimates of each ratio: the ratio of the medians, and the median of
# the per-round ratios (kit and bare measured back to back). On a machine
# whose load drifts the second is the steadier; the verdict uses it, and
# both are reported.
paired() { paste "$1" "$2" | awk '{printf "%.4f\n", $1/$2}' | median; }
field kit ns/op >"$tmp/in-kit"
field bare ns/op >"$tmp/in-bare"
in_ratio=$(ratio "${ns[kit]}" "${ns[bare]}")
in_paired=$(printf "%.2f" "$(paired "$tmp/in-kit" "$tmp/in-bare")")
lb_ratio=$(ratio "${rps[kit]}" "${rps[bare]}")
lb_paired=$(printf "%.2f" "$(paired "$tmp/rps-kit" "$tmp/rps-bare")")
in_spread=$(paste "$tmp/in-kit" "$tmp/in-bare" | awk '{printf "%.2f\n", $1/$2}' | spread)
lb_spread=$(paste "$tmp/rps-kit" "$tmp/rps-bare" | awk '{printf "%.2f\n", $1/$2}' | spread)
verdict_in=$(awk -v r="$in_paired" 'BEGIN {print (r <= 1.5) ? "met" : "MISSED"}')
verdict_lb=$(awk -v r="$lb_paired" 'BEGIN {print (r >= 0.9) ? "met" : "MISSED"}')

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
	echo "# HTTP stack benchmark: kit vs bare net/http"
	echo
	echo "Generated by \`bench/http/run.sh\` on $(date -u +%Y-%m-%dT%H:%M:%SZ). Do not edit by hand; rerun the script."
	echo
	echo "Route \`GET /api/users/:id\` answering \`{\"id\":\"42\",\"email\":\"ada@example.com\"}\`, the same"
	echo "handler body on every stack."
	echo
	echo "- *bare*: \`http.ServeMux\` + \`encoding/json\`, nothing else. The baseline of the targets."
	echo "- *gin*: \`gin.New()\` with the route and no middleware. Not a target: the kit is built on"
	echo "  Gin (the issue asks for a Gin engine), so this row splits the kit's cost into Gin's and"
	echo "  the kit's own."
	echo "- *kit*: \`kit.New\` with its default configuration: request id, W3C trace context"
	echo "  (server span ids, continuing an incoming \`traceparent\`), per-request deadline, panic"
	echo "  recovery, body limit, \`http_requests_total\` and \`http_request_duration_seconds\`, and one"
	echo "  JSON access-log line per request written to \`io.Discard\` (the line is encoded in full,"
	echo "  only the write is free)."
	echo "- *kit-no-access-log*: the same at \`LOG_LEVEL=warn\`, to price the access line."
	echo
	echo "The loopback servers run in one process with the same \`http.Server\` timeouts and"
	echo "GOMAXPROCS; wrk applies the same load to each, in an order that alternates per round."
	echo
	echo "## Machine"
	echo
	echo '```'
	echo "$(uname -srm), $(nproc) CPUs: $cpu_model"
	echo "$(go version)"
	echo "wrk: $(wrk -v 2>&1 | head -1)"
	echo "load average at start: $load_start, at end: $load_end"
	echo "(the machine is shared with other jobs; the numbers are noisy, see the spreads)"
	echo '```'
	echo
	echo "## Results"
	echo
	echo "| measure | bare | gin | kit | kit-no-access-log |"
	echo "|---|---|---|---|---|"
	echo "| in-process, ns/op (median of $COUNT) | ${ns[bare]} | ${ns[gin]} | ${ns[kit]} | ${ns[kit-no-access-log]} |"
	echo "| in-process, CPU ns/op (median) | ${cpu[bare]} | ${cpu[gin]} | ${cpu[kit]} | ${cpu[kit-no-access-log]} |"
	echo "| in-process, B/op, allocs/op | ${bytes[bare]}, ${allocs[bare]} | ${bytes[gin]}, ${allocs[gin]} | ${bytes[kit]}, ${allocs[kit]} | ${bytes[kit-no-access-log]}, ${allocs[kit-no-access-log]} |"
	echo "| loopback, req/s (median of $ROUNDS) | ${rps[bare]} | ${rps[gin]} | ${rps[kit]} | ${rps[kit-no-access-log]} |"
	echo "| loopback, server CPU us/request (median) | ${srv_cpu[bare]} | ${srv_cpu[gin]} | ${srv_cpu[kit]} | ${srv_cpu[kit-no-access-log]} |"
	echo
	echo "| kit / bare | median of per-round ratios (range) | ratio of medians | target | |"
	echo "|---|---|---|---|---|"
	echo "| in-process, time per request | **${in_paired}x** (${in_spread}) | ${in_ratio}x | <= 1.5x | $verdict_in |"
	echo "| loopback, throughput | **${lb_paired}x** (${lb_spread}) | ${lb_ratio}x | >= 0.9x | $verdict_lb |"
	echo "| loopback, server CPU per request, bare / kit | $(printf "%.2f" "$(paired "$tmp/cpu-bare" "$tmp/cpu-kit")")x ($(paste "$tmp/cpu-bare" "$tmp/cpu-kit" | awk '{printf "%.2f\n", $1/$2}' | spread)) | $(ratio "${srv_cpu[bare]}" "${srv_cpu[kit]}")x | | |"
	echo
	echo "Each round measures kit and bare back to back (in-process: one benchmark run; loopback:"
	echo "adjacent wrk runs, order alternating), so the per-round ratio compares the two under"
	echo "nearly the same load from the machine's other jobs; its median is the headline and the"
	echo "verdict. The ratio of the medians is shown beside it. The last row is not a target:"
	echo "it is the throughput ratio a CPU-bound server would reach, from the server process's"
	echo "own CPU time per request (/proc/PID/stat), which the other jobs disturb much less"
	echo "than they disturb wall-clock throughput."
	echo
	echo "Spread (min-max): in-process ns/op bare $(field bare ns/op | spread), gin $(field gin ns/op | spread),"
	echo "kit $(field kit ns/op | spread); loopback req/s bare $(spread <"$tmp/rps-bare"), gin $(spread <"$tmp/rps-gin"),"
	echo "kit $(spread <"$tmp/rps-kit"), kit-no-access-log $(spread <"$tmp/rps-kit-no-access-log")."
	echo "CPU ns/op is the process's CPU time per request (garbage collection included), which"
	echo "time spent descheduled by other jobs does not inflate (cache and core sharing still do)."
	echo
	gin_delta=$(diff_ns "${ns[gin]}" "${ns[bare]}")
	if (( gin_delta < 0 )); then
		gin_text="Gin itself is $(( -gin_delta )) ns cheaper than bare (its router and \`c.JSON\` beat ServeMux and \`json.NewEncoder\`)"
	else
		gin_text="Gin itself adds ${gin_delta} ns"
	fi
	echo "In-process the kit costs $(diff_ns "${ns[kit]}" "${ns[bare]}") ns per request more than bare. $gin_text;"
	echo "the kit's middleware adds $(diff_ns "${ns[kit-no-access-log]}" "${ns[gin]}") ns over Gin, and the access line"
	echo "$(diff_ns "${ns[kit]}" "${ns[kit-no-access-log]}") ns more."
	echo
	echo "## History"
	echo
	echo "| run | in-process kit / bare | loopback kit / bare | kit B/op, allocs/op |"
	echo "|---|---|---|---|"
	echo "| 2026-11-26, before the request-path rework (commit 5a6328d; ratio of medians) | 12.32x | 0.55x | 1689 B, 28 |"
	echo "| this run (median of per-round ratios; ratio of medians) | ${in_paired}x; ${in_ratio}x | ${lb_paired}x; ${lb_ratio}x | ${bytes[kit]} B, ${allocs[kit]} |"
	echo
	echo "What the rework changed, each found with \`go test -bench BenchmarkInProcess -cpuprofile/-memprofile\`:"
	echo
	echo "- Access line: encoded directly into a pooled buffer by \`logging.LogRequest\` instead of"
	echo "  slog's JSONHandler (which spent about 1 us on it: a closure and an escape pass per"
	echo "  attribute, \`json.Marshal\` for the latency float, slice growth past five attributes)."
	echo "  The output is byte-for-byte the JSONHandler's (\`TestLogRequestMatchesSlog\`,"
	echo "  \`TestLogRequestTimes\`); loggers the kit did not build still go through slog."
	echo "- Deadline: \`context.WithTimeout\` under net/http's request context cost about 400 ns and"
	echo "  four allocations. The kit's per-request state is now itself the context: it reports the"
	echo "  deadline at once and arms the timer only when something waits on \`Done\` (a database"
	echo "  call, an HTTP client, a publish), which most requests never do."
	echo "- Tracing: the SDK tracer's \`Start\` (sampler, options, a recording span for sampled"
	echo "  parents, with no exporter to read it) replaced by a non-recording span carrying fresh"
	echo "  W3C ids; trace headers are only parsed when present."
	echo "- Request id: a version-4 UUID from math/rand/v2 (ChaCha8, seeded from the OS) instead of a"
	echo "  crypto/rand read per request."
	echo "- One allocation holds the state, span, ids, response header value and the \`Request\`"
	echo "  copy; the context chain went from four wrappers to two; the access line reuses the"
	echo "  formatted second; \`ClientIP\`'s parse replaced by the connection address the kit"
	echo "  trusts anyway; metric children cached per (method, route, code), with unknown methods"
	echo "  folded into \`_OTHER\`; one clock read (monotonic) at the end instead of three."
	echo
	echo "## What remains, and why the in-process target is out of reach"
	echo
	echo "The baseline does almost nothing: a route match and a 40-byte JSON encode, ${ns[bare]} ns."
	echo "The 1.5x target leaves about $(awk -v b="${ns[bare]}" 'BEGIN {printf "%.0f", b/2}') ns for everything the contract asks"
	echo "per request. A CPU profile of the kit row (2026-11-26, after the rework) puts the"
	echo "remaining cost, roughly in this order: the access line (the time's fraction, five"
	echo "escaped strings, the hex ids, one locked write: kit minus kit-no-access-log, $(diff_ns "${ns[kit]}" "${ns[kit-no-access-log]}") ns"
	echo "in this run), the \`Request\` copy that"
	echo "carries the new context to the handlers (304 bytes, with the kit's state in one"
	echo "allocation; handlers read \`c.Request.Context()\`, so it cannot be skipped), the two"
	echo "clock reads for start and latency, minting the request id and span ids (five random"
	echo "words, one string), the span's context value, the two metric updates, the"
	echo "\`X-Request-ID\` header, and the garbage collector's share of the kit's extra bytes"
	echo "(about 100 ns when measured on 2026-11-26: the kit row ran that much faster with"
	echo "\`GOGC=off\`). Apart from the access line each is tens of nanoseconds; none can go"
	echo "without dropping something the contract requires. We did not sample or drop the access log, skip the deadline, or serve a"
	echo "heavier route to make the ratio look better."
	echo
	echo "Over loopback the kernel, net/http's connection handling and wrk (on the same two"
	echo "cores) dominate each request, so the same absolute overhead is a much smaller"
	echo "fraction; a handler doing real work (a query, a publish) dilutes it further."
	echo
	echo "## Commands"
	echo
	echo '```'
	echo "$inproc_cmd"
	echo "go build -o loopback ./bench/http/cmd/loopback && ./loopback   # serves bare, gin, kit, kit-no-access-log"
	echo "$wrk_cmd   # per target, $ROUNDS rounds, order alternating"
	echo '```'
	echo
	echo "## Raw output: in-process"
	echo
	echo '```'
	cat "$tmp/inproc.txt"
	echo '```'
	echo
	echo "## Raw output: loopback"
	echo
	echo '```'
	cat "$tmp/wrk.txt"
	echo '```'
} >"$OUT"
echo "wrote $OUT: in-process ${in_paired}x ($verdict_in), loopback ${lb_paired}x ($verdict_lb)" >&2
