#!/bin/sh
# SageMaker runs `docker run IMAGE train` for training jobs and `docker run IMAGE serve` for endpoints; a retrain
# loop's pipeline runs `resolve` and `evaluate` (Processing jobs).
set -e
case "${1:-}" in
  train | serve | evaluate | resolve) command="$1"; shift; exec "/opt/venv/bin/$command" "$@" ;;
  "") echo "usage: docker run IMAGE train|serve|evaluate|resolve [ARGS], or any command" >&2; exit 64 ;;
  *) exec "$@" ;;
esac
