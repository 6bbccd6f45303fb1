#!/usr/bin/env bash
# Builds small seed corpora for the vdisk fuzz targets with qemu-img / qemu-io (and python3 for the
# compressed-stream seeds) into fuzz/corpus/<target>/. The corpora are not committed (.gitignore).
# Usage: fuzz/make-seeds.sh            (from anywhere; needs qemu-img, qemu-io, python3, zstd)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
corpus="$here/corpus"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in qcow2_header qcow2_tables qcow2_open qcow2_mutate vmdk_header vmdk_descriptor vmdk_open \
    vmdk_extents vdi_header vdi_open vdi_mutate vmdk_mutate vhd_open vhdx_open partitions fs_open ova_open raw_open probe \
    luks_unlock lvm_open; do
    mkdir -p "$corpus/$t"
done

q() { qemu-img "$@" >/dev/null; }
io() { local fmt=$1 img=$2 c; shift 2; for c in "$@"; do qemu-io -f "$fmt" -c "$c" "$img" >/dev/null; done; }
# Patterned data, a hole, explicit zeros and an odd tail: the usual content of every seed image.
fill() {
    local fmt=$1 img=$2 size=$3
    io "$fmt" "$img" "write -P 0xaa 0 4k" "write -P 0x55 12k 8k" "write -z 32k 8k" \
        "write -P 0x11 $((size - 1024)) 1k"
}
add() { # add TARGET FILE [NAME]: copy FILE into the target's corpus
    cp "$2" "$corpus/$1/${3:-$(basename "$2")}"
}
head_of() { # head_of TARGET FILE BYTES: the first BYTES of FILE as a seed
    head -c "$3" "$2" >"$corpus/$1/$(basename "$2").head$3"
}

# ---- qcow2: versions, cluster sizes, extended L2, compression, zero clusters, snapshots, ... ----
qc() { # qc NAME SIZE OPTIONS...
    local name=$1 size=$2
    shift 2
    q create -f qcow2 -o "$*" "$work/$name.qcow2" "$size"
    fill qcow2 "$work/$name.qcow2" "$(numfmt --from=iec "$size")"
}
qc v2-512 256K compat=0.10,cluster_size=512
qc v3-512 256K compat=1.1,cluster_size=512
qc v3-4k 1M cluster_size=4096
qc refcount1 256K cluster_size=512,refcount_bits=1
qc refcount64 256K cluster_size=512,refcount_bits=64
qc lazy 256K cluster_size=512,lazy_refcounts=on
qc ext-l2 1M cluster_size=16384,extended_l2=on
qc prealloc 64K cluster_size=512,preallocation=metadata
qc zstd-hdr 256K cluster_size=512,compression_type=zstd
q create -f qcow2 -o cluster_size=512 "$work/base.qcow2" 256K
qc backing 256K cluster_size=512,backing_file=base.qcow2,backing_fmt=qcow2
q create -f qcow2 -o cluster_size=512,data_file="$work/data.raw" "$work/datafile.qcow2" 256K
# Compressed clusters, zlib and zstd.
for c in zlib zstd; do
    q create -f raw "$work/src.raw" 256K
    io raw "$work/src.raw" "write -P 0x33 0 64k" "write -P 0x44 128k 4k"
    q convert -c -O qcow2 -o cluster_size=4096,compression_type=$c "$work/src.raw" "$work/compressed-$c.qcow2"
done
# Internal snapshots (v3 and v2), with data written after each.
for v in 1.1 0.10; do
    n="snap-$v"
    q create -f qcow2 -o compat=$v,cluster_size=512 "$work/$n.qcow2" 256K
    io qcow2 "$work/$n.qcow2" "write -P 0x01 0 2k"
    q snapshot -c one "$work/$n.qcow2"
    io qcow2 "$work/$n.qcow2" "write -P 0x02 1k 2k"
    q snapshot -c two "$work/$n.qcow2"
    io qcow2 "$work/$n.qcow2" "write -z 0 1k"
done
# A persistent dirty bitmap (header extension + bitmap directory).
q create -f qcow2 -o cluster_size=4096 "$work/bitmap.qcow2" 1M
q bitmap --add "$work/bitmap.qcow2" b0
# Large virtual size with little content: many empty L1 entries.
q create -f qcow2 -o cluster_size=4096 "$work/huge.qcow2" 4G
io qcow2 "$work/huge.qcow2" "write -P 0x77 3G 4k"
# LUKS encryption: the LUKS header (cluster 4) is what an open checks; the key material after it
# is cut off (it reads as zeros, and only a decryption would read it).
q create -f qcow2 --object secret,id=s0,data=seed -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,cluster_size=512 "$work/luks-full.qcow2" 256K
head -c 4096 "$work/luks-full.qcow2" >"$work/luks.qcow2"
rm "$work/luks-full.qcow2"
# luks_unlock: LUKS volumes (header, key material, a few payload sectors) in several ciphers.
mkdir -p "$work/l"
for c in aes-128:xts:plain64:sha256 aes-128:cbc:essiv:sha1 serpent-128:ctr:plain:sha512 \
    twofish-128:ecb:plain64:ripemd160 cast5-128:cbc:plain64:md5; do
    IFS=: read -r alg mode ivgen hash <<<"$c"
    o="key-secret=s0,iter-time=10,cipher-alg=$alg,cipher-mode=$mode,ivgen-alg=$ivgen,hash-alg=$hash"
    [ "$ivgen" = essiv ] && o="$o,ivgen-hash-alg=sha256"
    q create -f luks --object secret,id=s0,data=fuzz -o "$o" "$work/l/$alg-$mode.luks" 64K
    head -c 200000 "$work/l/$alg-$mode.luks" >"$corpus/luks_unlock/$alg-$mode.luks"
done
for f in "$work"/*.qcow2; do
    add qcow2_open "$f"
    add probe "$f"
    head_of qcow2_header "$f" 16384
    # qcow2_mutate: an operation byte (each of the 13) and a size byte (7: 32 KiB) before the image.
    for op in $(seq 0 12); do
        { printf "\\$(printf %03o "$op")\\007"; cat "$f"; } \
            >"$corpus/qcow2_mutate/$(basename "$f").op$op"
    done
done

# ---- qcow2_tables: 16 control bytes + a table (snapshot table, L2 words, deflate/zstd streams) ----
be64() { od -An -t u8 --endian=big -j "$2" -N 8 "$1" | tr -d ' '; }
for v in 1.1 0.10; do
    f="$work/snap-$v.qcow2"
    off=$(be64 "$f" 64)
    { printf '\002\000\000\000\003\001\000\000\000\000\000\000\000\000\000\000'; dd if="$f" bs=4096 skip="$off" count=1 iflag=skip_bytes status=none; } \
        >"$corpus/qcow2_tables/snapshots-$v"
done
python3 - "$corpus/qcow2_tables" <<'EOF'
import os, sys, zlib
out = sys.argv[1]
data = bytes([0x33]) * 3000 + bytes(range(256)) * 4 + bytes(72)  # exactly 4 KiB
c = zlib.compressobj(wbits=-12)
deflate = c.compress(data) + c.flush()
ctl = bytes([0, 0, 0, 0, 7, 0, 0, 3, 0]) + bytes(7)  # out = 4 KiB, zlib
open(os.path.join(out, "deflate-4k"), "wb").write(ctl + deflate)
bomb = c2 = zlib.compressobj(wbits=-12)
bomb = c2.compress(bytes(1 << 20)) + c2.flush()  # 1 MiB of zeros into a 4 KiB cluster
open(os.path.join(out, "deflate-bomb"), "wb").write(ctl + bomb)
words = b"".join(x.to_bytes(8, "big") for x in [
    0x8000000000010000, 0, 0x4000000000020000 | (3 << 54), 0, 1, 0, 0x8000000000030001, 0xffffffff,
    0x8000000000040000, 0x0000ffff0000ffff, 0, 0xffffffff00000000])
open(os.path.join(out, "l2-words"), "wb").write(bytes([0, 0, 0, 0, 5, 1, 2, 0, 0]) + bytes(7) + words)
EOF
printf '%04096d' 0 | zstd -q -c >"$work/z"
{ printf '\000\000\000\000\007\000\000\003\001\000\000\000\000\000\000\000'; cat "$work/z"; } >"$corpus/qcow2_tables/zstd-4k"
dd if=/dev/zero bs=1M count=1 status=none | zstd -q -c >"$work/zb"
{ printf '\000\000\000\000\007\000\000\003\001\000\000\000\000\000\000\000'; cat "$work/zb"; } >"$corpus/qcow2_tables/zstd-bomb"

# ---- VMDK: every subformat qemu creates, hand-written descriptors, and descriptor + extent ----
vm() { # vm NAME SIZE OPTIONS
    local name=$1 size=$2
    q create -f vmdk -o "$3" "$work/$name.vmdk" "$size"
}
mkdir -p "$work/v"
for sub in monolithicSparse streamOptimized; do
    q create -f raw "$work/src.raw" 1M
    io raw "$work/src.raw" "write -P 0xaa 0 4k" "write -P 0x55 70k 8k" "write -P 0x11 1023k 1k"
    q convert -O vmdk -o subformat=$sub "$work/src.raw" "$work/v/$sub.vmdk"
done
q convert -O vmdk -o subformat=monolithicSparse,compat6=on "$work/src.raw" "$work/v/compat6.vmdk"
q convert -O vmdk -o subformat=monolithicSparse,zeroed_grain=on "$work/src.raw" "$work/v/zeroed.vmdk"
q create -f vmdk -o subformat=monolithicSparse "$work/v/empty.vmdk" 1G
for f in "$work"/v/*.vmdk; do
    add vmdk_open "$f"
    add probe "$f"
    head -c 512 "$f" >"$corpus/vmdk_header/$(basename "$f").header"
    # The embedded descriptor (sector 1 onwards, up to the first NUL).
    dd if="$f" bs=512 skip=1 count=8 status=none | tr -d '\000' >"$corpus/vmdk_descriptor/$(basename "$f").desc"
done
# The stream-optimized footer and end-of-stream marker.
tail -c 1536 "$work/v/streamOptimized.vmdk" >"$corpus/vmdk_header/stream-tail"
for sub in monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
    d="$work/$sub"
    mkdir -p "$d"
    q create -f vmdk -o subformat=$sub "$d/img.vmdk" 1M
    io vmdk "$d/img.vmdk" "write -P 0xaa 0 4k" "write -P 0x11 1020k 4k"
    add vmdk_descriptor "$d/img.vmdk" "$sub.desc"
    add vmdk_open "$d/img.vmdk" "$sub.desc"
    extent="$(ls "$d" | grep -v '^img.vmdk$' | head -1)"
    { cat "$d/img.vmdk"; printf '\n#EXTENT-DATA\n'; cat "$d/$extent"; } >"$corpus/vmdk_extents/$sub"
done
# Hand-written descriptors: ZERO and VMFS extents, a delta disk naming its parent, many extents.
cat >"$work/zero.vmdk" <<'EOF'
# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 2048 ZERO
RW 2048 FLAT "flat.bin" 0
RDONLY 1024 VMFS "flat.bin" 4

ddb.virtualHWVersion = "4"
ddb.geometry.cylinders = "2"
ddb.geometry.heads = "16"
ddb.geometry.sectors = "63"
ddb.adapterType = "ide"
EOF
cat >"$work/delta.vmdk" <<'EOF'
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=12345678
createType="vmfsSparse"
parentFileNameHint="base.vmdk"

RW 2048 VMFSSPARSE "delta-sparse.vmdk"

ddb.virtualHWVersion = "4"
EOF
for f in zero delta; do
    add vmdk_descriptor "$work/$f.vmdk" "$f.desc"
    add vmdk_open "$work/$f.vmdk" "$f.desc"
    { cat "$work/$f.vmdk"; printf '\n#EXTENT-DATA\n'; head -c 65536 "$work/src.raw"; } >"$corpus/vmdk_extents/$f"
done
{ cat "$work/zero.vmdk"; printf '\n#EXTENT-DATA\n'; cat "$work/v/monolithicSparse.vmdk"; } >"$corpus/vmdk_extents/sparse-as-extent"

# ---- VDI: dynamic and static, data, zeros, a partial last sector ----
for st in off on; do
    q create -f vdi -o static=$st "$work/vdi-$st.vdi" 2M
    io vdi "$work/vdi-$st.vdi" "write -P 0xaa 0 4k" "write -P 0x55 1040k 8k"
done
q create -f vdi "$work/vdi-empty.vdi" 1G
q create -f vdi "$work/vdi-odd.vdi" 1000000
io vdi "$work/vdi-odd.vdi" "write -P 0x42 0 512"
for f in "$work"/*.vdi; do
    add vdi_open "$f"
    add probe "$f"
    head -c 512 "$f" >"$corpus/vdi_header/$(basename "$f").header"
    # The block map and the first data bytes only: reads of later slots fail (an error path).
    head -c 8192 "$f" >"$corpus/vdi_open/$(basename "$f").head"
done
# Images qemu cannot make (it writes 1 MiB blocks only): small blocks, block extra data, a block
# map with no room to grow (so that resize moves slots), static images of a few KiB, a partial last
# block.
python3 - "$work" <<'EOF'
import struct, sys
def vdi(path, bs, blocks, disk, static, used, extra=0, room=None):
    room = room or blocks  # entries the block map area holds before the data area
    bmap, data = 0x200, 0x200 + ((room * 4 + 511) // 512) * 512
    h = bytearray(data)
    h[:40] = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
    struct.pack_into("<III", h, 0x40, 0xBEDA107F, 0x00010001, 0x190)
    struct.pack_into("<II", h, 0x4C, 2 if static else 1, 0)
    struct.pack_into("<II", h, 0x154, bmap, data)
    struct.pack_into("<I", h, 0x168, 512)
    struct.pack_into("<QIIII", h, 0x170, disk, bs, extra, blocks, len(used))
    h[0x188:0x198] = bytes(range(1, 17))
    h[0x198:0x1A8] = bytes(range(17, 33))
    struct.pack_into("<I", h, 0x1D4, 512)
    for b in range(blocks):
        e = used.index(b) if b in used else 0xFFFFFFFF
        struct.pack_into("<I", h, bmap + 4 * b, e)
    for i, b in enumerate(used):
        h += bytes([0xEE]) * extra + bytes([0x10 + i % 0xE0]) * bs
    open(f"{sys.argv[1]}/{path}", "wb").write(h)
vdi("small-dyn.vdi", 4096, 16, 16 * 4096 - 1000, False, [0, 5, 15])
vdi("small-full-map.vdi", 4096, 128, 128 * 4096, False, [0, 1, 64, 127], room=128)
vdi("small-static.vdi", 512, 128, 128 * 512, True, list(range(128)))
vdi("small-extra.vdi", 4096, 8, 8 * 4096, False, [3, 0, 7], extra=512)
vdi("small-static-extra.vdi", 1024, 16, 16 * 1024 - 512, True, list(range(16)), extra=512)
EOF
# vdi_mutate: each image (the static qemu images are past -max_len: libFuzzer truncates them, an
# error path) under each of the 8 operations, size byte 7 (resize by 512 KiB, write 32 KiB).
for f in "$work"/*.vdi; do
    add vdi_open "$f"
    for op in $(seq 0 7); do
        { printf "\\$(printf %03o "$op")\\007"; cat "$f"; } \
            >"$corpus/vdi_mutate/$(basename "$f").op$op"
    done
done

# vmdk_mutate: sparse files and descriptor + extent (qemu creates 64 KiB grains only), each under
# each of the 7 operations, size byte 7 (writes of 32 KiB). The 40M sparse images have two grain
# tables (32 MiB each) with data on both sides of the boundary; "zeroed" ones have zeroed grains.
mkdir -p "$work/m"
vm m/gt40 40M subformat=monolithicSparse
io vmdk "$work/m/gt40.vmdk" "write -P 0x22 32760k 16k"
vm m/gt40-zeroed 40M subformat=monolithicSparse,zeroed_grain=on
io vmdk "$work/m/gt40-zeroed.vmdk" "write -P 0x21 0 4k" "write -z 64k 128k" "write -z 32704k 128k" \
    "write -P 0x22 40900k 4k"
for z in off on; do
    vm m/sparse1m-zeroed-$z 1M subformat=monolithicSparse,zeroed_grain=$z
    io vmdk "$work/m/sparse1m-zeroed-$z.vmdk" "write -P 0xaa 0 4k" "write -P 0x11 1020k 4k"
    [ $z = off ] || io vmdk "$work/m/sparse1m-zeroed-$z.vmdk" "write -z 512k 64k"
done
for sub in twoGbMaxExtentSparse monolithicFlat twoGbMaxExtentFlat; do
    d="$work/m/$sub"
    mkdir -p "$d"
    q create -f vmdk -o subformat=$sub "$d/img.vmdk" 128K
    io vmdk "$d/img.vmdk" "write -P 0xaa 0 4k" "write -P 0x11 120k 8k"
    extent="$(ls "$d" | grep -v '^img.vmdk$' | head -1)"
    { cat "$d/img.vmdk"; printf '\n#EXTENT-DATA\n'; cat "$d/$extent"; } >"$work/m/$sub.vmdk"
done
for f in "$work"/m/*.vmdk; do
    for op in $(seq 0 6); do
        { printf "\\$(printf %03o "$op")\\007"; cat "$f"; } \
            >"$corpus/vmdk_mutate/$(basename "$f" .vmdk).op$op"
    done
done

# ---- VHD ("vpc"): dynamic and fixed, CHS-sized and force_size, a block written in part, odd sizes ----
for sub in dynamic fixed; do
    q create -f vpc -o subformat=$sub "$work/vhd-$sub.vhd" 5M
    io vpc "$work/vhd-$sub.vhd" "write -P 0xaa 0 4k" "write -P 0x55 2096640 1k" "write -P 0x11 4194816 512"
    q create -f vpc -o subformat=$sub,force_size=on "$work/vhd-$sub-force.vhd" 3000000
    io vpc "$work/vhd-$sub-force.vhd" "write -P 0x42 0 512"
done
q create -f vpc "$work/vhd-empty.vhd" 1G
q create -f vpc "$work/vhd-large.vhd" 200G
for f in "$work"/vhd-*.vhd; do
    add vhd_open "$f"
    add probe "$f"
    # The footer, dynamic header and BAT only: blocks past the end make open fail (an error path).
    head -c 8192 "$f" >"$corpus/vhd_open/$(basename "$f").head"
done
# Hand-made dynamic disks qemu cannot make: 4 KiB and 512-byte blocks (512-byte ones get no bitmap
# in qemu's sizing), blocks out of order, a differencing disk, a fixed type with a footer at offset 0.
python3 - "$corpus/vhd_open" <<'EOF'
import struct, sys
def footer(app, chs, size, typ, data_offset):
    f = bytearray(512)
    f[0:8] = b"conectix"
    struct.pack_into(">IIQI", f, 8, 2, 0x00010000, data_offset, 0)
    f[28:32] = app
    struct.pack_into(">I", f, 32, 0x00050003)
    f[36:40] = b"Wi2k"
    struct.pack_into(">QQHBBI", f, 40, size, size, chs[0], chs[1], chs[2], typ)
    f[68:84] = bytes(range(16))
    struct.pack_into(">I", f, 64, ~sum(f) & 0xFFFFFFFF)
    return bytes(f)
def dynamic(name, size, bs, blocks, typ=3):
    n = len(blocks)
    bat_at = 1536
    data_at = bat_at + (n * 4 + 511) // 512 * 512
    f = footer(b"win ", (1, 1, 1), size, typ, 512)
    h = bytearray(1024)
    h[0:8] = b"cxsparse"
    struct.pack_into(">QQIII", h, 8, 2**64 - 1, bat_at, 0x00010000, n, bs)
    img = bytearray(f + h)
    img += bytes(data_at - len(img))
    bitmap = (bs // 4096 + 511) // 512 * 512
    bat = [0xFFFFFFFF] * n
    for i in reversed(range(n)):
        if blocks[i] is not None:
            bat[i] = len(img) // 512
            img += b"\xff" * bitmap + bytes([blocks[i]]) * bs
    for i, e in enumerate(bat):
        struct.pack_into(">I", img, bat_at + 4 * i, e)
    img += f
    open(f"{sys.argv[1]}/{name}", "wb").write(img)
dynamic("small-4k.vhd", 16 * 4096 - 512, 4096, [0x11, None, 0x33, None] * 4)
dynamic("small-512.vhd", 16 * 512, 512, [1, None, 3, 4] * 4)
dynamic("differencing.vhd", 8 * 4096, 4096, [None, 7] * 4, typ=4)
dynamic("fixed-type-at-0.vhd", 8 * 4096, 4096, [5] * 8, typ=2)
EOF

# ---- VHDX: dynamic (1 MiB and default blocks, block_state_zero on and off), fixed, a bigger log,
# data in several blocks; each cut into the 4 KiB pages that fuzz/src/paged.rs places, after a
# byte for the MiB of file past the last page ----
q create -f vhdx -o block_size=1M "$work/vhdx-dyn-1m.vhdx" 6M
io vhdx "$work/vhdx-dyn-1m.vhdx" "write -P 0xaa 0 4k" "write -P 0x55 1M 8k" "write -P 0x11 5M 512"
q create -f vhdx -o block_size=1M,block_state_zero=off "$work/vhdx-dyn-nz.vhdx" 3M
io vhdx "$work/vhdx-dyn-nz.vhdx" "write -P 0x42 2M 4k"
q create -f vhdx "$work/vhdx-default.vhdx" 64M
io vhdx "$work/vhdx-default.vhdx" "write -P 0x33 0 4k"
q create -f vhdx -o subformat=fixed,block_size=1M "$work/vhdx-fixed.vhdx" 4M
io vhdx "$work/vhdx-fixed.vhdx" "write -P 0x66 1M 4k"
q create -f vhdx -o log_size=2M,block_size=1M "$work/vhdx-log2m.vhdx" 2M
q create -f vhdx "$work/vhdx-large.vhdx" 100G
python3 - "$corpus/vhdx_open" "$work"/vhdx-*.vhdx <<'EOF'
import os, sys
KIB, MIB = 1024, 1024 * 1024
# PAGE_OFFSETS of fuzz/src/paged.rs.
OFFSETS = [0, 64 * KIB, 128 * KIB, 192 * KIB, 256 * KIB, MIB, MIB + 4 * KIB, 2 * MIB, 3 * MIB,
           3 * MIB + 64 * KIB, 4 * MIB, 5 * MIB, 6 * MIB, 8 * MIB, 12 * MIB, 16 * MIB]
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    out = bytearray()
    end = 0
    for off in OFFSETS:
        if off >= len(data):
            break
        page = data[off:off + 4096]
        if off + 4096 < len(data):
            page = page.ljust(4096, b"\0")
        out += page
        end = off + len(page)
    # The first byte: the MiB the file goes on past its last page.
    out[0:0] = bytes([min(255, -(-(len(data) - end) // MIB))])
    open(os.path.join(sys.argv[1], os.path.basename(path)), "wb").write(out)
EOF
for f in "$work"/vhdx-*.vhdx; do
    head -c 262144 "$f" >"$corpus/probe/$(basename "$f").head"
done

# ---- partition tables: small raw disks partitioned by sfdisk (GPT with names and attributes; MBR
# with a bootable primary, an extended partition and logical ones) ----
if command -v sfdisk >/dev/null; then
    truncate -s 192K "$corpus/partitions/gpt.raw" "$corpus/partitions/dos.raw"
    printf 'label: gpt\nfirst-lba: 34\nstart=34, size=64, type=U, name="EFI"\nsize=64, type=L, attrs="RequiredPartition GUID:63"\nsize=32, type=S\n' |
        sfdisk -q "$corpus/partitions/gpt.raw"
    printf 'label: dos\nstart=1, size=63, type=c, bootable\nstart=64, size=64, type=83\nstart=128, size=200, type=5\nstart=130, size=40, type=82\nstart=180, size=40, type=83\n' |
        sfdisk -q "$corpus/partitions/dos.raw"
fi

# ---- filesystems: the smallest ext2/ext4 and FAT images mkfs makes, with a few files, a
# directory and symlinks (fast and slow). A seed is one byte, the device's size in 64 KiB units,
# then the image's first 256 KiB at most (the fs_open target zero-fills the rest) ----
fs_seed() { # fs_seed IMAGE NAME
    local units=$(( ($(stat -c %s "$1") + 65535) / 65536 ))
    [ "$units" -gt 255 ] && units=255
    { printf "\\$(printf %o "$units")"; head -c 262000 "$1"; } >"$corpus/fs_open/$2"
}
if command -v mkfs.ext4 >/dev/null && command -v mkfs.fat >/dev/null && command -v mcopy >/dev/null; then
    mkdir -p "$work/tree/d/e"
    printf 'hello\n' >"$work/tree/d/f"
    head -c 5000 /dev/urandom >"$work/tree/d/e/g"
    ln -s d/f "$work/tree/fast"
    ln -s "$(printf 'x%.0s' $(seq 1 100))/../d/f" "$work/tree/slow"
    truncate -s 64k "$work/ext2"
    truncate -s 128k "$work/ext4" "$work/ext4i"
    mkfs.ext2 -q -F -b 1024 -N 32 -d "$work/tree" "$work/ext2"
    mkfs.ext4 -q -F -b 1024 -N 32 -O ^has_journal -d "$work/tree" "$work/ext4"
    mkfs.ext4 -q -F -b 1024 -N 32 -O ^has_journal,inline_data -d "$work/tree" "$work/ext4i"
    mkfs.fat -F 12 -C "$work/fat12" 64 >/dev/null
    mkfs.fat -F 16 -s 1 -C "$work/fat16" 2200 >/dev/null
    for img in "$work/fat12" "$work/fat16"; do
        mcopy -s -i "$img" "$work/tree/d" ::
        mcopy -i "$img" "$work/tree/d/f" '::A Long File Name.txt'
    done
    for img in ext2 ext4 ext4i fat12 fat16; do
        fs_seed "$work/$img" "$img"
    done
fi

# XFS (mkfs.xfs needs 300 MiB; the seeds are the first 256 KiB of flat trees, whose inodes,
# directory blocks and file data mkfs places there): v5 and v4 with short-form and block root
# directories, and v4 with a leaf and a node directory (fifos: entries with no data blocks).
if command -v mkfs.xfs >/dev/null; then
    mkdir -p "$work/xtree"
    printf 'hello\n' >"$work/xtree/f"
    head -c 5000 /dev/urandom >"$work/xtree/g"
    xproto() { # xproto ENTRIES: a root directory with ENTRIES fifos, files, symlinks, a device
        echo /dev/null
        echo 0 0
        echo 'd--755 0 0'
        echo "f ---644 0 0 $work/xtree/f"
        echo "g ---600 1000 1000 $work/xtree/g"
        for i in $(seq 1 "$1"); do echo "n$i p--644 0 0"; done
        echo 'fast l--777 0 0 f'
        echo "slow l--777 0 0 $(printf 'x%.0s' $(seq 1 700))/../f"
        echo 'cdev c--644 0 0 4 5'
        echo '$'
    }
    for cfg in "xfs5:3:-b size=1024" "xfs5k:40:" "xfs4:40:-b size=1024 -m crc=0 -i size=256 -n ftype=0" \
        "xfs4leaf:300:-b size=1024 -m crc=0 -i size=256 -n ftype=0" \
        "xfs4node:640:-b size=1024 -m crc=0 -i size=256 -n ftype=0"; do
        name=${cfg%%:*} rest=${cfg#*:}
        xproto "${rest%%:*}" >"$work/$name.proto"
        truncate -s 300M "$work/$name"
        # shellcheck disable=SC2086 # the options are words
        mkfs.xfs -q -f ${rest#*:} -p "$work/$name.proto" "$work/$name" >/dev/null 2>&1
        fs_seed "$work/$name" "$name"
        rm -f "$work/$name"
    done
fi

# LVM2 physical volumes (lvm2 needs root and loop devices; with no device-mapper, volumes are
# created with activation off): 12 MiB PVs with 1 MiB extents, so that every volume lies inside
# the fuzz target's 16 MiB device; seeds are their first 64 KiB (label and metadata).
if command -v pvcreate >/dev/null && command -v losetup >/dev/null && [ "$(id -u)" = 0 ]; then
    export LVM_SUPPRESS_FD_WARNINGS=1
    lvm_seed() { # lvm_seed FILE NAME
        { printf '\300'; head -c 65536 "$1"; } >"$corpus/lvm_open/$2" # 192 units: 12 MiB
    }
    # Activation off (no device-mapper), and no backups of these scratch groups in /etc/lvm.
    lvmc=(--config 'global { activation = 0 } backup { backup = 0 archive = 0 }')
    truncate -s 12M "$work/pv1" "$work/pv2" "$work/pv3"
    l1=$(losetup -f --show "$work/pv1")
    l2=$(losetup -f --show "$work/pv2")
    l3=$(losetup -f --show "$work/pv3")
    {
        pvcreate -q "${lvmc[@]}" --devices "$l1" --devices "$l2" --devices "$l3" "$l1" "$l2" "$l3"
        vgcreate -q "${lvmc[@]}" -s 1M --devices "$l1" vg "$l1"
        lvcreate -q "${lvmc[@]}" --devices "$l1" -an -Zn -L 3M -n root vg
        lvcreate -q "${lvmc[@]}" --devices "$l1" -an -Zn -L 2M -n my-data vg
        lvextend -q "${lvmc[@]}" --devices "$l1" -L 5M vg/root
        vgcreate -q "${lvmc[@]}" -s 1M --devices "$l2" --devices "$l3" vg2 "$l2" "$l3"
        lvcreate -q "${lvmc[@]}" --devices "$l2" --devices "$l3" -an -Zn -i 2 -I 64k -L 4M -n stripes vg2
        lvcreate -q "${lvmc[@]}" --devices "$l2" --devices "$l3" -an -Zn -L 12M -n both vg2
    } >/dev/null 2>&1 || true
    losetup -d "$l1" "$l2" "$l3"
    lvm_seed "$work/pv1" lvm-linear
    lvm_seed "$work/pv2" lvm-striped-a
    lvm_seed "$work/pv3" lvm-striped-b
fi

# ---- OVA packages: a small OVF (one streamOptimized disk, the hardware of a VirtualBox
# export) with its manifest, packed as ustar and pax; the descriptor alone too ----
if command -v tar >/dev/null && command -v sha256sum >/dev/null; then
    mkdir -p "$work/ova"
    q create -f raw "$work/ova/d.raw" 1M
    io raw "$work/ova/d.raw" "write -P 0xab 0 4k"
    q convert -O vmdk -o subformat=streamOptimized "$work/ova/d.raw" "$work/ova/vm-disk1.vmdk"
    cat >"$work/ova/vm.ovf" <<'OVF'
<?xml version="1.0"?>
<Envelope ovf:version="1.0" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
<References><File ovf:id="file1" ovf:href="vm-disk1.vmdk"/></References>
<DiskSection><Info>d</Info><Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
<VirtualSystem ovf:id="vm"><Info>v</Info><OperatingSystemSection ovf:id="96"><Info>o</Info></OperatingSystemSection>
<VirtualHardwareSection><Info>h</Info>
<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
<Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
<Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>AHCI</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
<Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
</VirtualHardwareSection></VirtualSystem></Envelope>
OVF
    (cd "$work/ova" && for f in vm.ovf vm-disk1.vmdk; do echo "SHA256($f)= $(sha256sum "$f" | cut -d' ' -f1)"; done >vm.mf &&
        tar --format=ustar -cf "$corpus/ova_open/vm-ustar.ova" vm.ovf vm.mf vm-disk1.vmdk &&
        tar --format=pax -cf "$corpus/ova_open/vm-pax.ova" vm.ovf vm.mf vm-disk1.vmdk)
    cp "$work/ova/vm.ovf" "$corpus/ova_open/vm.ovf"
    cp "$work/ova/vm.mf" "$corpus/ova_open/vm.mf"
fi

# ---- raw ----
head -c 4096 /dev/urandom >"$corpus/raw_open/random-4k"
head -c 700 "$work/src.raw" >"$corpus/raw_open/odd-700"
: >"$corpus/raw_open/empty"
cp "$corpus/raw_open/odd-700" "$corpus/probe/raw-700"

for t in "$corpus"/*/; do
    printf '%-16s %3d seeds, %8d bytes\n' "$(basename "$t")" "$(ls "$t" | wc -l)" "$(cat "$t"/* | wc -c)"
done
