#!/usr/bin/env bash
# Build cpsysd's .deb and the example app's .deb from a clean copy of the checkout's HEAD
# (`git archive`: uncommitted changes are not in it, exactly like a fresh clone), with
# Debian's own toolchain and python3, and leave the .deb files in dist/ (or in $1).
#
#   packaging/build-debs.sh [OUTDIR]        (`just deb`)
#
# Env: CPSYSD_DEB_REF=<git ref> builds another commit (default HEAD).
# The example's maintainer scripts are written by `cpsysd debian` (run from the same clean copy
# with Debian's /usr/bin/python3), as an app's own package build would run it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
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
git -C "$repo" archive --format=tar "$ref" | tar -x -C "$src"
[ -d "$src/packaging/debian" ] || { echo "build-debs: $ref has no packaging/debian" >&2; exit 1; }

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
    --package cpsysd-hello -o "$app/debian"
  build "$app"
fi

mkdir -p "$out"
cp "$work"/*.deb "$out"/
for deb in "$work"/*.deb; do echo "$out/${deb##*/}"; done
