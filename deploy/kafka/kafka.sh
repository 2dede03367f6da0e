#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller in one JVM) for the demo and the tests.
#
#   deploy/kafka/kafka.sh start [PORT] [DIR]   fetch jars (cached in deploy/kafka/lib), format, start, wait for the port
#   deploy/kafka/kafka.sh stop  [DIR]          stop the broker started in DIR by its pid
#   deploy/kafka/kafka.sh fetch                only fetch the jars
#
# DIR defaults to $AESTREAM_KAFKA_DIR or /tmp/aestream-kafka-PORT; PORT defaults to 19092.
# The controller listens on PORT+1; a start fails at once, naming the port, when either is taken, or when the
# broker exits before it opens PORT. Logs go to DIR/server.log. Each start formats DIR/data afresh: a broker for a
# demo or a test run, whose topics and offsets do not outlive it (production: your own cluster).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib="$here/lib"

fetch() {
  if [ ! -f "$lib/.complete" ]; then
    echo "fetching Apache Kafka jars from Maven Central into $lib ..." >&2
    mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies >&2
    touch "$lib/.complete"
  fi
}

ports_free() {  # port...: exit 1 naming the first that something on this machine holds
  python3 - "$@" <<'PY'
import socket, sys
for port in map(int, sys.argv[1:]):
    with socket.socket() as s:
        # as the broker binds: a socket of a broker just stopped, left in TIME_WAIT, does not hold the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            sys.exit(f"port {port} is taken ({e.strerror}); pick another PORT (the controller uses PORT+1)")
PY
}

wait_port() {  # host port timeout_s pid: 0 once the port answers, 1 when the pid exits or the time is up
  python3 - "$@" <<'PY'
import os, socket, sys, time
host, port, limit, pid = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        socket.create_connection((host, port), timeout=1).close()
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(1)
        time.sleep(0.2)
sys.exit(1)
PY
}

start() {
  local port="${1:-19092}"
  local dir="${2:-${AESTREAM_KAFKA_DIR:-/tmp/aestream-kafka-$port}}"
  local cport=$((port + 1))
  fetch
  if [ -f "$dir/kafka.pid" ] && kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; then
    echo "kafka already running in $dir (pid $(cat "$dir/kafka.pid")) on 127.0.0.1:$port" >&2
    return 0
  fi
  ports_free "$port" "$cport" || exit 1
  rm -rf "$dir/data" && mkdir -p "$dir/data"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
default.replication.factor=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.flush.interval.messages=9223372036854775807
PROPS
  local cp="$lib/*"
  local java_opts=(-Xms256m -Xmx768m -XX:+UseG1GC -Dlog4j2.configurationFile="$here/log4j2.properties" -Djava.awt.headless=true)
  local cluster_id
  # a 22-character base64 id; never starting with "-", which the storage tool would read as an option
  cluster_id="$(python3 -c 'import base64,uuid
while (i := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"): pass
print(i)')"
  java "${java_opts[@]}" -cp "$cp" kafka.tools.StorageTool format --standalone \
    --cluster-id "$cluster_id" --config "$dir/server.properties" > "$dir/format.log" 2>&1 \
    || { cat "$dir/format.log" >&2; exit 1; }
  nohup java "${java_opts[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties" > "$dir/server.log" 2>&1 &
  echo $! > "$dir/kafka.pid"
  local pid; pid="$(cat "$dir/kafka.pid")"
  if ! wait_port 127.0.0.1 "$port" 90 "$pid"; then
    if kill -0 "$pid" 2>/dev/null; then
      echo "kafka did not open 127.0.0.1:$port within 90 s; see $dir/server.log:" >&2
    else  # e.g. another process took the port between the check above and the broker's bind
      rm -f "$dir/kafka.pid"
      echo "kafka exited before it opened 127.0.0.1:$port; see $dir/server.log:" >&2
    fi
    tail -20 "$dir/server.log" >&2
    exit 1
  fi
  echo "kafka running on 127.0.0.1:$port (pid $(cat "$dir/kafka.pid"), dir $dir)" >&2
}

stop() {
  local dir="${1:-${AESTREAM_KAFKA_DIR:-/tmp/aestream-kafka-19092}}"
  [ -f "$dir/kafka.pid" ] || { echo "no kafka.pid in $dir" >&2; return 0; }
  local pid; pid="$(cat "$dir/kafka.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$dir/kafka.pid"
  echo "kafka stopped ($dir)" >&2
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  fetch) fetch ;;
  *) echo "usage: $0 start [PORT] [DIR] | stop [DIR] | fetch" >&2; exit 2 ;;
esac
