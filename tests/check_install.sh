#!/bin/sh
# Install into a scratch DESTDIR and use the result as a user would: the installed
# `ksf` must start without LD_LIBRARY_PATH (it finds libksf through its $ORIGIN rpath,
# whatever --prefix was), and a program must build from pkg-config's flags.
# Usage: check_install.sh BUILD_DIR PREFIX LIBDIR README_SAMPLE_C
set -eu
build=$1 prefix=$2 libdir=$3 sample=$4
case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --no-rebuild --destdir "$dest" >"$dest/install.log" 2>&1 ||
    { cat "$dest/install.log"; exit 1; }
root=$dest$prefix
for f in "$root/bin/ksf" "$root/include/ksf/ksf.h" "$dest$libdir/pkgconfig/ksf.pc"; do
    [ -e "$f" ] || { echo "not installed: $f"; exit 1; }
done
env -u LD_LIBRARY_PATH "$root/bin/ksf" --help >/dev/null ||
    { echo "the installed ksf does not start without LD_LIBRARY_PATH"; exit 1; }
# pkg-config's flags point at $prefix; the files are under $dest for now.
export PKG_CONFIG_SYSROOT_DIR=$dest PKG_CONFIG_PATH=$dest$libdir/pkgconfig
${CC:-cc} -o "$dest/hero" "$sample" $(pkg-config --cflags --libs ksf) ||
    { echo "the README sample does not build with pkg-config --cflags --libs ksf"; exit 1; }
echo "installed and usable under $prefix"
