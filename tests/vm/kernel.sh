# SPDX-License-Identifier: BSD-3-Clause
# Sourced by the VM tests (after tests/interop/lib.bash, with $VM set):
# vm_kernel fetches the newest cloud kernel Debian has with apt-get
# download, unpacks it under $VM (never installs it), and sets $K (its
# unpacked tree), $kver and $vmlinuz; it skips the test when apt knows no
# such kernel and none is cached.
vm_kernel() {
    cloud_kernel() {
        apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'
    }
    pkg=$(cloud_kernel)
    if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
        apt-get update -q >/dev/null 2>&1 || true  # a fresh machine may have no package lists
        pkg=$(cloud_kernel)
    fi
    if [ -z "$pkg" ]; then
        pkg=$(ls "$VM" | sed -n 's/^kernel-//p' | tail -n 1)
        [ -n "$pkg" ] || skip "no linux-image-cloud-amd64 known to apt (run apt-get update)"
    fi
    K="$VM/kernel-$pkg"
    if [ ! -f "$K/done" ]; then
        rm -rf "$K" && mkdir -p "$K"
        (cd "$K" && chmod 777 . && apt-get download "$pkg" >/dev/null 2>&1) || fail "apt-get download $pkg"
        dpkg -x "$K"/*.deb "$K/root" || fail "unpacking $pkg"
        rm -f "$K"/*.deb
        touch "$K/done"
    fi
    kver=$(ls "$K/root/lib/modules")
    vmlinuz=$(ls "$K"/root/boot/vmlinuz-*)
}
