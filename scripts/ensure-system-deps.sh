#!/usr/bin/env bash
# Java 17+ and Maven run the local Apache Kafka broker; Python 3.11+ runs Rapport; headless
# Chromium photographs the HTML report in the tests.
# Installs what is missing with apt-get when we are root on Debian/Ubuntu, else says what to do.
set -euo pipefail

need=()
java_major() { java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1])}'; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then need+=(openjdk-17-jre-headless); fi
if ! command -v mvn >/dev/null 2>&1; then need+=(maven); fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python 3.11 or newer is required (found: $(python3 --version 2>&1))" >&2; exit 1
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then need+=(python3-venv); fi
# Rust (cargo) builds the replay's native decoder (native/); Debian's packaged Rust is too old
# for its crates, so it comes from rustup (https://rustup.rs), as on this project's machines.
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  echo "error: Rust's cargo (1.82 or newer, from rustup) is required to build native/" >&2; exit 1
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  need+=(chromium)
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "error: please install: ${need[*]} (Java 17+ and Maven run the local Kafka broker;" \
      "Chromium renders the HTML report in the tests)" >&2
    exit 1
  fi
fi
