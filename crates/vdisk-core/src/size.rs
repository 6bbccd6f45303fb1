//! Size arguments as qemu-img parses them (`qemu_strtosz`): `22G`, `512M`, `1.5T`, `4096`, `0x1000`, with
//! 1024-based suffixes `B k K M G T P E` (case-insensitive), and the `+N`/`-N` forms `resize` takes.

use crate::error::{Error, Result};

/// The largest size qemu accepts for an image (`INT64_MAX`).
pub const MAX_IMAGE_SIZE: u64 = i64::MAX as u64;

/// A size as given to `resize`: absolute, or relative to the current size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeChange {
    Absolute(u64),
    Grow(u64),
    Shrink(u64),
}

impl SizeChange {
    /// Applies the change to `current`, failing on overflow or on a new size that is not
    /// positive (qemu-img resize checks that before it asks for `--shrink`).
    pub fn apply(self, current: u64) -> Result<u64> {
        let new = match self {
            SizeChange::Absolute(n) => Some(n),
            SizeChange::Grow(n) => Some(
                current
                    .checked_add(n)
                    .filter(|v| *v <= MAX_IMAGE_SIZE)
                    .ok_or_else(|| Error::invalid("Image size must be less than 8 EiB!"))?,
            ),
            SizeChange::Shrink(n) => current.checked_sub(n),
        };
        new.filter(|v| *v > 0)
            .ok_or_else(|| Error::invalid("New image size must be positive"))
    }
}

fn suffix_multiplier(c: char) -> Option<u64> {
    Some(match c.to_ascii_uppercase() {
        'B' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        'T' => 1 << 40,
        'P' => 1 << 50,
        'E' => 1 << 60,
        _ => return None,
    })
}

/// Parses a size with qemu's syntax and default unit of bytes.
///
/// Fractions need a suffix other than `B` (`1.5G` is fine, `1.5` is not), hexadecimal takes no suffix
/// and no fraction, and the result must fit in `i64` as in qemu.
pub fn parse_size(input: &str) -> Result<u64> {
    let bad = || Error::invalid(format!("Invalid image size specified: '{input}'."));
    let s = input.trim();
    if s.is_empty() || s.starts_with('-') || s.starts_with('+') {
        return Err(bad());
    }
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let v = u64::from_str_radix(hex, 16).map_err(|_| bad())?;
        return if v > MAX_IMAGE_SIZE {
            Err(bad())
        } else {
            Ok(v)
        };
    }
    let num_end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let (num, rest) = s.split_at(num_end);
    if num.is_empty() || num.matches('.').count() > 1 || num.starts_with('.') || num.ends_with('.')
    {
        return Err(bad());
    }
    let mult = match rest {
        "" => 1,
        r if r.chars().count() == 1 => r
            .chars()
            .next()
            .and_then(suffix_multiplier)
            .ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (num, None),
    };
    let int: u64 = int_part.parse().map_err(|_| bad())?;
    let mut value = int.checked_mul(mult).ok_or_else(bad)?;
    if let Some(frac) = frac_part {
        if mult == 1 {
            return Err(bad());
        }
        // Exact for every digit count a user types: frac/10^n of mult, rounded down like qemu's double.
        let digits = frac.len().min(18) as u32;
        let f: u128 = frac[..digits as usize].parse().map_err(|_| bad())?;
        let extra = (f * mult as u128) / 10u128.pow(digits);
        value = value.checked_add(extra as u64).ok_or_else(bad)?;
    }
    if value > MAX_IMAGE_SIZE {
        return Err(Error::invalid("Image size must be less than 8 EiB!"));
    }
    Ok(value)
}

/// A size written as decimal digits with an optional unit suffix, in 128 bits (to tell a value
/// too large for 64 bits from one that is not a number).
pub fn whole_size_u128(v: &str) -> Option<u128> {
    let t = v.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let mut unit = unit.chars();
    let mult = match (unit.next(), unit.next()) {
        (None, _) => 1,
        (Some(c), None) => suffix_multiplier(c)?,
        _ => return None,
    };
    digits.parse::<u128>().ok()?.checked_mul(u128::from(mult))
}

/// Parses a `resize` argument: `SIZE`, `+SIZE` or `-SIZE`.
pub fn parse_size_change(input: &str) -> Result<SizeChange> {
    let s = input.trim();
    if let Some(rest) = s.strip_prefix('+') {
        Ok(SizeChange::Grow(parse_size(rest)?))
    } else if let Some(rest) = s.strip_prefix('-') {
        Ok(SizeChange::Shrink(parse_size(rest)?))
    } else {
        Ok(SizeChange::Absolute(parse_size(s)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_1024_based() {
        assert_eq!(parse_size("22G").unwrap(), 22 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("1P").unwrap(), 1 << 50);
        assert_eq!(parse_size("1E").unwrap(), 1 << 60);
        assert_eq!(parse_size("100B").unwrap(), 100);
        assert_eq!(parse_size("67108864").unwrap(), 67108864);
        assert_eq!(parse_size("0x1000").unwrap(), 4096);
    }

    #[test]
    fn fractions_need_a_suffix() {
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("0.5k").unwrap(), 512);
        assert!(parse_size("1.5").is_err());
        assert!(parse_size("1.5B").is_err());
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        for bad in [
            "",
            "G",
            "12Q",
            "1GG",
            "-1",
            "1..5G",
            ".5G",
            "8E",
            "99999999999999999999",
            "0xZZ",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(
            parse_size("12Q").unwrap_err().to_string(),
            "Invalid image size specified: '12Q'."
        );
    }

    #[test]
    fn relative_sizes_for_resize() {
        assert_eq!(
            parse_size_change("+10G").unwrap(),
            SizeChange::Grow(10 << 30)
        );
        assert_eq!(
            parse_size_change("-5G").unwrap(),
            SizeChange::Shrink(5 << 30)
        );
        assert_eq!(
            parse_size_change("1G").unwrap(),
            SizeChange::Absolute(1 << 30)
        );
        assert_eq!(SizeChange::Grow(1).apply(1).unwrap(), 2);
        assert!(SizeChange::Shrink(2).apply(1).is_err());
        // A new size of 0, however reached, as qemu-img resize refuses it.
        for (change, current) in [
            (SizeChange::Absolute(0), 1),
            (SizeChange::Shrink(1), 1),
            (SizeChange::Grow(0), 0),
        ] {
            let e = change.apply(current).unwrap_err();
            assert_eq!(e.to_string(), "New image size must be positive");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,24}") {
            let _ = parse_size(&s);
            let _ = parse_size_change(&s);
        }

        #[test]
        fn plain_numbers_roundtrip(n in 0u64..=MAX_IMAGE_SIZE) {
            proptest::prop_assert_eq!(parse_size(&n.to_string()).unwrap(), n);
        }
    }
}
