# SPDX-License-Identifier: BSD-3-Clause
# Sourced by the VM tests that boot a whole Debian system (after kernel.sh's
# vm_kernel): vm_rootfs DIR unpacks a Debian 12 root filesystem, built once
# by mmdebstrap from Debian's packages and cached in $VM (so later runs need
# no package registry), into DIR, with $K's modules for $kver (depmod run).
# vm_rootfs_initrd OUT writes an initramfs that mounts /dev/vda as the root
# and runs its $1 (the init to hand over to: systemd, or a test script).
VM_ROOTFS_PKGS=systemd,systemd-sysv,udev,kmod,nbd-client,e2fsprogs,util-linux,fio,libev4,liburing2,libgnutls30,libjson-c5,libmicrohttpd12
vm_rootfs() {
    local dir=$1 rootfs start
    # Named by what it holds: a new package list builds a new one.
    rootfs="$VM/rootfs-bookworm-$(echo "$VM_ROOTFS_PKGS" | md5sum | cut -c1-8).tar"
    if [ ! -s "$rootfs" ]; then
        if ! command -v mmdebstrap >/dev/null; then
            apt-get install -y -q mmdebstrap >/dev/null 2>&1 ||
                skip "mmdebstrap is not installed and the package registry cannot provide it"
        fi
        start=$(date +%s)
        rm -rf "$rootfs.tmp"
        mmdebstrap --variant=minbase --format=tar \
            --include="$VM_ROOTFS_PKGS" \
            --customize-hook='rm -f "$1"/etc/machine-id' bookworm "$rootfs.tmp" \
            >"$T/mmdebstrap.log" 2>&1 ||
            skip "the root filesystem cannot be built (no package registry?): $(tail -n 1 "$T/mmdebstrap.log")"
        mv "$rootfs.tmp" "$rootfs"
        echo "root filesystem built in $(($(date +%s) - start)) s"
    fi
    mkdir -p "$dir"
    tar -xf "$rootfs" -C "$dir" || fail "unpacking the root filesystem"
    mkdir -p "$dir/lib/modules" && cp -a "$K/root/lib/modules/$kver" "$dir/lib/modules/"
    chroot "$dir" /sbin/depmod "$kver" || fail "depmod in the root filesystem"
}
vm_rootfs_initrd() {
    local out=$1 init=$2 I="$T/initramfs" m f
    mkdir -p "$I"/{bin,proc,sys,dev,newroot,lib/modules}
    cp /bin/busybox "$I/bin/busybox"
    for a in sh mount insmod switch_root sleep mkdir; do ln -sf busybox "$I/bin/$a"; done
    for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
        f=$(find "$K/root/lib/modules/$kver" -name "$m.ko*" | head -n 1)
        # Built into the kernel (6.12's cloud kernel has virtio built in): nothing to load.
        grep -q "/$m.ko\$" "$K/root/lib/modules/$kver/modules.builtin" 2>/dev/null && continue
        [ -n "$f" ] || fail "module $m not in the kernel package"
        case "$f" in
        *.xz) xz -dc "$f" >"$I/lib/modules/$m.ko" ;;
        *.zst) zstd -qdc "$f" >"$I/lib/modules/$m.ko" ;;
        *) cp "$f" "$I/lib/modules/$m.ko" ;;
        esac
    done
    cat >"$I/init" <<EOI
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    [ -f /lib/modules/\$m.ko ] || continue
    insmod /lib/modules/\$m.ko
done
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    [ -b /dev/vda ] && break
    sleep 0.2
done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initramfs: no root"; exec sh; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot $init
EOI
    chmod 0755 "$I/init"
    (cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
}
