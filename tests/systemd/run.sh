#!/usr/bin/env bash
# The installed service under a real systemd, on the kernels users run.
#
# Boots a Debian bookworm guest (systemd 252) under qemu once per kernel,
# installs the .deb in it as a user would, and runs tests/systemd/guest.sh
# there: the service alone, beside auditd.service, and as auditd's plugin.
# The guest writes its verdict to a disk of its own and powers off; this
# script prints the guest's log and exits non-zero if any kernel failed.
#
#   bash tests/systemd/run.sh [DEB]        (root; DEB defaults to the newest
#                                           target/debian/mapwatch_*.deb)
#   KERNELS="bullseye bookworm" DEPLOYMENTS="alone" bash tests/systemd/run.sh
#
# What can be cached is, under $MAPWATCH_VM_CACHE (/var/cache/mapwatch-vm):
# the apt lists and kernel packages of each suite, the root filesystem, and
# the root image with every tested kernel's modules, keyed by this recipe and
# the kernel versions. A guest writes to a temporary overlay of that image
# (qemu's snapshot=on), so every kernel starts from the same clean machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${MAPWATCH_VM_CACHE:-/var/cache/mapwatch-vm}
# Suites whose linux-image-amd64 is tested: 5.10, 6.1, 6.12, the newest.
read -r -a suites <<<"${KERNELS:-bullseye bookworm trixie sid}"
# One guest's whole run (boot, three deployments, power-off) under TCG takes
# a few minutes; this bounds a hung guest.
guest_timeout=${GUEST_TIMEOUT:-900}
# Packages of the guest beyond debootstrap's minbase. Changing this list (or
# the recipe below) changes the cache key.
guest_packages=systemd,systemd-sysv,udev,kmod,initramfs-tools,auditd,procps,util-linux,e2fsprogs,dbus
recipe_version=1

fail() { echo "systemd test FAILED: $*" >&2; exit 1; }
step() { echo "== $*"; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (debootstrap, chroot, mke2fs -d of a root filesystem)"
for tool in qemu-system-x86_64 debootstrap mke2fs debugfs dpkg-deb apt-get; do
    command -v "$tool" >/dev/null ||
        fail "$tool not found: apt-get install -y qemu-system-x86 debootstrap e2fsprogs"
done

deb=${1:-$(ls -t "$repo"/target/debian/mapwatch_*.deb 2>/dev/null | head -1)}
[ -f "$deb" ] || fail "no .deb: build it first (README, Install) or pass its path"

mkdir -p "$cache"
work=$(mktemp -d /var/tmp/mapwatch-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- kernels: Debian's linux-image-amd64 of each suite ------------------------
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
apt_in() { # SUITE apt-get|apt-cache ARGS...
    local root=$cache/apt/$1 tool=$2
    shift 2
    "$tool" -q -o Dir::State::Lists="$root/lists" -o Dir::Etc::SourceList="$root/sources.list" \
        -o Dir::Etc::SourceParts=/nonexistent -o Dir::Cache="$root/cache" \
        -o Dir::State::status=/dev/null -o APT::Architecture=amd64 -o APT::Sandbox::User=root "$@"
}
kernel_packages() { # SUITE -> a folder with the kernel's packages, downloaded
    local suite=$1 root=$cache/apt/$1 security=""
    mkdir -p "$root/lists/partial" "$root/cache/archives/partial" "$root/debs"
    case $suite in bullseye | bookworm | trixie) security="$suite-security" ;; esac
    {
        echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main"
        [ -z "$security" ] || echo "deb [signed-by=$keyring] http://deb.debian.org/debian-security $security main"
    } >"$root/sources.list"
    apt_in "$suite" apt-get update >"$root/update.log" 2>&1 || { cat "$root/update.log" >&2; fail "apt-get update for $suite"; }
    local package
    package=$(apt_in "$suite" apt-cache depends linux-image-amd64 |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1)
    [ -n "$package" ] || fail "no linux-image package in $suite"
    # Newer kernels split the image: the kernel and its modules are packages
    # of their own (linux-binary-*, linux-modules-*) of the same version.
    local parts
    parts=$(apt_in "$suite" apt-cache depends "$package" |
        sed -n 's/^ *Depends: \(linux-\(binary\|modules\|base\)-[0-9][^ ]*\)$/\1/p')
    mkdir -p "$root/debs/$package"
    if [ ! -f "$root/debs/$package/.complete" ]; then
        # shellcheck disable=SC2086 # one word per package
        (cd "$root/debs/$package" && apt_in "$suite" apt-get download "$package" $parts >/dev/null) ||
            fail "downloading $package from $suite"
        touch "$root/debs/$package/.complete"
    fi
    echo "$root/debs/$package"
}

step "kernels: ${suites[*]}"
declare -A kernel_deb kernel_release
for suite in "${suites[@]}"; do
    kernel_deb[$suite]=$(kernel_packages "$suite")
    release=$(basename "${kernel_deb[$suite]}" | sed 's/^linux-image-//')
    kernel_release[$suite]=${release%-unsigned}
    echo "$suite: ${kernel_release[$suite]} ($(cd "${kernel_deb[$suite]}" && echo *.deb))"
done

# --- the root filesystem -----------------------------------------------------
# The check runs as a oneshot unit once the machine is up, then powers off.
guest_unit='[Unit]
Description=mapwatch systemd test (tests/systemd/guest.sh)
After=multi-user.target
[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/bin/sh -c "mkdir -p /mnt/payload && mount /dev/vdb /mnt/payload && exec bash /mnt/payload/guest.sh"
ExecStopPost=/bin/sh -c "sync; umount /mnt/payload; systemctl --no-block poweroff"
[Install]
WantedBy=multi-user.target'

build_rootfs() { # DIR
    local dir=$1
    debootstrap --variant=minbase --include="$guest_packages" bookworm "$dir" http://deb.debian.org/debian \
        >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap"; }
    echo mapwatch-guest >"$dir/etc/hostname"
    printf '/dev/vda / ext4 defaults 0 1\n' >"$dir/etc/fstab"
    # The test decides when auditd runs; nothing else needs to start.
    chroot "$dir" systemctl disable auditd.service >/dev/null 2>&1
    chroot "$dir" systemctl mask serial-getty@ttyS0.service getty@tty1.service \
        systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service >/dev/null 2>&1 || true
    printf '%s\n' "$guest_unit" >"$dir/etc/systemd/system/mapwatch-guest-test.service"
    chroot "$dir" systemctl enable mapwatch-guest-test.service >/dev/null 2>&1
    # Rooms for modules only the tested hardware (virtio) needs.
    printf 'virtio_pci\nvirtio_blk\ncrc32c_generic\next4\n' >>"$dir/etc/initramfs-tools/modules"
    sed -i 's/^MODULES=.*/MODULES=list/' "$dir/etc/initramfs-tools/initramfs.conf"
    rm -rf "$dir/var/cache/apt/archives"/*.deb "$dir/var/lib/apt/lists"/*
}

rootfs_key=$(printf '%s %s %s' "$recipe_version" "$guest_packages" "$guest_unit" | sha256sum | cut -c1-16)
rootfs=$cache/rootfs-$rootfs_key
if [ ! -f "$rootfs/.complete" ]; then
    step "root filesystem (debootstrap bookworm, once)"
    rm -rf "$rootfs" "$rootfs.partial"
    build_rootfs "$rootfs.partial"
    touch "$rootfs.partial/.complete"
    mv "$rootfs.partial" "$rootfs"
fi

# --- the root image: the root filesystem plus every kernel's modules ---------
first_file() { # PATH...: the first that exists
    local path
    for path; do [ -f "$path" ] && { echo "$path"; return; }; done
    true
}
image_key=$( (echo "$rootfs_key"; for s in "${suites[@]}"; do ls "${kernel_deb[$s]}"; done) | sha256sum | cut -c1-16)
image=$cache/root-$image_key.img
boot=$cache/boot-$image_key
if [ ! -f "$image" ]; then
    step "root image with the kernels' modules and initramfs (once per kernel set)"
    stage=$work/stage
    mkdir -p "$stage" "$boot.partial"
    cp -a "$rootfs/." "$stage/"
    rm -f "$stage/.complete"
    for suite in "${suites[@]}"; do
        release=${kernel_release[$suite]}
        unpacked=$work/kernel-$suite
        for part in "${kernel_deb[$suite]}"/*.deb; do dpkg-deb -x "$part" "$unpacked"; done
        # usr-merged or not, the modules go where the guest's kmod looks.
        modules=$(find "$unpacked" -type d -path "*/lib/modules/$release" | head -1)
        [ -n "$modules" ] || fail "no modules for $release in ${kernel_deb[$suite]}"
        # Drivers for hardware this guest does not have: smaller images.
        rm -rf "$modules/kernel/drivers/"{gpu,media,net/wireless,infiniband,staging,iio,hid,usb,bluetooth} "$modules/kernel/sound"
        mkdir -p "$stage/usr/lib/modules"
        cp -a "$modules" "$stage/usr/lib/modules/"
        # /boot/vmlinuz-RELEASE, or (split packages) beside the modules.
        kernel=$(first_file "$unpacked/boot/vmlinuz-$release" "$modules/vmlinuz")
        [ -n "$kernel" ] || fail "no kernel image for $release in ${kernel_deb[$suite]}"
        cp "$kernel" "$boot.partial/vmlinuz-$release"
        # mkinitramfs reads the kernel's configuration (compression support).
        config=$(first_file "$unpacked/boot/config-$release" "$modules/config")
        [ -z "$config" ] || cp "$config" "$stage/boot/config-$release"
        chroot "$stage" depmod -a "$release"
        chroot "$stage" mkinitramfs -o "/boot/initrd.img-$release" "$release" 2>"$work/mkinitramfs.log" ||
            { cat "$work/mkinitramfs.log" >&2; fail "mkinitramfs $release"; }
        mv "$stage/boot/initrd.img-$release" "$boot.partial/"
        rm -rf "$unpacked"
    done
    size_mb=$(( $(du -sm "$stage" | cut -f1) * 3 / 2 + 512 ))
    # ^orphan_file: bullseye's e2fsck (5.10 era) does not know the feature.
    truncate -s "${size_mb}M" "$image.partial"
    mke2fs -q -t ext4 -O ^orphan_file -L root -d "$stage" "$image.partial"
    rm -rf "$stage" "$boot"
    mv "$boot.partial" "$boot"
    mv "$image.partial" "$image"
    # One image is kept: the one of this recipe and kernel set.
    find "$cache" -maxdepth 1 \( -name 'root-*.img' ! -name "root-$image_key.img" -o -name 'boot-*' ! -name "boot-$image_key" \
        -o -name 'rootfs-*' ! -name "rootfs-$rootfs_key" \) -exec rm -rf {} +
fi

# --- the guest's payload: the package and the check --------------------------
payload=$work/payload
mkdir -p "$payload"
cp "$deb" "$payload/mapwatch.deb"
cp "$here/guest.sh" "$payload/guest.sh"
[ -z "${DEPLOYMENTS:-}" ] || echo "$DEPLOYMENTS" >"$payload/deployments"

# KVM where it works; TCG on kvm_pvm (nested virtualisation for PVM guest
# kernels, on which stock Debian kernels hang at boot) or without /dev/kvm.
accel="-accel tcg,thread=multi -cpu max"
if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
    accel="-accel kvm -cpu host"
fi
echo "accelerator: ${accel%% -cpu*}"

failed=()
failures=()
for suite in "${suites[@]}"; do
    release=${kernel_release[$suite]}
    step "guest: $suite, Linux $release"
    results=$work/payload-$suite.img
    truncate -s 64M "$results"
    mke2fs -q -t ext4 -O ^orphan_file -L payload -d "$payload" "$results"
    console=$work/console-$suite.log
    start=$(date +%s)
    # Linux 7.2 (sid, 2026-12) oopses at boot under multi-threaded TCG (an
    # int3 left by its boot-time code patching, hit by the other vCPU);
    # one TCG thread boots it. The older kernels keep both threads.
    guest_accel=$accel
    if [ "${release%%.*}" -ge 7 ]; then
        guest_accel=${accel/thread=multi/thread=single}
    fi
    # shellcheck disable=SC2086 # $guest_accel is several options
    timeout --foreground "$guest_timeout" qemu-system-x86_64 $guest_accel -smp 2 -m 2048 \
        -nodefaults -display none -no-reboot -serial "file:$console" \
        -kernel "$boot/vmlinuz-$release" -initrd "$boot/initrd.img-$release" \
        -append "root=/dev/vda rw console=ttyS0 panic=-1 loglevel=4 systemd.show_status=0" \
        -drive "file=$image,if=virtio,format=raw,snapshot=on" -drive "file=$results,if=virtio,format=raw" ||
        echo "qemu ended with status $? after $(( $(date +%s) - start )) s (timeout $guest_timeout s)"
    echo "guest ran $(( $(date +%s) - start )) s"
    verdict=$(debugfs -R "cat /verdict" "$results" 2>/dev/null || true)
    debugfs -R "cat /guest.log" "$results" 2>/dev/null | sed "s/^/[$suite] /" | tee "$work/guest-$suite.log"
    if [ "$verdict" != pass ]; then
        echo "--- console of the $suite guest (last 60 lines) ---"
        tail -60 "$console"
        failed+=("$suite ($release): ${verdict:-no verdict}")
        # A CI log keeps its tail: each failing check, with what follows
        # it, is repeated at the end.
        failures+=("$(grep -A8 '^\[[a-z]*\] FAIL:' "$work/guest-$suite.log" || echo "[$suite] no failing check in the guest's log")")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    printf '%s\n' "${failures[@]}" >&2
    printf 'failed: %s\n' "${failed[@]}" >&2
    fail "${#failed[@]} of ${#suites[@]} kernels"
fi
echo "systemd test passed on ${#suites[@]} kernels: $(for s in "${suites[@]}"; do printf '%s ' "${kernel_release[$s]}"; done)"
