#!/usr/bin/env bash
# Regenerates the tiny committed sample images in this folder with qemu-img and qemu-io.
# Each holds a 1 MiB disk with a pattern at 0, zeros at 128 KiB, data at 512 KiB and holes elsewhere.
# Larger fixtures are never committed: tests build them with qemu-img at test time.
set -euo pipefail
cd "$(dirname "$0")"
rm -f sample.qcow2
qemu-img create -q -f qcow2 -o cluster_size=512 sample.qcow2 1M
qemu-io -f qcow2 -c 'write -P 0x5a 0 4k' -c 'write -z 128k 4k' -c 'write -P 0xa5 512k 2k' sample.qcow2 >/dev/null
ls -l sample.*
