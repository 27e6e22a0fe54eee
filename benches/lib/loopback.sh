# Sourced by benches/syscalls.sh and benches/profile.sh (from the repository's
# root): builds the release dispatch and load generator, starts
# examples/loadgen's echo server and a dispatch (the build DISPATCH names,
# else this one's) on 127.0.0.1:$port with the loopback address as its link,
# and stops both at exit. Sets bin, loadgen, tmp, target (the echo server's
# address) and proxy (dispatch's pid); `name` says whose errors they are.
cargo build --release --quiet --bin dispatch --example loadgen
bin=${DISPATCH:-./target/release/dispatch}
loadgen=./target/release/examples/loadgen
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"' EXIT
"$loadgen" serve 127.0.0.1:0 >"$tmp/echo.out" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$tmp/echo.out" && break; sleep 0.05; done
target=$(awk '/listening/ {print $2}' "$tmp/echo.out")
[ -n "$target" ] || { echo "$name: the echo server did not start" >&2; exit 1; }
XDG_STATE_HOME=$tmp "$bin" start --port "$port" --quiet 127.0.0.1 >/dev/null 2>&1 &
proxy=$!
pids+=($proxy)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
kill -0 "$proxy" 2>/dev/null || { echo "$name: dispatch exited at start (port $port in use? set PORT)" >&2; exit 1; }
