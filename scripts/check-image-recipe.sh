#!/usr/bin/env bash
# Checks deploy/cloudrun/Dockerfile's dependency stage without building the
# image (that needs registry images and 10-20 minutes of compiling):
#
# 1. The build context is this checkout filtered by Dockerfile.dockerignore,
#    and Cloud Build's upload (.gcloudignore) holds the same files outside
#    deploy/.
# 2. In a copy of that context, `cargo chef prepare` writes the recipe as
#    the Dockerfile's planner does; `cargo chef cook --no-build`, with the
#    Dockerfile's flags, recreates from it the skeleton the builder compiles.
# 3. In the skeleton and in the context, cargo plans `cargo build` with the
#    Dockerfile's flags against the lock file, which loads every manifest and
#    target (a target without its stand-in fails here, as the hand-written
#    skeleton's benches did). The skeleton must build every dependency as
#    the real build does (or the cached layer would not serve it) and have
#    the context's targets; the Dockerfile must copy the binary from the
#    profile's directory.
#
# The version of cargo-chef and the build flags are read from the Dockerfile,
# so this checks what the image runs. cargo-chef is installed into
# ~/.cargo/bin once (1.5 to 2.5 minutes on 2 cores); a run after that takes
# about 2 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

dockerfile=deploy/cloudrun/Dockerfile
# The default of an `ARG NAME=value` line, quotes removed.
dockerfile_arg() {
    local value
    value=$(sed -n "s/^ARG $1=//p" "$dockerfile")
    [ -n "$value" ] || { echo "error: no 'ARG $1=' in $dockerfile" >&2; exit 1; }
    value=${value#\"}
    echo "${value%\"}"
}
chef_version=$(dockerfile_arg CARGO_CHEF_VERSION)
flags=$(dockerfile_arg BUILD_FLAGS)
read -r -a build_flags <<<"$flags"

if [ "$(cargo chef --version 2>/dev/null)" != "cargo-chef-chef $chef_version" ]; then
    echo "installing cargo-chef $chef_version (as the Dockerfile does)"
    cargo install cargo-chef --locked --quiet --version "$chef_version"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/context" "$work/skeleton"

# What a build from this checkout sends: tracked and untracked files that git
# does not ignore. Cloud Build's upload is those less .gcloudignore's matches
# (gitignore syntax, so git itself matches them).
git ls-files -z --cached --others --exclude-standard >"$work/files"
git ls-files -z --cached --others --ignored \
    --exclude-from=deploy/cloudrun/.gcloudignore >"$work/gcloud-ignored"
python3 - "$dockerfile.dockerignore" "$work/files" "$work/gcloud-ignored" \
    "$work/context" <<'EOF'
"""Copies the Docker build context, checking it against Cloud Build's upload.

Docker's ignore-file rules (moby/patternmatcher): patterns are cleaned paths
from the context root; `*` and `?` stay within one path segment, `**` spans
any; a pattern matching a directory matches everything under it; the last
matching pattern decides, and one starting with `!` keeps the file.
"""
import os
import posixpath
import re
import shutil
import sys

ignore_file, files_list, gcloud_ignored_list, dest = sys.argv[1:]


def compile_pattern(pattern):
    if "[" in pattern or "\\" in pattern:
        sys.exit(f"error: {ignore_file}: this check does not support '{pattern}'")
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex + r"\Z")


rules = []
with open(ignore_file) as f:
    for line in f:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((keep, compile_pattern(pattern)))


def sent(path):
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    decision = True
    for keep, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            decision = keep
    return decision


def read_paths(name):
    with open(name, "rb") as f:
        return {p.decode() for p in f.read().split(b"\0") if p}


files = {p for p in read_paths(files_list) if os.path.isfile(p)}
context = {p for p in files if sent(p)}
uploaded = files - read_paths(gcloud_ignored_list)
outside_deploy = lambda paths: {p for p in paths if not p.startswith("deploy/")}
differ = sorted(outside_deploy(context ^ uploaded))
if differ:
    print(
        "error: Dockerfile.dockerignore and .gcloudignore disagree (outside deploy/):",
        *(f"  {p}: {'docker' if p in context else 'gcloud'} only" for p in differ),
        sep="\n",
        file=sys.stderr,
    )
    sys.exit(1)
for path in context:
    os.makedirs(os.path.join(dest, os.path.dirname(path)), exist_ok=True)
    shutil.copy2(path, os.path.join(dest, path))
EOF

# The targets of the workspace in $1, each as "package kind name path-in-package".
targets() {
    (cd "$1" && cargo metadata --locked --no-deps --format-version 1) | python3 -c '
import json, os, sys
for package in json.load(sys.stdin)["packages"]:
    root = os.path.dirname(package["manifest_path"])
    for target in package["targets"]:
        path = os.path.relpath(target["src_path"], root)
        print(package["name"], "/".join(target["kind"]), target["name"], path)
' | sort
}

# The planner's and the builder's first steps, as in the Dockerfile.
(cd "$work/context" && cargo chef prepare --recipe-path "$work/recipe.json")
(cd "$work/skeleton" && cp "$work/recipe.json" . &&
    cargo chef cook --recipe-path recipe.json "${build_flags[@]}" --no-build)

# The build's plan in each tree: cargo resolves the profile, the binary and
# the lock file and lists every unit it would compile, compiling none. Stable
# cargo has no dry run; --unit-graph is its unstable equivalent.
for tree in skeleton context; do
    (cd "$work/$tree" && RUSTC_BOOTSTRAP=1 cargo build "${build_flags[@]}" \
        -Z unstable-options --unit-graph >"$work/$tree-units")
done
# The dependency layer is reused only if the skeleton's build compiles every
# dependency exactly as the real build does (same features, same profile).
python3 - "$work/skeleton-units" "$work/context-units" <<'EOF'
import json, sys

def dependencies(name):
    with open(name) as f:
        units = json.load(f)["units"]
    return {
        json.dumps([u["pkg_id"], u["target"], u["profile"], u["mode"], u["features"],
                    u["platform"]], sort_keys=True)
        for u in units if not u["pkg_id"].startswith("path+")
    }

skeleton, context = map(dependencies, sys.argv[1:])
if skeleton != context:
    print("error: the skeleton builds dependencies unlike the real build;",
          "only in the real build:", *sorted(context - skeleton)[:5],
          "only in the skeleton:", *sorted(skeleton - context)[:5], sep="\n", file=sys.stderr)
    sys.exit(1)
EOF
# `cargo metadata` skips a target whose file is missing; compare the lists.
targets "$work/context" >"$work/context-targets"
targets "$work/skeleton" >"$work/skeleton-targets"
if ! diff -u --label context --label skeleton \
    "$work/context-targets" "$work/skeleton-targets" >&2; then
    echo "error: the skeleton's targets differ from the context's" >&2
    exit 1
fi
# The Dockerfile copies the binary from the profile's directory.
read -r units profile < <(python3 -c '
import json, sys
units = json.load(sys.stdin)["units"]
[profile] = {u["profile"]["name"] for u in units if u["target"]["name"] == "labrelay"}
print(len(units), profile)
' <"$work/context-units")
grep -q "cp target/$profile/labrelay " "$dockerfile" ||
    { echo "error: $dockerfile does not copy target/$profile/labrelay" >&2; exit 1; }
echo "ok: the image's dependency stage prepares" \
    "($(wc -l <"$work/context-targets") targets, $units units to build)"
