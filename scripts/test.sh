#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: formatting, lints, every test.
# Installs whatever the tests need that the machine may not have.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test dependencies"
# A real SMTP server for the email tests.
python3 -c "import aiosmtpd" 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check aiosmtpd==1.4.6

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
