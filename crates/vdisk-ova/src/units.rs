//! Allocation units of OVF quantities in bytes: DMTF DSP0004 (CIM Infrastructure) Annex C.1
//! "Programmatic units" as DSP0243's DiskSection uses them for `ovf:capacityAllocationUnits`
//! (`byte * 2^30`) and CIM_ResourceAllocationSettingData for `AllocationUnits` of memory
//! (`byte * 2^20`), and the names OVF 0.9-era exports wrote instead (`MegaBytes`, `GigaBytes`).
//!
//! A programmatic unit is a product of elements joined by `*` or `/`: numbers (`1024`), powers
//! (`2^30`, `10^3`), and units with an optional decimal or binary prefix (`byte`, `kilobyte`,
//! `mebibyte`) and an optional power (`byte^1`). Exactly one element must be a byte unit (with a
//! power of 1); the rest is a positive factor, which must give a whole number of bytes.

/// Bytes in `value` of `units` (`None`: plain bytes), or why the units cannot be read as bytes.
pub fn to_bytes(value: u64, units: Option<&str>) -> Result<u64, String> {
    let Some(units) = units else {
        return Ok(value);
    };
    let (num, den) = byte_factor(units)?;
    let total = u128::from(value) * num;
    if total % den != 0 {
        return Err(format!("{value} '{units}' is not a whole number of bytes"));
    }
    u64::try_from(total / den).map_err(|_| format!("{value} '{units}' is more than 2^64 bytes"))
}

/// The units as a fraction `num / den` of bytes.
pub fn byte_factor(units: &str) -> Result<(u128, u128), String> {
    let u = units.trim();
    if let Some(f) = legacy(u) {
        return Ok((f, 1));
    }
    let bad = |why: &str| format!("allocation units '{units}': {why}");
    let mut num: u128 = 1;
    let mut den: u128 = 1;
    let mut bytes_seen = false;
    let mut divide = false;
    let mut rest = u;
    loop {
        let end = rest.find(['*', '/']).unwrap_or(rest.len());
        let element = rest[..end].trim();
        if element.is_empty() {
            return Err(bad("an operator without an operand"));
        }
        let (factor, is_byte) = element_value(element).map_err(|e| bad(&e))?;
        if is_byte {
            if bytes_seen || divide {
                return Err(bad("bytes must appear exactly once, multiplied"));
            }
            bytes_seen = true;
        }
        let slot = if divide { &mut den } else { &mut num };
        *slot = slot
            .checked_mul(factor)
            .filter(|&v| v <= u128::from(u64::MAX))
            .ok_or_else(|| bad("the factor is more than 2^64"))?;
        if end == rest.len() {
            break;
        }
        divide = rest.as_bytes()[end] == b'/';
        rest = &rest[end + 1..];
    }
    if !bytes_seen {
        return Err(bad("no 'byte' unit (only byte-based units are understood)"));
    }
    Ok((num, den))
}

/// OVF 0.9 and early exports' names: binary multiples, as VirtualBox and VMware read them.
fn legacy(u: &str) -> Option<u128> {
    const NAMES: [(&str, &str, u32); 5] = [
        ("bytes", "b", 0),
        ("kilobytes", "kb", 10),
        ("megabytes", "mb", 20),
        ("gigabytes", "gb", 30),
        ("terabytes", "tb", 40),
    ];
    // Only the CamelCase and upper-case spellings: DSP0004's lower-case `kilobyte` is decimal.
    NAMES.iter().find_map(|&(long, short, shift)| {
        let camel = u.len() == long.len()
            && u.eq_ignore_ascii_case(long)
            && u.starts_with(|c: char| c.is_ascii_uppercase());
        let upper = u == short.to_ascii_uppercase() && shift > 0;
        (camel || upper || (shift == 0 && u == "bytes")).then_some(1u128 << shift)
    })
}

/// The value of one element, and whether it is the byte unit.
fn element_value(e: &str) -> Result<(u128, bool), String> {
    let (base, exp) = match e.split_once('^') {
        Some((b, x)) => (b.trim(), Some(x.trim())),
        None => (e, None),
    };
    let exp: u32 = match exp {
        None => 1,
        Some(x) => x
            .parse::<u32>()
            .ok()
            .filter(|_| x.bytes().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| format!("'{e}' has an exponent that is not a whole number"))?,
    };
    if base.bytes().all(|c| c.is_ascii_digit()) && !base.is_empty() {
        let b: u128 = base
            .parse::<u64>()
            .map_err(|_| format!("'{base}' is too large"))?
            .into();
        if b == 0 {
            return Err(format!("'{e}' is zero"));
        }
        return pow(b, exp)
            .map(|v| (v, false))
            .ok_or_else(|| format!("'{e}' is too large"));
    }
    // `bytes` is not DSP0004's spelling, but exports write it.
    let Some(prefix) = base
        .strip_suffix("bytes")
        .or_else(|| base.strip_suffix("byte"))
    else {
        return Err(format!("unknown unit '{base}'"));
    };
    let factor = prefix_factor(prefix).ok_or_else(|| format!("unknown unit prefix '{prefix}'"))?;
    if exp != 1 {
        return Err(format!("'{e}': bytes raised to a power are not a size"));
    }
    Ok((factor, true))
}

/// DSP0004 Annex C.1's decimal and binary prefixes.
fn prefix_factor(p: &str) -> Option<u128> {
    const DECIMAL: [&str; 6] = ["kilo", "mega", "giga", "tera", "peta", "exa"];
    const BINARY: [&str; 6] = ["kibi", "mebi", "gibi", "tebi", "pebi", "exbi"];
    if p.is_empty() {
        return Some(1);
    }
    if p == "deca" {
        return Some(10);
    }
    if p == "hecto" {
        return Some(100);
    }
    if let Some(i) = DECIMAL.iter().position(|&d| d == p) {
        return pow(1000, i as u32 + 1);
    }
    BINARY
        .iter()
        .position(|&b| b == p)
        .map(|i| 1u128 << (10 * (i + 1)))
}

fn pow(b: u128, exp: u32) -> Option<u128> {
    let v = b.checked_pow(exp)?;
    (v <= u128::from(u64::MAX)).then_some(v)
}

#[cfg(test)]
#[path = "units_tests.rs"]
mod tests;
