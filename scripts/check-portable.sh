#!/usr/bin/env bash
# Fails, naming the crate, if a Linux-only crate is in the normal dependency
# tree of the given packages (default: `labrelay`, the shipped binary, and
# `labrelay-bench`) for macOS or Windows. `cargo tree` resolves for a target
# without building, so this needs neither that target's standard library nor
# a Mac.
set -euo pipefail
cd "$(dirname "$0")/.."

# Crates that compile, or work, only on Linux.
LINUX_ONLY=(inotify inotify-sys procfs procfs-core io-uring tokio-uring landlock)
# Crates whose build needs a POSIX toolchain (jemalloc's configure script),
# which MSVC targets do not have.
NOT_MSVC=(tikv-jemalloc-sys)
TARGETS=(aarch64-apple-darwin x86_64-apple-darwin x86_64-pc-windows-msvc)
PACKAGES=("$@")
[ ${#PACKAGES[@]} -gt 0 ] || PACKAGES=(labrelay labrelay-bench)

failed=0
for package in "${PACKAGES[@]}"; do
    clean=1
    for target in "${TARGETS[@]}"; do
        crates=$(cargo tree --locked -p "$package" --target "$target" -e normal \
            --prefix none --format '{p}' | awk '{print $1}' | sort -u)
        unportable=("${LINUX_ONLY[@]}")
        [[ "$target" != *-msvc ]] || unportable+=("${NOT_MSVC[@]}")
        for crate in "${unportable[@]}"; do
            if grep -qx -- "$crate" <<<"$crates"; then
                echo "error: $package depends on $crate, which does not build for $target:" >&2
                cargo tree --locked -p "$package" --target "$target" -e normal \
                    -i "$crate" --depth 3 >&2 || true
                clean=0
                failed=1
            fi
        done
    done
    if [ "$clean" -eq 1 ]; then
        echo "$package: every dependency builds for ${TARGETS[*]}"
    fi
done
exit "$failed"
