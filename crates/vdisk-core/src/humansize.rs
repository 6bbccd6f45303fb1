//! Sizes for people, printed exactly as qemu's `size_to_str` prints them: three significant digits and a
//! binary unit (`64 MiB`, `35.4 MiB`, `0 B`), switching unit once the number would reach 1000.

/// Formats `val` bytes the way qemu-img's human output does.
pub fn size_to_str(val: u64) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    // qemu: frexp(val / (1000.0 / 1024.0), &i); i = (i - 1) / 10;
    let scaled = val as f64 / (1000.0 / 1024.0);
    let exp = frexp_exponent(scaled);
    let i = ((exp - 1) / 10).clamp(0, 6) as usize;
    let div = (1u64 << (i * 10)) as f64;
    format!("{} {}B", format_g3(val as f64 / div), SUFFIXES[i])
}

/// The exponent `e` of C's `frexp`: `x = m * 2^e` with `0.5 <= m < 1` (0 for `x == 0`).
fn frexp_exponent(x: f64) -> i32 {
    if x == 0.0 || !x.is_finite() {
        return 0;
    }
    let bits = x.to_bits();
    let raw_exp = ((bits >> 52) & 0x7ff) as i32;
    if raw_exp == 0 {
        // Subnormal: cannot happen for byte counts, but stay correct.
        return frexp_exponent(x * (1u64 << 54) as f64) - 54;
    }
    raw_exp - 1022
}

/// C's `%0.3g`: three significant digits, trailing zeros dropped, exponent form when it would be shorter.
pub fn format_g3(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    // Round to 3 significant digits first, as printf does, then pick the style from the rounded exponent.
    let sci = format!("{:.2e}", x);
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m.to_string(), e.parse::<i32>().unwrap_or(0)),
        None => (sci.clone(), 0),
    };
    if !(-4..3).contains(&exp) {
        let m = trim_zeros(&mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", exp.abs());
    }
    let decimals = (2 - exp).max(0) as usize;
    trim_zeros(&format!("{:.*}", decimals, x))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_qemu_reference_outputs() {
        assert_eq!(size_to_str(67108864), "64 MiB");
        assert_eq!(size_to_str(37113856), "35.4 MiB");
        assert_eq!(size_to_str(37356032), "35.6 MiB");
        assert_eq!(size_to_str(32636928), "31.1 MiB");
        assert_eq!(size_to_str(33555456), "32 MiB");
        assert_eq!(size_to_str(0), "0 B");
        assert_eq!(size_to_str(512), "512 B");
        assert_eq!(size_to_str(999), "999 B");
        assert_eq!(size_to_str(1000), "0.977 KiB");
        assert_eq!(size_to_str(1024), "1 KiB");
        assert_eq!(size_to_str(1536), "1.5 KiB");
        assert_eq!(size_to_str(22 << 30), "22 GiB");
        assert_eq!(size_to_str(10739318784), "10 GiB");
        assert_eq!(size_to_str(1 << 40), "1 TiB");
    }

    #[test]
    fn g3_formatting() {
        assert_eq!(format_g3(35.4), "35.4");
        assert_eq!(format_g3(64.0), "64");
        assert_eq!(format_g3(0.9765625), "0.977");
        assert_eq!(format_g3(999.7), "1e+03");
        assert_eq!(format_g3(100.2), "100");
    }
}
