#!/usr/bin/env bash
# Builds Sail's three Debian packages from the single executable (`npm run package:deb`):
#
#   sail_VERSION_amd64.deb                /usr/bin/sail, /usr/lib/sail/, the man page
#   sail-node-agent_VERSION_amd64.deb     the agent's unit and config, the sail-proxy user
#   sail-control-plane_VERSION_amd64.deb  the control-plane units, the sail-cp user
#
# Usage: packaging/deb/build.sh [--bin FILE] [--lib DIR] [--out DIR] [--stand-in]
#   --bin FILE   the executable (default dist/sail, made by `npm run package:sea`)
#   --lib DIR    its resource directory, installed as /usr/lib/sail (default dist/lib/sail)
#   --out DIR    where the .deb files go (default dist)
#   --stand-in   FILE is a script standing in for the executable (tests only): the packages
#                say so in their description and must not be installed
#
# Needs dpkg-deb (--root-owner-group, so no fakeroot), gzip, node; dpkg-shlibdeps for the
# executable's library dependencies. The version is package.json's and must match the top entry
# of packaging/deb/changelog. Output is reproducible: file times are the changelog's date.
# Compression is xz level 1: on 2 cores it takes ~15 s for the ~90 MB executable (~25 MB .deb),
# where level 6 takes ~100 s for a .deb 4 MB smaller.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="$ROOT/dist/sail"
LIB="$ROOT/dist/lib/sail"
OUT="$ROOT/dist"
STAND_IN=false
ARCH=amd64

die() {
	echo "package:deb: $*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case "$1" in
	--bin) BIN="${2:?--bin needs a file}"; shift 2 ;;
	--lib) LIB="${2:?--lib needs a directory}"; shift 2 ;;
	--out) OUT="${2:?--out needs a directory}"; shift 2 ;;
	--stand-in) STAND_IN=true; shift ;;
	-h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done

for tool in dpkg-deb gzip node md5sum; do
	command -v "$tool" >/dev/null || die "$tool is not installed"
done
if [ ! -f "$BIN" ]; then
	die "$BIN is missing: build the single executable first with \`npm run package:sea\` (or pass --bin FILE)"
fi
[ -d "$LIB" ] || die "$LIB is missing: \`npm run package:sea\` makes it beside the executable (or pass --lib DIR)"
IS_ELF=false
if [ "$(head -c 4 "$BIN" | od -An -c | tr -d ' ')" = '177ELF' ]; then IS_ELF=true; fi
if ! $IS_ELF && ! $STAND_IN; then
	die "$BIN is not an ELF executable; pass --stand-in if it is a test stand-in"
fi

VERSION="$(node -p "require('$ROOT/package.json').version")"
CHANGELOG_TOP="$(head -n 1 "$HERE/changelog")"
CHANGELOG_VERSION="$(sed -n '1s/^sail (\([^)]*\)).*/\1/p' "$HERE/changelog")"
[ "$CHANGELOG_VERSION" = "$VERSION" ] ||
	die "package.json is at $VERSION but packaging/deb/changelog starts with '$CHANGELOG_TOP': add a changelog entry for $VERSION"
# The maintainer and the date of the top entry ("-- NAME <EMAIL>  DATE").
TRAILER="$(grep -m 1 '^ -- ' "$HERE/changelog")"
MAINTAINER="${TRAILER#' -- '}"
MAINTAINER="${MAINTAINER%%>*}>"
SOURCE_DATE_EPOCH="$(date -d "${TRAILER##*>  }" +%s)"
export SOURCE_DATE_EPOCH

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sail-deb.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

# --- helpers ---------------------------------------------------------------------------------

# doc_files PKG: /usr/share/doc/PKG/{copyright,changelog.gz}. The packages are native (Sail
# packages itself; the version has no Debian revision), hence changelog.gz.
doc_files() {
	local pkg="$1" doc="$WORK/$1/usr/share/doc/$1"
	install -d -m 0755 "$doc"
	node "$HERE/copyright.js" "$pkg" ${NODE_LICENSE:+"$NODE_LICENSE"} >"$doc/copyright"
	gzip -9n <"$HERE/changelog" >"$doc/changelog.gz"
	chmod 0644 "$doc/copyright" "$doc/changelog.gz"
}

# lintian_overrides PKG: installs packaging/deb/PKG/lintian-overrides when there is one.
lintian_overrides() {
	local src="$HERE/$1/lintian-overrides"
	[ -f "$src" ] || return 0
	install -D -m 0644 "$src" "$WORK/$1/usr/share/lintian/overrides/$1"
}

# control PKG DEPENDS SYNOPSIS: writes DEBIAN/control from packaging/deb/PKG/description.
control() {
	local pkg="$1" depends="$2" synopsis="$3" dir="$WORK/$1"
	local size
	size="$(du -sk --exclude=DEBIAN "$dir" | cut -f1)"
	install -d -m 0755 "$dir/DEBIAN"
	{
		echo "Package: $pkg"
		echo "Source: sail"
		echo "Version: $VERSION"
		echo "Architecture: $ARCH"
		echo "Maintainer: $MAINTAINER"
		echo "Installed-Size: $size"
		if [ -n "$depends" ]; then echo "Depends: $depends"; fi
		echo "Section: net"
		echo "Priority: optional"
		echo "Description: $synopsis"
		if $STAND_IN; then
			echo " STAND-IN BUILD FOR TESTS: /usr/bin/sail is a script, not the executable."
			echo " Do not install this package."
			echo " ."
		fi
		sed -e 's/^$/./' -e 's/^/ /' "$HERE/$pkg/description"
	} >"$dir/DEBIAN/control"
}

# maintainer_scripts PKG: DEBIAN/{postinst,prerm,postrm} and conffiles when the package has them.
maintainer_scripts() {
	local pkg="$1" f
	for f in postinst prerm postrm; do
		if [ -f "$HERE/$pkg/$f" ]; then install -m 0755 "$HERE/$pkg/$f" "$WORK/$pkg/DEBIAN/$f"; fi
	done
	chmod 0644 "$WORK/$pkg/DEBIAN/control"
	# Every file under /etc is a conffile (what dh_installdeb does).
	if [ -d "$WORK/$pkg/etc" ]; then
		(cd "$WORK/$pkg" && find etc -type f | sort | sed 's|^|/|') >"$WORK/$pkg/DEBIAN/conffiles"
		chmod 0644 "$WORK/$pkg/DEBIAN/conffiles"
	fi
}

# build PKG: md5sums, times, then dpkg-deb.
build() {
	local pkg="$1" dir="$WORK/$1"
	(cd "$dir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
		xargs -0 -r md5sum >DEBIAN/md5sums)
	chmod 0644 "$dir/DEBIAN/md5sums"
	find "$dir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	dpkg-deb --root-owner-group -Zxz -z1 --build "$dir" "$OUT/${pkg}_${VERSION}_${ARCH}.deb" >/dev/null
	echo "built $OUT/${pkg}_${VERSION}_${ARCH}.deb"
}

# --- sail: the executable --------------------------------------------------------------------

P="$WORK/sail"
install -d -m 0755 "$P/usr/bin" "$P/usr/lib/sail" "$P/usr/share/man/man1"
install -m 0755 "$BIN" "$P/usr/bin/sail"
cp -R "$LIB/." "$P/usr/lib/sail/"
find "$P/usr/lib/sail" -type d -exec chmod 0755 {} +
find "$P/usr/lib/sail" -type f -exec chmod 0644 {} +
# The native addon like dh_strip would (the executable is not stripped: its SEA blob is a note).
if command -v strip >/dev/null; then
	find "$P/usr/lib/sail" -type f -name '*.node' -exec strip --strip-unneeded \
		--remove-section=.comment --remove-section=.note {} +
fi
sed "s/^\.TH SAIL 1 \"\([^\"]*\)\" \"sail [^\"]*\"/.TH SAIL 1 \"\1\" \"sail $VERSION\"/" "$HERE/sail.1" |
	gzip -9n >"$P/usr/share/man/man1/sail.1.gz"
chmod 0644 "$P/usr/share/man/man1/sail.1.gz"
NODE_LICENSE=""
for f in /usr/share/doc/nodejs/LICENSE "$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")/share/doc/node/LICENSE"; do
	if [ -f "$f" ]; then NODE_LICENSE="$f"; break; fi
done
doc_files sail
if [ -n "$NODE_LICENSE" ]; then
	install -m 0644 "$NODE_LICENSE" "$P/usr/share/doc/sail/NODE-LICENSE"
	gzip -9n "$P/usr/share/doc/sail/NODE-LICENSE"
fi
lintian_overrides sail

# Library dependencies of the executable and the addon, as dpkg-shlibdeps computes them.
DEPENDS=""
mapfile -t elves < <(find "$P/usr" -type f \( -path '*/bin/*' -o -name '*.node' \) \
	-exec sh -c 'head -c 4 "$1" | grep -q "^.ELF"' sh {} \; -print)
if [ "${#elves[@]}" -gt 0 ]; then
	command -v dpkg-shlibdeps >/dev/null ||
		die "dpkg-shlibdeps is not installed (package dpkg-dev): it computes the Depends of ${elves[*]}"
	mkdir -p "$WORK/shlibs/debian"
	printf 'Source: sail\n\nPackage: sail\nArchitecture: %s\n' "$ARCH" >"$WORK/shlibs/debian/control"
	DEPENDS="$(cd "$WORK/shlibs" && dpkg-shlibdeps -O "${elves[@]}" 2>/dev/null |
		sed -n 's/^shlibs:Depends=//p')"
	[ -n "$DEPENDS" ] || die "dpkg-shlibdeps found no library dependencies of ${elves[*]}"
fi
control sail "$DEPENDS" "service mesh for virtual machines: the sail command"
maintainer_scripts sail
build sail

# --- sail-node-agent -------------------------------------------------------------------------

P="$WORK/sail-node-agent"
install -d -m 0755 "$P/etc/sail" "$P/lib/systemd/system"
# The conffile: the commented sample, marked as not joined yet (`sail join` replaces it).
{
	echo "# sail-node-agent: packaged sample, this host has not joined yet. \`sail join\` replaces this file."
	cat "$ROOT/packaging/node-agent.yaml"
} >"$P/etc/sail/node-agent.yaml"
chmod 0644 "$P/etc/sail/node-agent.yaml"
install -m 0644 "$ROOT/systemd/sail-node-agent.service" "$P/lib/systemd/system/"
doc_files sail-node-agent
lintian_overrides sail-node-agent
control sail-node-agent "sail (= $VERSION), iptables, iproute2, adduser" \
	"service mesh for virtual machines: node agent for each host"
maintainer_scripts sail-node-agent
build sail-node-agent

# --- sail-control-plane ----------------------------------------------------------------------

P="$WORK/sail-control-plane"
install -d -m 0755 "$P/etc/default" "$P/lib/systemd/system"
for unit in sail-control-plane sail-ca sail-pilot; do
	install -m 0644 "$ROOT/systemd/$unit.service" "$P/lib/systemd/system/"
	install -m 0644 "$HERE/sail-control-plane/default/$unit" "$P/etc/default/$unit"
done
doc_files sail-control-plane
lintian_overrides sail-control-plane
control sail-control-plane "sail (= $VERSION), adduser" \
	"service mesh for virtual machines: control plane (CA and pilot)"
maintainer_scripts sail-control-plane
build sail-control-plane
