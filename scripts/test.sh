#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: formatting, lints, every test.
# Installs whatever the tests need that the machine may not have.
set -euo pipefail
cd "$(dirname "$0")/.."

# A fresh checkout gains nothing from incremental state; it only costs disk
# (over a GiB for the test build).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== test dependencies"
# A real SMTP server for the email tests.
python3 -c "import aiosmtpd" 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check aiosmtpd==1.4.6

# Official Pub/Sub clients for the conformance suites (tests/system/conformance.rs).
python3 -m pip install --quiet --disable-pip-version-check -r tests/conformance/python/requirements.txt
npm ci --prefix tests/conformance/node --no-audit --no-fund --loglevel=error

# The deployment scripts' test runs shellcheck.
command -v shellcheck >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq shellcheck; }

# bench/c-clients.sh's test drives the broker with h2load and wrk.
if ! command -v h2load >/dev/null 2>&1 || ! command -v wrk >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nghttp2-client wrk
fi

# The console's browser test (tests/system/console.rs): headless Debian chromium
# driven by playwright-core.
command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }
npm ci --prefix tests/console --no-audit --no-fund --loglevel=error

echo "== no Linux-only crate for macOS and Windows (cargo tree, no build)"
scripts/check-portable.sh
echo "== the broker's module graph (no import cycle)"
scripts/broker-imports.sh
echo "== the image's dependency stage prepares (cargo-chef, no image build)"
scripts/check-image-recipe.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo doc (no warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

echo "== tests"
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
