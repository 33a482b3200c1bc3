//! JSON written byte for byte as `msgspec.json.encode` writes it: compact, strings escaped
//! only where JSON requires it (the short forms for \b \t \n \f \r, `\u00XX` for the other
//! control characters, nothing above), floats in the shortest form that reads back the same
//! (Ryu's, which msgspec's is: `0.00001`, `1e-6`, `1e16`, `-0.0`). Tests compare with msgspec.

pub fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

pub fn int(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A finite float (the fold makes no other: callers check).
pub fn float(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
}

pub fn opt_int(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => int(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

pub fn opt_string(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(v) => string(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

pub fn bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// One value of a fixed-shape array (`tuple`).
pub enum V<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
    OptStr(Option<&'a str>),
    Bool(bool),
}

/// `[...]` of these values (a Python tuple's JSON).
pub fn tuple(out: &mut Vec<u8>, values: &[V<'_>]) {
    array(out, values, |out, v| match v {
        V::Int(v) => int(out, *v),
        V::Float(v) => float(out, *v),
        V::Str(v) => string(out, v),
        V::OptStr(v) => opt_string(out, *v),
        V::Bool(v) => bool(out, *v),
    });
}

/// `[...]` of the items, each written by `item`.
pub fn array<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut item: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (n, v) in items.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        item(out, v);
    }
    out.push(b']');
}

/// `[a,b,...]` of ints.
pub fn ints(out: &mut Vec<u8>, values: &[i64]) {
    array(out, values, |out, v| int(out, *v));
}

/// `[...]` of strings.
pub fn strings(out: &mut Vec<u8>, values: &[&str]) {
    array(out, values, |out, v| string(out, v));
}

/// `"name":`, after a comma unless it is the object's first key.
pub fn key(out: &mut Vec<u8>, name: &str) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A whole string as JSON (tests compare it with msgspec).
#[pyo3::pyfunction]
pub fn json_string(s: &str) -> String {
    let mut out = Vec::new();
    string(&mut out, s);
    String::from_utf8(out).expect("escaping keeps UTF-8")
}

/// A float as JSON (tests compare it with msgspec); None when it is not finite.
#[pyo3::pyfunction]
pub fn json_float(v: f64) -> Option<String> {
    v.is_finite()
        .then(|| ryu::Buffer::new().format_finite(v).to_owned())
}
