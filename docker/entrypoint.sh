#!/bin/sh
# SageMaker runs `docker run IMAGE train` for training jobs and `docker run IMAGE serve` for endpoints; a retrain
# loop's evaluation step (a Processing job) runs `evaluate`.
set -e
case "${1:-}" in
  train | serve | evaluate) command="$1"; shift; exec "/opt/venv/bin/$command" "$@" ;;
  "") echo "usage: docker run IMAGE train|serve|evaluate [ARGS], or any command" >&2; exit 64 ;;
  *) exec "$@" ;;
esac
