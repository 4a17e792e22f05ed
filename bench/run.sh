#!/usr/bin/env bash
# Benchmark `topoha mirror` against `etcdctl make-mirror` on the same two etcd servers, in one run.
# Installs etcd-server and etcd-client from Debian if missing, starts two etcd processes on loopback
# ports with data on disk (fsync on), and prints a Markdown table (also saved under bench/results/).
#
#   bash bench/run.sh                 # 100,000 keys, the numbers in docs/benchmarks.md
#   KEYS=10000 LOAD_FOR=2s bash bench/run.sh   # a short run
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-100000}
LOAD_FOR=${LOAD_FOR:-5s}
LAG_FOR=${LAG_FOR:-10s}
LAG_RATE=${LAG_RATE:-3000}

if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  echo "installing etcd-server and etcd-client from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq etcd-server etcd-client >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_etcd() { # name client-port peer-port
  etcd --name "$1" --data-dir "$work/$1" \
    --listen-client-urls "http://127.0.0.1:$2" --advertise-client-urls "http://127.0.0.1:$2" \
    --listen-peer-urls "http://127.0.0.1:$3" --initial-advertise-peer-urls "http://127.0.0.1:$3" \
    --initial-cluster "$1=http://127.0.0.1:$3" --quota-backend-bytes 8589934592 \
    --log-level error >"$work/$1.log" 2>&1 &
  pids+=($!)
}
start_etcd bench-src 23790 23800
start_etcd bench-dst 23890 23900
for port in 23790 23890; do
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$port" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
  done
done

go build -o bin/topoha ./cmd/topoha
mkdir -p bench/results
out="bench/results/$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "etcd $(etcd --version | head -1 | awk '{print $3}'), etcdctl make-mirror from Debian; $(nproc) cores; $(go version | awk '{print $3}')"
  go run ./bench/mirrorbench -src http://127.0.0.1:23790 -dst http://127.0.0.1:23890 -etcdctl "$(command -v etcdctl)" \
    -topoha bin/topoha -keys "$KEYS" -load-for "$LOAD_FOR" -lag-for "$LAG_FOR" -lag-rate "$LAG_RATE" -work-dir "$work"
} | tee "$out"
echo "saved to $out" >&2
