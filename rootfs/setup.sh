#!/bin/sh
# Finishes a stack root filesystem; run on the host as root, after the
# packages are in place (mmdebstrap customize hook, or right after the
# busybox tree is laid out).
#   setup.sh ROOT CA_DIR
# ROOT: the stack tree. CA_DIR: a directory of extra *.crt CA certificates
# to trust inside the stack (may be empty).
set -eu
root=$1
ca_dir=$2

# The unprivileged account builds and apps run as. uid/gid 10000: above
# Debian's system (<1000) ranges and clear of the first human accounts of a
# host, so files it leaves in host-visible cache dirs belong to nobody real.
uid=10000
shell=/bin/sh
[ -x "$root/bin/bash" ] && shell=/bin/bash
grep -q '^slipway:' "$root/etc/passwd" ||
    echo "slipway:x:$uid:$uid:slipway app user:/app:$shell" >>"$root/etc/passwd"
grep -q '^slipway:' "$root/etc/group" ||
    echo "slipway:x:$uid:" >>"$root/etc/group"
if [ -f "$root/etc/shadow" ] && ! grep -q '^slipway:' "$root/etc/shadow"; then
    # '!' : no password login, ever.
    echo 'slipway:!:19000:0:99999:7:::' >>"$root/etc/shadow"
fi

# /app: the build dir and, at run time, where the slug is mounted.
mkdir -p "$root/app" "$root/tmp"
chown "$uid:$uid" "$root/app"
chmod 0755 "$root/app"
chmod 1777 "$root/tmp"

# Hostname-independent: the runtime sets the hostname and mounts its own
# /etc/hosts and /etc/resolv.conf; keep plain files here as mount targets
# instead of copies of the build host's.
rm -f "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
rm -f "$root/etc/resolv.conf"
: >"$root/etc/resolv.conf"

# Extra CA certificates of the host (a corporate or egress proxy that
# intercepts TLS): without them pip, npm and go cannot reach registries.
if [ -x "$root/usr/sbin/update-ca-certificates" ]; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    for crt in "$ca_dir"/*.crt; do
        [ -f "$crt" ] || continue
        cp "$crt" "$root/usr/local/share/ca-certificates/"
    done
    chroot "$root" /usr/sbin/update-ca-certificates --fresh >/dev/null
fi

# Space: apt lists and the package cache are not needed in a stack that is
# never upgraded in place (a changed recipe builds a new stack).
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb
