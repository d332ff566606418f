#!/usr/bin/env bash
# Installs (when missing) and starts the local brokers the conformance suite runs against:
#   RabbitMQ from Debian on 127.0.0.1:5672 (guest/guest).
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
  as_root timeout 120 rabbitmqctl await_startup >/dev/null
  echo "brokers: RabbitMQ ready on 127.0.0.1:5672"
}

start_rabbitmq
