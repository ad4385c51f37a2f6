#!/usr/bin/env bash
# Installs everything kfleet needs to build, run and test on Debian 12.
# Idempotent: does nothing when every package is already installed.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
  libzmq3-dev libssl-dev libcjson-dev libcurl4-openssl-dev
  libcgroup-dev libseccomp-dev libcap-dev libnng-dev
  libcmocka-dev libyaml-dev librsvg2-bin
  python3 python3-ipykernel python3-jupyter-client
  python3-numpy python3-pandas python3-matplotlib
  python3-pytest python3-grpcio python3-grpc-tools
  e2fsprogs util-linux iproute2 nftables procps openssl ca-certificates
  etcd-server etcd-client
  dpkg-dev file python3-yaml
  prometheus    # promtool: the integration tests check the /metrics output with it
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "kfleet: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
