#!/usr/bin/env bash
# Build cpsysd's .deb and the example app's .deb from a clean copy of the checkout's HEAD
# (`git archive`: uncommitted changes are not in it, exactly like a fresh clone), with
# Debian's own toolchain and python3, and leave the .deb files in dist/ (or in OUTDIR).
#
#   packaging/build-debs.sh [--worktree] [OUTDIR]        (`just deb`)
#
# --worktree: build the working tree's files instead (tracked and untracked, not ignored; what
#             the test suite tests), still copied into a clean directory first.
# Env: CPSYSD_DEB_REF=<git ref> builds another commit (default HEAD).
# The example's maintainer scripts are written by `cpsysd debian` (run from the same clean copy
# with Debian's /usr/bin/python3), as an app's own package build would run it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
worktree=no
if [ "${1:-}" = --worktree ]; then worktree=yes; shift; fi
out=$(realpath -m "${1:-$repo/dist}")
ref=${CPSYSD_DEB_REF:-HEAD}
# The pyenv shims on PATH shadow Debian's python3 (FINDINGS.md): Debian's tools only.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH VIRTUAL_ENV PYTHONHOME

work=$(mktemp -d "${TMPDIR:-/tmp}/cpsysd-debs.XXXXXX")
trap 'rm -rf "$work"' EXIT

version=$(dpkg-parsechangelog -l "$repo/packaging/debian/changelog" -S Version)
src=$work/cpsysd-$version
mkdir -p "$src"
if [ $worktree = yes ]; then
  # Files deleted but not yet committed are skipped (tar would fail on them).
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
    | tar --null --no-recursion -T - -cf -) | tar -x -C "$src"
else
  git -C "$repo" archive --format=tar "$ref" | tar -x -C "$src"
fi
[ -d "$src/packaging/debian" ] || { echo "build-debs: no packaging/debian to build" >&2; exit 1; }

log=$work/build.log
build() {  # DIR: dpkg-buildpackage there; its log is shown only when it fails
  if ! (cd "$1" && dpkg-buildpackage -us -uc -b) >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "build-debs: dpkg-buildpackage failed in ${1#"$work"/}" >&2
    exit 1
  fi
}

# --- cpsysd itself: debian/ goes to the top of the source tree -------------------------------
cp -a "$src/packaging/debian" "$src/debian"
build "$src"

# --- the example app ------------------------------------------------------------------------
ex=$src/packaging/examples/hello
if [ -d "$ex/debian" ]; then
  exver=$(dpkg-parsechangelog -l "$ex/debian/changelog" -S Version)
  app=$work/cpsysd-hello-$exver
  mkdir -p "$app"
  cp -a "$src/examples/hello/." "$app/"
  cp -a "$ex/debian" "$ex/hello.toml" "$app/"
  # The maintainer scripts: generated from the description the package installs.
  PYTHONPATH=$src /usr/bin/python3 -m cpsysd debian -c "$app/hello.toml" \
    --package cpsysd-hello -o "$app/debian" >"$log"
  build "$app"
fi

mkdir -p "$out"
cp "$work"/*.deb "$out"/
for deb in "$work"/*.deb; do echo "$out/${deb##*/}"; done
