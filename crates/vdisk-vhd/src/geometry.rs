//! The CHS geometry and virtual size of a new image, as QEMU 10's block/vpc.c chooses them:
//! `calculate_geometry` (the VHD specification's algorithm, with qemu's 255 sectors per track above
//! 127 GiB), `calculate_rounded_image_size` (round a size up to the next geometry, or take it whole
//! with `force_size` or beyond the largest geometry) and the checks of `vpc_co_create_opts` and
//! `vpc_co_create`.

use crate::footer::Geometry;
use crate::limits::{
    CHS_MAX_CYLINDERS, CHS_MAX_HEADS, CHS_MAX_SECTORS_PER_TRACK, MAX_GEOMETRY_SECTORS, MAX_SECTORS,
    SECTOR_SIZE,
};
use vdisk_core::{Error, Result};

/// The all-zero geometry `calculate_rounded_image_size` starts from.
const NONE: Geometry = Geometry {
    cylinders: 0,
    heads: 0,
    sectors_per_track: 0,
};

/// The largest geometry (65535/16/255), which `force_size` images carry.
pub const MAX_GEOMETRY: Geometry = Geometry {
    cylinders: CHS_MAX_CYLINDERS,
    heads: CHS_MAX_HEADS,
    sectors_per_track: CHS_MAX_SECTORS_PER_TRACK,
};

/// `calculate_geometry`: the geometry for `total_sectors`, which may cover fewer sectors (never
/// more). Sizes from 65535 x 16 x 63 sectors (about 31.5 GiB) up use 255 sectors per track and 16
/// heads; smaller ones 17, 31 or 63 sectors per track with 4 to 16 heads, as the VHD specification
/// says. Sizes beyond the largest geometry get the largest geometry.
pub fn calculate_geometry(total_sectors: u64) -> Geometry {
    let total = total_sectors.min(MAX_GEOMETRY_SECTORS);
    let (spt, heads, cyls_times_heads): (u8, u8, u64);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cyls_times_heads = total / 255;
    } else {
        // Below 65535 x 16 x 63 sectors every quotient fits qemu's uint32_t.
        let mut s: u8 = 17;
        let mut cth = total / u64::from(s);
        // qemu keeps the head count in a uint8_t: the quotient is cut to its low byte. Any count
        // above 16 ends up replaced below whatever the cut leaves, as it does in qemu.
        let mut h = (cth.div_ceil(1024) & 0xff) as u8;
        if h < 4 {
            h = 4;
        }
        if cth >= u64::from(h) * 1024 || h > 16 {
            s = 31;
            h = 16;
            cth = total / u64::from(s);
        }
        if cth >= u64::from(h) * 1024 {
            s = 63;
            h = 16;
            cth = total / u64::from(s);
        }
        spt = s;
        heads = h;
        cyls_times_heads = cth;
    }
    // At most 65535 x 16 in the 255-sector case and below 1024 x 16 or 65535 x 16 in the others,
    // so the quotient fits qemu's uint16_t.
    let cylinders = u16::try_from(cyls_times_heads / u64::from(heads)).unwrap_or(u16::MAX);
    Geometry {
        cylinders,
        heads,
        sectors_per_track: spt,
    }
}

/// Why a size cannot be created.
pub(crate) fn too_large() -> Error {
    // `vpc_co_create` fails with EFBIG ("Disk size is too large, max size is 2040 GiB"), which
    // qemu-img create reports with this message of its own (`bdrv_img_create`).
    Error::invalid("The image size is too large for file format 'vpc'")
}

/// `calculate_rounded_image_size`: the geometry and virtual size in sectors for a `size`-byte
/// request (a multiple of 512). With `force_size`, or when the size needs the largest geometry, the
/// virtual size is the request itself, at most 2040 GiB ([`MAX_SECTORS`]); otherwise it is the
/// smallest geometry's product that is at least the request.
pub fn rounded_image_size(size: u64, force_size: bool) -> Result<(Geometry, u64)> {
    let mut g = NONE;
    if force_size {
        g = MAX_GEOMETRY;
    } else {
        let want = MAX_GEOMETRY_SECTORS.min(size / SECTOR_SIZE);
        // Ask for one more sector each time until the geometry covers the request; the largest
        // geometry covers every request, so this ends.
        let mut i = 0u64;
        while want > g.total_sectors() {
            g = calculate_geometry(want + i);
            i += 1;
        }
    }
    let total = if g.total_sectors() == MAX_GEOMETRY_SECTORS {
        let t = size / SECTOR_SIZE;
        if t > MAX_SECTORS {
            return Err(too_large());
        }
        t
    } else {
        g.total_sectors()
    };
    Ok((g, total))
}

/// What `qemu-img create -f vpc` makes of a requested size: `vpc_co_create_opts` rounds it up to
/// whole sectors and, without `force_size`, up to a geometry; `vpc_co_create` then derives the
/// geometry again from that size and refuses one it cannot represent. Returns the geometry and the
/// virtual size in bytes (also the footer's original and current size).
pub fn create_size(size: u64, force_size: bool) -> Result<(Geometry, u64)> {
    let mut size = size
        .checked_next_multiple_of(SECTOR_SIZE)
        .ok_or_else(too_large)?;
    if !force_size {
        let (_, total) = rounded_image_size(size, false)?;
        // At most 0xff000000 sectors: no overflow.
        size = total * SECTOR_SIZE;
    }
    let (g, total) = rounded_image_size(size, force_size)?;
    if total.checked_mul(SECTOR_SIZE) != Some(size) {
        return Err(Error::invalid(format!(
            "The requested image size cannot be represented in CHS geometry\nTry size={} or \
             force-size=on (the latter makes the image incompatible with Virtual PC)",
            total.saturating_mul(SECTOR_SIZE)
        )));
    }
    Ok((g, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chs(c: u16, h: u8, s: u8) -> Geometry {
        Geometry {
            cylinders: c,
            heads: h,
            sectors_per_track: s,
        }
    }

    /// Requested size, then the geometry and current size `qemu-img create -f vpc` (QEMU 10.0.2)
    /// wrote into the footer.
    const QEMU: &[(u64, (u16, u8, u8), u64)] = &[
        (0, (0, 0, 0), 0),
        (512, (1, 4, 17), 34816),
        (1 << 20, (31, 4, 17), 1_079_296),
        (3_000_000, (87, 4, 17), 3_028_992),
        (10 << 20, (302, 4, 17), 10_514_432),
        (100 << 20, (1004, 12, 17), 104_865_792),
        (500 << 20, (1016, 16, 63), 524_353_536),
        (1 << 30, (2081, 16, 63), 1_073_995_776),
        (4 << 30, (8323, 16, 63), 4_295_467_008),
        (31 << 30, (64496, 16, 63), 33_286_127_616),
        (32 << 30, (16449, 16, 255), 34_361_303_040),
        (100 << 30, (51401, 16, 255), 107_374_632_960),
        (127 << 30, (65279, 16, 255), 136_365_219_840),
        (128 << 30, (65535, 16, 255), 137_438_953_472),
        (200 << 30, (65535, 16, 255), 214_748_364_800),
        (2040 << 30, (65535, 16, 255), 2_190_433_320_960),
    ];

    #[test]
    fn sizes_and_geometries_match_qemu_img() {
        for &(req, (c, h, s), current) in QEMU {
            let (g, size) = create_size(req, false).unwrap();
            assert_eq!((g, size), (chs(c, h, s), current), "size {req}");
            // force_size: the largest geometry and the size itself, in whole sectors.
            let (g, size) = create_size(req, true).unwrap();
            assert_eq!(
                (g, size),
                (MAX_GEOMETRY, req.next_multiple_of(512)),
                "size {req} force_size"
            );
        }
        assert_eq!(create_size(3_000_000, true).unwrap().1, 3_000_320);
        assert_eq!(create_size(1, false).unwrap().1, 34816);
    }

    #[test]
    fn calculate_geometry_follows_the_spec_table() {
        assert_eq!(calculate_geometry(0), chs(0, 4, 17));
        assert_eq!(calculate_geometry(68), chs(1, 4, 17));
        assert_eq!(calculate_geometry(4095 * 17), chs(1023, 4, 17));
        // 4096 cylinders x heads no longer fit 4 heads of 1024 cylinders: 31 sectors per track.
        assert_eq!(calculate_geometry(4096 * 17), chs(140, 16, 31));
        assert_eq!(calculate_geometry(u64::MAX), MAX_GEOMETRY);
        assert_eq!(calculate_geometry(MAX_GEOMETRY_SECTORS), MAX_GEOMETRY);
        assert_eq!(calculate_geometry(65535 * 16 * 63), chs(16191, 16, 255));
        assert_eq!(calculate_geometry(65535 * 16 * 63 - 1), chs(65534, 16, 63));
    }

    #[test]
    fn too_large_sizes_are_refused() {
        for force in [false, true] {
            let max = MAX_SECTORS * SECTOR_SIZE;
            assert_eq!(create_size(max, force).unwrap().1, max);
            for req in [max + 1, max + 512, 2041 << 30, u64::MAX - 100, u64::MAX] {
                let e = create_size(req, force).unwrap_err().to_string();
                assert!(e.contains("too large for file format 'vpc'"), "{req}: {e}");
            }
        }
    }

    #[test]
    fn every_rounded_size_is_representable() {
        // vpc_co_create derives the geometry again from the rounded size; for a sample of sizes
        // across the whole range it always finds the same product (so its CHS error never fires).
        let mut s = 0u64;
        while s <= MAX_GEOMETRY_SECTORS + 10 {
            let (g, size) = create_size(s * 512, false).unwrap();
            assert!(size >= s * 512);
            assert!(g.total_sectors() * 512 == size || g == MAX_GEOMETRY, "{s}");
            s += 1 + s / 997;
        }
    }
}
