#!/usr/bin/env bash
# Installs (when missing) and starts the local brokers the conformance suite runs against:
#   RabbitMQ from Debian on 127.0.0.1:5672 (guest/guest);
#   the Google Pub/Sub emulator (gcloud beta emulators pubsub, needs Java) on 127.0.0.1:8085.
# Idempotent: a broker that already answers is left alone. Needs root (or sudo) only to install.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

start_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
    echo "brokers: installing rabbitmq-server from Debian"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq rabbitmq-server >/dev/null
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
      echo "brokers: RabbitMQ ready on 127.0.0.1:5672"
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

start_rabbitmq
start_pubsub
