#!/usr/bin/env bash
# Installs (when missing) and starts the local brokers the conformance suite runs against:
#   RabbitMQ from Debian on 127.0.0.1:5672 (guest/guest), and its TLS listener on 127.0.0.1:5671 with a throwaway CA and
#   server certificate made here with openssl (CA at $MESSAGING_TLS_DIR/ca.pem, default /etc/rabbitmq/messaging-tls);
#   the Google Pub/Sub emulator (gcloud beta emulators pubsub, needs Java) on 127.0.0.1:8085;
#   PostgreSQL from Debian on 127.0.0.1:5432 with a role and database for the outbox/inbox storage tests
#   (messaging/messaging, database messaging_tests; the tests read MESSAGING_POSTGRES, default that connection string).
# Idempotent: a broker that already answers is left alone. Needs root (or sudo) only to install.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

TLS_DIR="${MESSAGING_TLS_DIR:-/etc/rabbitmq/messaging-tls}"

# A throwaway CA and a server certificate for localhost / 127.0.0.1, and RabbitMQ's TLS listener on 5671 using them.
# Returns 0 when the configuration changed (a running broker must then restart to listen on 5671).
configure_rabbitmq_tls() {
  local conf=/etc/rabbitmq/rabbitmq.conf
  if [ -f "$TLS_DIR/ca.pem" ] && [ -f "$TLS_DIR/server.pem" ] && grep -q "listeners.ssl.default" "$conf" 2>/dev/null; then
    return 1
  fi
  command -v openssl >/dev/null 2>&1 || { as_root apt-get update -qq; DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq openssl >/dev/null; }
  echo "brokers: making a throwaway CA and server certificate in $TLS_DIR"
  as_root mkdir -p "$TLS_DIR"
  local tmp; tmp=$(mktemp -d)
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=Messaging conformance test CA" \
    -keyout "$tmp/ca.key" -out "$tmp/ca.pem" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$tmp/server.key" -out "$tmp/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$tmp/ext.cnf"
  openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial -days 30 \
    -extfile "$tmp/ext.cnf" -out "$tmp/server.pem" >/dev/null 2>&1
  as_root cp "$tmp/ca.pem" "$tmp/server.pem" "$tmp/server.key" "$TLS_DIR/"
  rm -rf "$tmp"
  as_root chmod 644 "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem" "$TLS_DIR/server.key"
  as_root sh -c "cat > $conf" <<CONF
listeners.tcp.default = 5672
listeners.ssl.default = 5671
ssl_options.cacertfile = $TLS_DIR/ca.pem
ssl_options.certfile = $TLS_DIR/server.pem
ssl_options.keyfile = $TLS_DIR/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
CONF
  return 0
}

start_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
    echo "brokers: installing rabbitmq-server from Debian"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  if configure_rabbitmq_tls && as_root rabbitmqctl -q status >/dev/null 2>&1; then
    echo "brokers: restarting RabbitMQ to open its TLS listener"
    as_root rabbitmqctl -q stop >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do as_root rabbitmqctl -q status >/dev/null 2>&1 || break; sleep 1; done
  fi
  if as_root rabbitmqctl -q status >/dev/null 2>&1; then
    echo "brokers: RabbitMQ already running"
  else
    echo "brokers: starting RabbitMQ"
    as_root rabbitmq-server -detached
  fi
  # `-detached` returns before the node registers with epmd, and `await_startup` fails at once on a node it cannot
  # see yet, so poll (bounded) until the node answers and has finished booting.
  for _ in $(seq 1 120); do
    if as_root rabbitmqctl -q await_startup >/dev/null 2>&1; then
      echo "brokers: RabbitMQ ready on 127.0.0.1:5672 (TLS on 5671, CA $TLS_DIR/ca.pem)"
      return
    fi
    sleep 1
  done
  echo "brokers: RabbitMQ did not start within 120 s; its log follows" >&2
  as_root sh -c 'tail -n 50 /var/log/rabbitmq/*.log' >&2 || true
  return 1
}

http_ok() { # $1 = host:port; true when it answers HTTP
  if command -v curl >/dev/null 2>&1; then curl -s -m 2 -o /dev/null "http://$1/"; else (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; fi
}

start_pubsub() {
  local hostport="${PUBSUB_EMULATOR_HOST:-127.0.0.1:8085}"
  if http_ok "$hostport"; then
    echo "brokers: Pub/Sub emulator already running on $hostport"
    return
  fi
  if ! command -v gcloud >/dev/null 2>&1; then
    echo "brokers: gcloud (Google Cloud CLI with the Pub/Sub emulator component) is not installed" >&2
    return 1
  fi
  echo "brokers: starting the Pub/Sub emulator on $hostport"
  mkdir -p artifacts
  nohup gcloud beta emulators pubsub start --host-port="$hostport" --project="${MESSAGING_PUBSUB_PROJECT:-conformance-project}" \
    > artifacts/pubsub-emulator.log 2>&1 &
  for _ in $(seq 1 120); do
    if http_ok "$hostport"; then
      echo "brokers: Pub/Sub emulator ready on $hostport"
      return
    fi
    sleep 1
  done
  echo "brokers: the Pub/Sub emulator did not answer within 120 s; see artifacts/pubsub-emulator.log" >&2
  return 1
}

pg_ready() { # true when the server accepts TCP connections on 127.0.0.1:5432
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
}

as_postgres() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sudo -u postgres sh -c "$*"; fi; }

start_postgres() {
  if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    echo "brokers: installing postgresql from Debian"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
  fi
  local version cluster
  version=$(pg_lsclusters -h | awk 'NR==1 {print $1}')
  cluster=$(pg_lsclusters -h | awk 'NR==1 {print $2}')
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    cluster=main
    echo "brokers: creating PostgreSQL cluster $version/$cluster"
    as_root pg_createcluster "$version" "$cluster" >/dev/null
  fi
  if pg_ready; then
    echo "brokers: PostgreSQL already running"
  else
    echo "brokers: starting PostgreSQL $version/$cluster"
    as_root pg_ctlcluster "$version" "$cluster" start
  fi
  for _ in $(seq 1 60); do pg_ready && break; sleep 1; done
  if ! pg_ready; then
    echo "brokers: PostgreSQL did not start within 60 s; its log follows" >&2
    as_root sh -c "tail -n 50 /var/log/postgresql/postgresql-$version-$cluster.log" >&2 || true
    return 1
  fi
  # The role and database of the storage tests (idempotent).
  as_postgres "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='messaging'\" | grep -q 1 || psql -qc \"CREATE ROLE messaging LOGIN PASSWORD 'messaging'\"" >/dev/null
  as_postgres "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='messaging_tests'\" | grep -q 1 || createdb -O messaging messaging_tests" >/dev/null
  echo "brokers: PostgreSQL ready: Host=127.0.0.1;Port=5432;Username=messaging;Password=messaging;Database=messaging_tests"
}

start_rabbitmq
start_pubsub
start_postgres
