# SPDX-License-Identifier: BSD-3-Clause
# Sourced by the VM tests (after tests/interop/lib.bash, with $VM set):
# vm_kernel fetches the newest cloud kernel Debian has with apt-get
# download, unpacks it under $VM (never installs it), and sets $K (its
# unpacked tree), $kver and $vmlinuz; it skips the test when apt knows no
# such kernel and none is cached. VM_KERNEL names another meta package to
# follow (linux-image-6.12-cloud-amd64: Debian 12's newer kernel).
vm_kernel() {
    cloud_kernel() {
        apt-cache depends "${VM_KERNEL:-linux-image-cloud-amd64}" 2>/dev/null |
            awk '/Depends: linux-image-/ {print $2; exit}'
    }
    pkg=$(cloud_kernel)
    if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
        apt-get update -q >/dev/null 2>&1 || true  # a fresh machine may have no package lists
        pkg=$(cloud_kernel)
    fi
    if [ -z "$pkg" ] && [ -z "${VM_KERNEL:-}" ]; then
        pkg=$(ls "$VM" | sed -n 's/^kernel-//p' | grep -v -- '-6\.12' | tail -n 1)
        [ -n "$pkg" ] || skip "no linux-image-cloud-amd64 known to apt (run apt-get update)"
    fi
    [ -n "$pkg" ] || skip "no $VM_KERNEL known to apt (run apt-get update)"
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
