#!/usr/bin/env bash
# Make sure a Docker engine answers, with docker-compose (SageMaker local mode), a registry server (push tests)
# and debootstrap (the offline base): install Debian's packages if missing, start dockerd if none runs.
# Prints "started PID" if it started dockerd (PID: that dockerd's), so the caller can stop the engine it started
# and no other.
set -euo pipefail
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} ..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The registry package starts a service on port 5000 by default; tests start their own.
  $sudo systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
if docker info >/dev/null 2>&1; then exit 0; fi
echo "starting dockerd ..." >&2
pid=$($sudo sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 & echo $!')
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then echo "started $pid"; exit 0; fi
  sleep 1
done
echo "dockerd did not start; see /var/log/dockerd.log" >&2
exit 1
