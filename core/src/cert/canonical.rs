//! RFC 8785 (JSON Canonicalization Scheme, JCS) canonical form of a JSON value, and a strict
//! parser that refuses duplicate object keys.
//!
//! The canonical form is what a certificate's signature covers (see
//! [`proofs/cert/signing.md`](../../../proofs/cert/signing.md)): the same content gives the same
//! bytes whatever the key order, whitespace or number spelling of the file on disk.
//!
//! - Objects: members sorted by their names compared as UTF-16 code units (RFC 8785 §3.2.3).
//! - No whitespace between tokens.
//! - Strings: ECMAScript `JSON.stringify` escaping: `\"`, `\\`, `\b \t \n \f \r`, other control
//!   characters as `\u00xx` (lowercase hex); everything else (non-ASCII included) as UTF-8.
//! - Numbers: IEEE 754 doubles written by ECMAScript's `Number.prototype.toString` (shortest
//!   round-trip digits; `1e-7`, `0.000001`, `1e+21`, `100`), RFC 8785 §3.2.2.3. NaN and infinities
//!   are refused: JSON cannot hold them (an infinite epsilon is written as the string `"infinity"`).
//!   Integers outside ±(2^53 − 1) are refused (I-JSON, RFC 7493 §2.2): they do not survive the
//!   round trip through a double, so two different values could share one canonical form.
//!
//! Kept hand-written rather than a JCS crate (e.g. `serde_jcs`) because those canonicalise a
//! `serde_json::Value`, which has already dropped duplicate keys silently: the strict parser here
//! refuses them (`strict_parser_refuses_duplicates_and_trailing_data`, and `tests/cert.rs`, where a
//! duplicate key placed before the real one would make a first-wins reader see epsilon 0).
use crate::error::{Error, Result};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use std::fmt;

/// Largest integer magnitude that I-JSON allows (2^53 − 1).
pub const MAX_SAFE_INTEGER: u64 = (1u64 << 53) - 1;

/// The RFC 8785 canonical form of `value` as a UTF-8 string.
///
/// # Errors
/// [`Error::InvalidParameter`] for a non-finite number or an integer outside ±(2^53 − 1).
///
/// # Examples
/// ```
/// let v: serde_json::Value = serde_json::from_str(r#"{"b": [1.0, 1e21, 1e-7], "a": "\u000f"}"#)?;
/// assert_eq!(dpaudit_core::cert::canonical::canonical_json(&v)?, r#"{"a":"\u000f","b":[1,1e+21,1e-7]}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn canonical_json(value: &Value) -> Result<String> {
    let mut out = String::new();
    write_value(value, &mut out)?;
    Ok(out)
}

/// The canonical form laid out for people: the same tokens as [`canonical_json`] (sorted keys,
/// canonical numbers and strings) with newlines and two-space indentation. Certificates are
/// written this way, so that every number in the file is already in its canonical spelling
/// (which [`check_canonical_numbers`] requires).
///
/// # Errors
/// As [`canonical_json`].
pub fn canonical_json_pretty(value: &Value) -> Result<String> {
    let mut out = String::new();
    write_pretty(value, 0, &mut out)?;
    out.push('\n');
    Ok(out)
}

fn write_pretty(value: &Value, depth: usize, out: &mut String) -> Result<()> {
    let indent = |out: &mut String, d: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", d));
    };
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, depth + 1);
                write_pretty(item, depth + 1, out)?;
            }
            indent(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            let members = sorted_members(map);
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, depth + 1);
                write_string(k, out);
                out.push_str(": ");
                write_pretty(v, depth + 1, out)?;
            }
            indent(out, depth);
            out.push('}');
        }
        other => write_value(other, out)?,
    }
    Ok(())
}

/// Checks that every number token in the JSON text `bytes` (already valid JSON) is spelled as
/// RFC 8785 writes it (`0.00001`, not `1e-5` or `1.0E-5`; no superfluous 17th digit). JSON lets
/// one double be spelled many ways; requiring the one canonical spelling means no byte of a
/// certificate file can change without changing what it says to every reader, and every
/// correct parser reads the exact signed double.
///
/// # Errors
/// The first offending token.
pub fn check_canonical_numbers(bytes: &[u8]) -> std::result::Result<(), String> {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let token = std::str::from_utf8(&bytes[start..i]).map_err(|e| e.to_string())?;
                let x: f64 = token.parse().map_err(|_| format!("bad number {token:?}"))?;
                let canonical = es_number_to_string(x).map_err(|e| e.to_string())?;
                if canonical != token {
                    return Err(format!("number {token:?} is not in canonical form (write {canonical:?})"));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn write_value(value: &Value, out: &mut String) -> Result<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number_to_string(n)?),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let members = sorted_members(map);
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn number_to_string(n: &Number) -> Result<String> {
    if let Some(u) = n.as_u64() {
        if u > MAX_SAFE_INTEGER {
            return Err(Error::invalid("JSON integer", u, "outside the I-JSON range ±(2^53 - 1)"));
        }
        return Ok(u.to_string());
    }
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(Error::invalid("JSON integer", i, "outside the I-JSON range ±(2^53 - 1)"));
        }
        return Ok(i.to_string());
    }
    match n.as_f64() {
        Some(x) => es_number_to_string(x),
        None => Err(Error::invalid("JSON number", n, "not representable as a double")),
    }
}

/// ECMAScript's `Number.prototype.toString()` for a finite double (ECMA-262 §6.1.6.1.20,
/// "Number::toString"), as RFC 8785 requires.
///
/// # Errors
/// [`Error::InvalidParameter`] for NaN or an infinity.
pub fn es_number_to_string(x: f64) -> Result<String> {
    if !x.is_finite() {
        return Err(Error::invalid("JSON number", x, "NaN and infinities cannot be written in JSON"));
    }
    if x == 0.0 {
        return Ok("0".to_owned()); // -0 included
    }
    let sign = if x < 0.0 { "-" } else { "" };
    // Rust's `{:e}` without a precision prints the shortest digit string that round-trips (and,
    // among those, the closest to x), which is the `s, k` of the ECMAScript algorithm.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').expect("LowerExp output always has an exponent");
    let exp: i32 = exp.parse().expect("LowerExp exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exp + 1; // x = 0.d1d2...dk × 10^n
    let digits = closest_even(x.abs(), digits, n - k);
    let mut s = String::from(sign);
    if k <= n && n <= 21 {
        s.push_str(&digits);
        s.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        s.push_str(&digits[..n as usize]);
        s.push('.');
        s.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', (-n) as usize));
        s.push_str(&digits);
    } else {
        s.push_str(&digits[..1]);
        if k > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        s.push('e');
        s.push(if n > 0 { '+' } else { '-' });
        s.push_str(&(n - 1).abs().to_string());
    }
    Ok(s)
}

/// ECMAScript's tie rule. Rust's shortest digits have the right length `k` and are a closest
/// k-digit string to x, but when two k-digit strings are equally close (x = ...206.25 between
/// ...206.2 and ...206.3) ECMAScript takes the even one. Compares the round-tripping neighbours
/// `digits ± 1` (same length) with exact integer arithmetic.
fn closest_even(x: f64, digits: String, p: i32) -> String {
    use rug::Integer;
    let d: u64 = digits.parse().expect("at most 17 decimal digits");
    let k = digits.len();
    let (m, e) = {
        let bits = x.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i32;
        let frac = bits & ((1u64 << 52) - 1);
        if exp == 0 {
            (frac, -1074)
        } else {
            (frac | (1u64 << 52), exp - 1075)
        }
    };
    // Distance |c × 10^p − m × 2^e|, scaled by 2^a × 10^b to integers (same scale for every c).
    let (a, b) = ((-e).max(0) as u32, (-p).max(0) as u32);
    let target = Integer::from(m) << (e + a as i32) as u32;
    let target = target * Integer::from(Integer::u_pow_u(10, b));
    let dist = |c: u64| -> Integer {
        let v = (Integer::from(c) * Integer::from(Integer::u_pow_u(10, (p + b as i32) as u32))) << a;
        (v - &target).abs()
    };
    let round_trips = |c: u64| -> bool { format!("{c}e{p}").parse::<f64>() == Ok(x) };
    let mut best = d;
    let mut best_dist = dist(d);
    for c in [d.wrapping_sub(1), d + 1] {
        if c == 0 || c.to_string().len() != k || !round_trips(c) {
            continue;
        }
        let dc = dist(c);
        if dc < best_dist || (dc == best_dist && c % 2 == 0) {
            best = c;
            best_dist = dc;
        }
    }
    best.to_string()
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses JSON text into a [`Value`], refusing what RFC 8785 (through I-JSON) does not accept:
/// duplicate member names in an object (with them, two readers could see two different
/// certificates in one signed file) and trailing data.
///
/// # Errors
/// A message saying what is wrong (the caller adds the file's path).
pub fn parse_strict(bytes: &[u8]) -> std::result::Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let StrictValue(v) = StrictValue::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_bool<E>(self, b: bool) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(b)))
    }
    fn visit_u64<E>(self, u: u64) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(u.into())))
    }
    fn visit_i64<E>(self, i: i64) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(i.into())))
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> std::result::Result<StrictValue, E> {
        Number::from_f64(x).map(|n| StrictValue(Value::Number(n))).ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, s: &str) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::String(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::String(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(StrictValue(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<StrictValue, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate object key {key:?}")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(StrictValue(Value::Object(out)))
    }
}

/// An object's members in RFC 8785 order: keys compared as UTF-16 code units.
fn sorted_members(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8785 Appendix B: IEEE 754 bit patterns and their expected canonical spelling.
    /// (Checked against node's `Number.prototype.toString` when this table was written.)
    const RFC8785_NUMBERS: &[(u64, &str)] = &[
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];

    #[test]
    fn rfc8785_number_table() {
        for &(bits, expected) in RFC8785_NUMBERS {
            assert_eq!(es_number_to_string(f64::from_bits(bits)).unwrap(), expected, "bits {bits:016x}");
        }
        // The table's two non-finite rows: refused, never written.
        assert!(es_number_to_string(f64::from_bits(0x7fffffffffffffff)).is_err());
        assert!(es_number_to_string(f64::from_bits(0x7ff0000000000000)).is_err());
        assert!(es_number_to_string(f64::NEG_INFINITY).is_err());
    }

    /// ~8000 doubles (random bit patterns, halfway ties such as `2^50 + 0.25`, decimal-looking
    /// values) against node's `Number.prototype.toString`, in `fixtures/cert/ecmascript_numbers.tsv`.
    #[test]
    fn matches_node_number_to_string() {
        let table = include_str!("../../../fixtures/cert/ecmascript_numbers.tsv");
        let mut checked = 0;
        for line in table.lines().filter(|l| !l.starts_with('#')) {
            let (bits, expected) = line.split_once('\t').unwrap();
            let x = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
            assert_eq!(es_number_to_string(x).unwrap(), expected, "bits {bits}");
            checked += 1;
        }
        assert!(checked > 7000);
    }

    #[test]
    fn ecmascript_number_forms() {
        for (x, s) in [
            (1e-5, "0.00001"),
            (1e-7, "1e-7"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (4.5, "4.5"),
            (2e-3, "0.002"),
            (1e-27, "1e-27"),
            (1e30, "1e+30"),
            (100.0, "100"),
            (-1.5e-9, "-1.5e-9"),
            (0.1, "0.1"),
            (123456789012.0, "123456789012"),
        ] {
            assert_eq!(es_number_to_string(x).unwrap(), s);
        }
    }

    #[test]
    fn canonical_numbers_round_trip_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8785);
        for _ in 0..20_000 {
            let x = f64::from_bits(rng.gen::<u64>());
            if !x.is_finite() {
                continue;
            }
            let s = es_number_to_string(x).unwrap();
            let back: f64 = s.parse().unwrap();
            assert_eq!(back.to_bits(), if x == 0.0 { 0 } else { x.to_bits() }, "{x:e} -> {s}");
            // And through serde_json, as the verifier reads it (float_roundtrip).
            let v: Value = serde_json::from_str(&s).unwrap();
            assert_eq!(v.as_f64().unwrap(), back, "{s}");
        }
    }

    /// RFC 8785 §3.2.2 example ("numbers", "string", "literals").
    #[test]
    fn rfc8785_main_example() {
        let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
        let v = parse_strict(input.as_bytes()).unwrap();
        assert_eq!(
            canonical_json(&v).unwrap(),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    /// RFC 8785 §3.2.3 sorting example: keys ordered by UTF-16 code units (the emoji's surrogate
    /// pair D83D DE00 sorts before U+FB33 although its code point is larger).
    #[test]
    fn rfc8785_sorting_example() {
        let input = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
        let v = parse_strict(input.as_bytes()).unwrap();
        let c = canonical_json(&v).unwrap();
        let values = [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh",
        ];
        let mut last = 0;
        for name in values {
            let at = c.find(name).unwrap();
            assert!(at > last, "{name} out of order in {c}");
            last = at;
        }
        assert!(c.starts_with("{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\""));
    }

    #[test]
    fn strict_parser_refuses_duplicates_and_trailing_data() {
        assert!(parse_strict(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_strict(br#"{"x":{"a":1,"b":{"a":1,"a":1}}}"#).is_err());
        assert!(parse_strict(br#"{"a":1} {}"#).is_err());
        assert!(parse_strict(br#"{"a":1}  "#).is_ok());
    }

    #[test]
    fn pretty_form_has_canonical_tokens_and_numbers() {
        let v = serde_json::json!({"b": [1.0, 1e-5, {"y": 1e21, "x": []}], "a": {}, "c": "q\"\n"});
        let pretty = canonical_json_pretty(&v).unwrap();
        let compact: String = {
            let re = parse_strict(pretty.as_bytes()).unwrap();
            canonical_json(&re).unwrap()
        };
        assert_eq!(compact, canonical_json(&v).unwrap());
        assert_eq!(compact, r#"{"a":{},"b":[1,0.00001,{"x":[],"y":1e+21}],"c":"q\"\n"}"#);
        assert!(check_canonical_numbers(pretty.as_bytes()).is_ok());
        for bad in ["[1.0]", "[1e-5]", "[0.10]", "[-0]", "[1E+21]", "[0.14135223565980593]"] {
            assert!(check_canonical_numbers(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(check_canonical_numbers(br#"{"1.0": "2.50", "a\"1.0": 0.14135223565980592}"#).is_ok());
    }

    #[test]
    fn unsafe_integers_are_refused() {
        assert!(canonical_json(&serde_json::json!(MAX_SAFE_INTEGER)).is_ok());
        assert!(canonical_json(&serde_json::json!(MAX_SAFE_INTEGER + 1)).is_err());
        assert!(canonical_json(&serde_json::json!(-(MAX_SAFE_INTEGER as i64) - 1)).is_err());
        assert_eq!(canonical_json(&serde_json::json!([-0.0, 1.0, -3])).unwrap(), "[0,1,-3]");
    }
}
