#!/usr/bin/env bash
# Build the vdisk benchmark corpus ONCE (steps whose outputs exist are skipped).
#
#   benches/make-corpus.sh [DIR]        # DIR defaults to $VDISK_BENCH_DIR, then /work/bench-corpus
#
# Produces in DIR:
#   disk.raw            4 GiB GPT disk (sparse file): 128 MiB FAT32 EFI partition + ext4 root holding
#                       ~1.2 GiB of real files copied from this machine's /usr
#   disk.qcow2          qemu-img convert -O qcow2
#   disk-zlib.qcow2     qemu-img convert -O qcow2 -c                    (deflate clusters)
#   disk-zstd.qcow2     qemu-img convert -O qcow2 -c -o compression_type=zstd
#   disk.vmdk           qemu-img convert -O vmdk  (monolithicSparse)
#   disk-stream.vmdk    qemu-img convert -O vmdk -o subformat=streamOptimized
#   disk.vdi            qemu-img convert -O vdi
#   disk-luks.qcow2     qemu-img convert -O qcow2 -o encrypt.format=luks (password "bench",
#                       AES-256-XTS, PBKDF2 for 100 ms)
#   sparse-1t.qcow2     1 TiB virtual qcow2 holding 16 MiB of data (two 8 MiB patterned runs)
#   random-1g.raw       1 GiB of /dev/urandom (incompressible raw->raw case)
# Needs: qemu-img, qemu-io, sfdisk (fdisk), mkfs.ext4 (e2fsprogs), mkfs.vfat (dosfstools), mcopy (mtools).
# Missing Debian packages are apt-get installed when run as root.
set -euo pipefail

DIR=${1:-${VDISK_BENCH_DIR:-/work/bench-corpus}}
ROOT_DATA_BYTES=${ROOT_DATA_BYTES:-$((1200 * 1024 * 1024))}   # ~1.2 GiB of /usr files in the ext4 root
DISK_BYTES=$((4 * 1024 * 1024 * 1024))
SECTOR=512
EFI_START=2048                         # 1 MiB
EFI_SECTORS=$((128 * 1024 * 2))        # 128 MiB
ROOT_START=$((EFI_START + EFI_SECTORS)) # 129 MiB
# Leave room for the backup GPT (33 sectors) and keep the ext4 size a multiple of 4 KiB.
ROOT_SECTORS=$(( ((DISK_BYTES / SECTOR - 34 - ROOT_START) / 8) * 8 ))

repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
case "$DIR/" in "$repo"/*) echo "refusing to build the corpus inside the repository ($DIR)" >&2; exit 1;; esac
cd "$DIR"

need() { # need COMMAND DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing $2 (for $1)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
    fi
    command -v "$1" >/dev/null 2>&1 || { echo "missing $1 (Debian package $2)" >&2; exit 1; }
}
need qemu-img qemu-utils
need qemu-io qemu-utils
need sfdisk fdisk
need mkfs.ext4 e2fsprogs
need mkfs.vfat dosfstools
need mcopy mtools

step() { echo "== $(date +%T) $*"; }

if [ ! -f disk.raw ]; then
    work=$(mktemp -d "$DIR/.build.XXXXXX")
    trap 'rm -rf "$work"' EXIT

    step "EFI: 128 MiB FAT32 with boot files"
    mkfs.vfat -F 32 -n EFI -C "$work/efi.img" $((EFI_SECTORS / 2)) >/dev/null
    mmd -i "$work/efi.img" ::/EFI ::/EFI/BOOT ::/EFI/debian
    # A few real binaries stand in for a bootloader and kernels (~20 MiB).
    n=0
    for f in /usr/bin/* ; do
        [ -f "$f" ] && [ ! -L "$f" ] || continue
        mcopy -i "$work/efi.img" "$f" "::/EFI/debian/$(basename "$f")" 2>/dev/null || true
        n=$((n + $(stat -c %s "$f")))
        [ $n -lt $((20 * 1024 * 1024)) ] || break
    done
    mcopy -i "$work/efi.img" /usr/bin/bash ::/EFI/BOOT/BOOTX64.EFI

    step "root: ~$((ROOT_DATA_BYTES >> 20)) MiB of /usr files (sorted list, deterministic on one machine)"
    mkdir "$work/root"
    find /usr -xdev -type f -readable -printf '%s\t%p\n' | sort -t$'\t' -k2 |
        awk -F'\t' -v max="$ROOT_DATA_BYTES" 'full { next } tot + $1 > max { full = 1; next } { tot += $1; print $2 }' >"$work/files"
    # Hard links when /usr and DIR share a file system (no copy), real copies otherwise.
    if ! xargs -d '\n' -a "$work/files" cp -l --parents -t "$work/root" 2>/dev/null; then
        rm -rf "$work/root"; mkdir "$work/root"
        xargs -d '\n' -a "$work/files" cp -a --parents -t "$work/root"
    fi
    du -sh "$work/root"

    step "root: mkfs.ext4 -d on a $((ROOT_SECTORS * SECTOR >> 20)) MiB partition image"
    truncate -s $((ROOT_SECTORS * SECTOR)) "$work/root.img"
    mkfs.ext4 -q -F -L root -d "$work/root" "$work/root.img"

    step "disk: GPT with sfdisk, partitions written in place"
    truncate -s $DISK_BYTES "$work/disk.raw"
    sfdisk -q "$work/disk.raw" <<SFDISK
label: gpt
start=$EFI_START, size=$EFI_SECTORS, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System"
start=$ROOT_START, size=$ROOT_SECTORS, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"
SFDISK
    dd if="$work/efi.img" of="$work/disk.raw" bs=1M seek=$((EFI_START * SECTOR >> 20)) conv=notrunc,sparse status=none
    dd if="$work/root.img" of="$work/disk.raw" bs=1M seek=$((ROOT_START * SECTOR >> 20)) conv=notrunc,sparse status=none
    sfdisk -l "$work/disk.raw"
    mv "$work/disk.raw" disk.raw
    rm -rf "$work"; trap - EXIT
fi

conv() { # conv OUTPUT qemu-img-convert-args...
    local out=$1; shift
    [ -f "$out" ] && return 0
    step "qemu-img convert $* disk.raw $out"
    qemu-img convert "$@" disk.raw "$out.tmp"
    mv "$out.tmp" "$out"
}
conv disk.qcow2       -O qcow2
conv disk-zlib.qcow2  -O qcow2 -c
conv disk-zstd.qcow2  -O qcow2 -c -o compression_type=zstd
conv disk.vmdk        -O vmdk
conv disk-stream.vmdk -O vmdk -o subformat=streamOptimized
conv disk.vdi         -O vdi
conv disk-luks.qcow2  -O qcow2 --object secret,id=bench0,data=bench \
    -o encrypt.format=luks,encrypt.key-secret=bench0,encrypt.iter-time=100

if [ ! -f sparse-1t.qcow2 ]; then
    step "sparse-1t.qcow2: 1 TiB virtual, 16 MiB of data"
    qemu-img create -q -f qcow2 sparse-1t.qcow2.tmp 1T
    qemu-io -f qcow2 -c "write -P 0x5a 0 8M" -c "write -P 0xa5 512G 8M" sparse-1t.qcow2.tmp >/dev/null
    mv sparse-1t.qcow2.tmp sparse-1t.qcow2
fi
if [ ! -f random-1g.raw ]; then
    step "random-1g.raw: 1 GiB from /dev/urandom"
    head -c 1G /dev/urandom >random-1g.raw.tmp
    mv random-1g.raw.tmp random-1g.raw
fi

step "corpus ready in $DIR"
ls -ls "$DIR"
