//! Key templates: `user:42:profile` and `user:77:profile` share `user:{}:profile`.
//!
//! A key is split on `:` and `/`; a segment that is a decimal number, a UUID, a long hex
//! string or matches one of the configured patterns becomes a placeholder. A transition from
//! one key to the next is learned at template level as a [`Transition`]: the next key's
//! template plus, for each of its placeholders, how its value follows from the current key
//! (the same value as one of its placeholders, a numeric offset of one, or a literal). Applied
//! to a key the model has never seen, a transition names the key that should follow it.
//!
//! Pure code: no I/O, no clock.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use regex::bytes::Regex;
use smallvec::SmallVec;

/// Largest numeric offset learned as an offset; a larger jump is learned as a literal value
/// (page n -> n+1 is an offset; id 17 -> id 90210 is not a pattern).
pub const MAX_OFFSET: i64 = 4096;

/// The model identifies keys, templates and transitions by a 64-bit hash computed once
/// (so state lookups neither rehash nor compare bytes). Two different keys sharing a hash
/// would share a state: at 64 bits and 10^5 states, about one chance in 10^9, and the cost
/// is a wasted prefetch.
pub fn hash_bytes(b: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x7072_6573).hash_one(b)
}

/// A key's shape: its text with `{}` at each placeholder, and where the placeholders are.
/// Two templates are equal when both are; a key that literally contains `{}` stays distinct.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Template {
    text: Bytes,
    holes: Box<[u32]>,
    /// Of text and holes.
    pub hash: u64,
    /// Without placeholders, a template names one key (its text): that key's
    /// [`hash_bytes`], so a prediction of it needs neither building nor hashing.
    literal_hash: Option<u64>,
}

impl Template {
    pub fn text(&self) -> &Bytes {
        &self.text
    }

    pub fn holes(&self) -> usize {
        self.holes.len()
    }

    /// Bytes this template holds (for the model's memory estimate).
    pub fn heap_bytes(&self) -> usize {
        self.text.len() + self.holes.len() * 4
    }

    /// The one key a template without placeholders names, and its hash.
    pub fn literal(&self) -> Option<(&[u8], u64)> {
        Some((&self.text[..], self.literal_hash?))
    }
}

/// A key being built: on the stack up to 128 bytes (most keys), so building one allocates
/// nothing.
pub type KeyBuf = SmallVec<[u8; 128]>;

/// A key, its template and its placeholder values, parsed once.
#[derive(Debug)]
pub struct ParsedKey {
    pub key: Bytes,
    /// [`hash_bytes`] of the key.
    pub hash: u64,
    pub template: Arc<Template>,
    /// Each placeholder's value.
    values: SmallVec<[Value; 2]>,
}

/// Where a placeholder's value lies in its key, and the value as a [`number`], read once
/// (transitions between keys and the keys they predict compare and add numbers).
#[derive(Clone, Copy, Debug)]
struct Value {
    from: u32,
    to: u32,
    /// -1 when the value is not a number (numbers are not negative).
    number: i64,
}

impl ParsedKey {
    /// The value of placeholder `i`.
    pub fn value(&self, i: usize) -> Option<&[u8]> {
        self.values.get(i).map(|v| self.bytes(v))
    }

    /// The bytes of one of this key's values.
    fn bytes(&self, v: &Value) -> &[u8] {
        &self.key[v.from as usize..v.to as usize]
    }

    /// The value of placeholder `i` as a [`number`], if it is one.
    fn number(&self, i: usize) -> Option<i64> {
        self.values.get(i).map(|v| v.number).filter(|&n| n >= 0)
    }
}

/// Templates already seen, found by hash, so keys of one template share it (no allocation
/// per key). Unbounded: for the replay, whose trace is finite.
#[derive(Default)]
pub struct Templates(std::collections::HashMap<u64, Arc<Template>, foldhash::fast::FixedState>);

/// How one placeholder of the next key follows from the current key.
/// (`V` is `&[u8]` in a [`TransitionRef`].)
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Fill<V = Bytes> {
    /// The value of the current key's placeholder `n`.
    Same(u8),
    /// The current key's numeric placeholder `n` plus an offset.
    Offset(u8, i64),
    /// A fixed value.
    Literal(V),
}

/// A template-level successor: the next key's template and how to fill it.
#[derive(Clone, Debug)]
pub struct Transition {
    pub template: Arc<Template>,
    pub fills: Box<[Fill]>,
    /// Of the template and fills; equality is by this hash (see [`hash_bytes`]).
    pub hash: u64,
}

/// A transition as learned from two keys, borrowing from them: finding it among a state's
/// successors (by its hash) allocates nothing; [`TransitionRef::keep`] makes the owned one.
pub struct TransitionRef<'a> {
    template: &'a Arc<Template>,
    fills: SmallVec<[Fill<&'a [u8]>; 4]>,
    pub hash: u64,
}

impl<'a> TransitionRef<'a> {
    /// How `next` follows from `current`.
    pub fn between(current: &'a ParsedKey, next: &'a ParsedKey) -> TransitionRef<'a> {
        let mut fills: SmallVec<[Fill<&'a [u8]>; 4]> = SmallVec::new();
        for (i, v) in next.values.iter().enumerate() {
            fills.push(fill_for(i, v, next, current));
        }
        let hash = foldhash::fast::FixedState::with_seed(next.template.hash).hash_one(&fills[..]);
        TransitionRef {
            template: &next.template,
            fills,
            hash,
        }
    }

    pub fn keep(&self) -> Transition {
        let fills = self.fills.iter().map(|f| match f {
            Fill::Same(n) => Fill::Same(*n),
            Fill::Offset(n, d) => Fill::Offset(*n, *d),
            Fill::Literal(v) => Fill::Literal(Bytes::copy_from_slice(v)),
        });
        Transition {
            template: self.template.clone(),
            fills: fills.collect(),
            hash: self.hash,
        }
    }
}

impl Transition {
    /// Writes into `out` (cleared first; a caller reuses one buffer) the key this transition
    /// names after `current`; None when it does not apply (the current key lacks a
    /// placeholder the transition refers to, or an offset leaves the numbers).
    pub fn apply_into(&self, current: &ParsedKey, out: &mut KeyBuf) -> Option<()> {
        let t = &self.template;
        out.clear();
        let mut at = 0;
        for (&hole, fill) in t.holes.iter().zip(self.fills.iter()) {
            append(out, &t.text[at..hole as usize]);
            match fill {
                Fill::Same(n) => append(out, current.value(*n as usize)?),
                Fill::Offset(n, delta) => {
                    let base = current.number(*n as usize)?;
                    let v = base.checked_add(*delta).filter(|v| *v >= 0)?;
                    append(out, itoa::Buffer::new().format(v).as_bytes());
                }
                Fill::Literal(v) => append(out, v),
            }
            at = hole as usize + 2;
        }
        append(out, &t.text[at..]);
        Some(())
    }

    pub fn heap_bytes(&self) -> usize {
        self.fills.len() * std::mem::size_of::<Fill>()
            + self
                .fills
                .iter()
                .map(|f| match f {
                    Fill::Literal(v) => v.len(),
                    _ => 0,
                })
                .sum::<usize>()
    }
}

/// Appends `b` to `out`. Not SmallVec's `extend_from_slice`, which takes its general
/// insert path (moving the nothing after the end) at some 80 instructions a call, nor its
/// `extend`, a loop per byte: keys are built of parts of a few bytes, several per read.
#[inline]
fn append(out: &mut KeyBuf, b: &[u8]) {
    // A template's text is often empty around its placeholders.
    if b.is_empty() {
        return;
    }
    out.reserve(b.len());
    let len = out.len();
    // SAFETY: `reserve` made room for `b.len()` bytes past `len`; the copy writes them
    // before the length takes them in, and `b` cannot overlap `out`, which is borrowed
    // mutably.
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr(), out.as_mut_ptr().add(len), b.len());
        out.set_len(len + b.len());
    }
}

/// Prefers the placeholder at the same position, then any equal value, then a numeric offset
/// from the same position, then from any numeric placeholder. `v` is `next`'s placeholder
/// `i`.
fn fill_for<'a>(i: usize, v: &Value, next: &'a ParsedKey, current: &ParsedKey) -> Fill<&'a [u8]> {
    let value = next.bytes(v);
    // Numbers print back identically, so two values are equal as numbers when either is one
    // (-1 for the other), and only two non-numbers compare their bytes.
    let equal = |c: &Value| {
        if v.number >= 0 || c.number >= 0 {
            v.number == c.number
        } else {
            current.bytes(c) == value
        }
    };
    if current.values.get(i).is_some_and(equal) {
        return Fill::Same(i as u8);
    }
    if let Some(j) = current.values.iter().position(equal) {
        return Fill::Same(j as u8);
    }
    if v.number >= 0 {
        let v = v.number;
        let n = current.values.len();
        let order = std::iter::once(i).chain((0..n).filter(|&j| j != i));
        for j in order {
            if let Some(base) = current.number(j) {
                let delta = v - base;
                if delta.abs() <= MAX_OFFSET {
                    return Fill::Offset(j as u8, delta);
                }
            }
        }
    }
    Fill::Literal(value)
}

/// A decimal number without sign or leading zero (so that it prints back identically).
fn number(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    // At most 18 digits: fits an i64 without overflow checks.
    s.iter().try_fold(0i64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

/// Splits keys into templates. Holds the configured extra patterns.
#[derive(Clone, Default)]
pub struct Templater {
    patterns: Vec<Regex>,
}

impl Templater {
    /// `patterns` are regular expressions a whole segment must match to become a
    /// placeholder, in addition to numbers, UUIDs and long hex strings.
    pub fn new(patterns: &[String]) -> Result<Templater, String> {
        let patterns = patterns
            .iter()
            .map(|p| Regex::new(&format!("^(?:{p})$")).map_err(|e| format!("{p}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Templater { patterns })
    }

    pub fn parse(&self, key: Bytes) -> ParsedKey {
        let hash = hash_bytes(&key);
        self.parse_with(key, hash, None)
    }

    /// [`Templater::parse`] of a key whose [`hash_bytes`] is known, its template taken
    /// from `seen` when it is there (and added when not).
    pub fn parse_with(&self, key: Bytes, hash: u64, seen: Option<&mut Templates>) -> ParsedKey {
        let (text, holes, values) = self.split(&key);
        let template_hash = template_hash(&text, &holes);
        let make = || {
            Arc::new(Template {
                text: Bytes::copy_from_slice(&text),
                holes: holes[..].into(),
                hash: template_hash,
                // Without placeholders the text is the key.
                literal_hash: holes.is_empty().then_some(hash),
            })
        };
        let template = match seen {
            Some(seen) => seen.0.entry(template_hash).or_insert_with(make).clone(),
            None => make(),
        };
        ParsedKey {
            template,
            values,
            hash,
            key,
        }
    }

    /// The hash of `key`'s template (`parse(key).template.hash`), without building it: for
    /// grouping values by template on the write path.
    pub fn template_hash(&self, key: &[u8]) -> u64 {
        let (text, holes, _) = self.split(key);
        template_hash(&text, &holes)
    }

    /// A key's template text, its placeholders' offsets in it, and its values.
    #[allow(clippy::type_complexity)]
    fn split(&self, key: &[u8]) -> (KeyBuf, SmallVec<[u32; 4]>, SmallVec<[Value; 2]>) {
        let mut text = KeyBuf::new();
        let mut holes: SmallVec<[u32; 4]> = SmallVec::new();
        let mut values = SmallVec::new();
        let mut start = 0;
        for end in memchr::memchr2_iter(b':', b'/', key).chain(std::iter::once(key.len())) {
            let seg = &key[start..end];
            if self.is_placeholder(seg) {
                holes.push(text.len() as u32);
                append(&mut text, b"{}");
                values.push(Value {
                    from: start as u32,
                    to: end as u32,
                    number: number(seg).unwrap_or(-1),
                });
            } else {
                append(&mut text, seg);
            }
            if end < key.len() {
                text.push(key[end]);
            }
            start = end + 1;
        }
        (text, holes, values)
    }

    fn is_placeholder(&self, seg: &[u8]) -> bool {
        !seg.is_empty()
            && (seg.iter().all(u8::is_ascii_digit)
                || is_uuid(seg)
                || is_long_hex(seg)
                || self.patterns.iter().any(|p| p.is_match(seg)))
    }
}

/// Whether `b` separates key segments (the templater's split, and a route's `{name}`).
pub fn is_separator(b: u8) -> bool {
    b == b':' || b == b'/'
}

/// A key pattern with named placeholders, as an origin route writes it: `product:{id}`,
/// `user:{uid}:orders:page:{n}`, `{k*}`. `{name}` matches one non-empty segment (up to the
/// next `:` or `/`, as the templater splits keys); `{name*}`, last in the pattern, matches the
/// rest of the key, separators included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Hole { name: String, rest: bool },
}

impl KeyPattern {
    pub fn parse(p: &str) -> Result<KeyPattern, String> {
        let mut parts = Vec::new();
        let mut rest = p;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("'{p}': a '{{' without '}}'"))?;
                    let inner = &rest[1..end];
                    let (name, star) = match inner.strip_suffix('*') {
                        Some(n) => (n, true),
                        None => (inner, false),
                    };
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(format!("'{p}': placeholder '{{{inner}}}' is not a name"));
                    }
                    if matches!(parts.last(), Some(Part::Hole { .. })) {
                        return Err(format!(
                            "'{p}': two placeholders need a separator between them"
                        ));
                    }
                    parts.push(Part::Hole {
                        name: name.to_string(),
                        rest: star,
                    });
                    rest = &rest[end + 1..];
                    if star && !rest.is_empty() {
                        return Err(format!("'{p}': '{{{inner}}}' must end the pattern"));
                    }
                }
                Some(i) => {
                    parts.push(Part::Literal(rest.as_bytes()[..i].to_vec()));
                    rest = &rest[i..];
                }
                None => {
                    if rest.contains('}') {
                        return Err(format!("'{p}': a '}}' without '{{'"));
                    }
                    parts.push(Part::Literal(rest.as_bytes().to_vec()));
                    rest = "";
                }
            }
        }
        if parts.is_empty() {
            return Err("an empty key pattern".into());
        }
        Ok(KeyPattern { parts })
    }

    /// The placeholders' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Hole { name, .. } => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The key with each placeholder filled by `value_of(name)`; None when one has no value.
    pub fn fill<'v>(&self, value_of: impl Fn(&str) -> Option<&'v str>) -> Option<String> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.extend_from_slice(l),
                Part::Hole { name, .. } => out.extend_from_slice(value_of(name)?.as_bytes()),
            }
        }
        String::from_utf8(out).ok()
    }

    /// Whether `key` matches (no allocation: the read path asks this of every routed read).
    pub fn matches(&self, key: &[u8]) -> bool {
        self.walk(key, |_, _| {})
    }

    /// The placeholders' values when `key` matches, by name.
    pub fn captures<'k>(&self, key: &'k [u8]) -> Option<Vec<(&str, &'k [u8])>> {
        let mut out = Vec::new();
        self.walk(key, |name, v| out.push((name, v))).then_some(out)
    }

    /// Matches `key`, handing each placeholder's value to `found`.
    fn walk<'p, 'k>(&'p self, key: &'k [u8], mut found: impl FnMut(&'p str, &'k [u8])) -> bool {
        let mut at = 0;
        for part in &self.parts {
            match part {
                Part::Literal(l) => {
                    if !key[at..].starts_with(l) {
                        return false;
                    }
                    at += l.len();
                }
                Part::Hole { name, rest: true } => {
                    if at == key.len() {
                        return false;
                    }
                    found(name.as_str(), &key[at..]);
                    at = key.len();
                }
                Part::Hole { name, rest: false } => {
                    let len = key[at..]
                        .iter()
                        .position(|&b| is_separator(b))
                        .unwrap_or(key.len() - at);
                    if len == 0 {
                        return false;
                    }
                    found(name.as_str(), &key[at..at + len]);
                    at += len;
                }
            }
        }
        at == key.len()
    }
}

fn template_hash(text: &[u8], holes: &[u32]) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x7465_6d70).build_hasher();
    text.hash(&mut h);
    holes.hash(&mut h);
    h.finish()
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// 16 or more hex digits: ids and hashes. Shorter all-hex words (`cafe`, `added`) stay
/// literal.
fn is_long_hex(s: &[u8]) -> bool {
    s.len() >= 16 && s.iter().all(u8::is_ascii_hexdigit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn between(current: &ParsedKey, next: &ParsedKey) -> Transition {
        TransitionRef::between(current, next).keep()
    }

    fn apply(t: &Transition, current: &ParsedKey) -> Option<Bytes> {
        let mut out = KeyBuf::new();
        t.apply_into(current, &mut out)?;
        Some(Bytes::copy_from_slice(&out))
    }

    fn parse(k: &str) -> ParsedKey {
        Templater::default().parse(Bytes::copy_from_slice(k.as_bytes()))
    }

    fn values(p: &ParsedKey) -> Vec<&[u8]> {
        p.values.iter().map(|v| p.bytes(v)).collect()
    }

    #[test]
    fn numeric_uuid_and_hex_segments_become_placeholders() {
        let p = parse("user:42:profile");
        assert_eq!(&p.template.text()[..], b"user:{}:profile");
        assert_eq!(values(&p), [b"42"]);
        let p = parse("/s/123e4567-e89b-12d3-a456-426614174000/a0b1c2d3e4f5a6b7/x");
        assert_eq!(&p.template.text()[..], b"/s/{}/{}/x");
        assert_eq!(values(&p).len(), 2);
        let p = parse("plain/key:name");
        assert_eq!(&p.template.text()[..], b"plain/key:name");
        assert!(values(&p).is_empty());
        assert_eq!(
            parse("user:42:profile").template,
            parse("user:7:profile").template
        );
        let t = Templater::default();
        for k in [
            "user:42:profile",
            "/s/123e4567-e89b-12d3-a456-426614174000/x",
            "plain",
        ] {
            assert_eq!(t.template_hash(k.as_bytes()), parse(k).template.hash, "{k}");
        }
    }

    #[test]
    fn key_patterns_match_segments_and_rests() {
        let p = KeyPattern::parse("user:{uid}:orders:page:{n}").unwrap();
        assert_eq!(p.names().collect::<Vec<_>>(), ["uid", "n"]);
        assert_eq!(
            p.captures(b"user:42:orders:page:3"),
            Some(vec![("uid", &b"42"[..]), ("n", &b"3"[..])])
        );
        assert_eq!(
            p.captures(b"user:42:orders:page:"),
            None,
            "an empty segment"
        );
        assert!(p.matches(b"user:42:orders:page:3") && !p.matches(b"user:42:orders:page:"));
        assert_eq!(p.captures(b"user:4/2:orders:page:3"), None, "two segments");
        assert_eq!(p.captures(b"user:42:orders:page:3:x"), None, "more after");
        let all = KeyPattern::parse("{k*}").unwrap();
        assert_eq!(all.captures(b"a:b/c"), Some(vec![("k", &b"a:b/c"[..])]));
        assert_eq!(all.captures(b""), None);
        let lit = KeyPattern::parse("config").unwrap();
        assert_eq!(lit.captures(b"config"), Some(vec![]));
        assert_eq!(lit.captures(b"config2"), None);
        for bad in ["", "a:{", "a:{}", "a:{b*}:c", "{a}{b}", "x}", "{a-b}"] {
            assert!(KeyPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configured_patterns_make_placeholders() {
        let t = Templater::new(&["sts-[0-9]+".to_string()]).unwrap();
        let p = t.parse(Bytes::from_static(b"/missions/sts-70/index.html"));
        assert_eq!(&p.template.text()[..], b"/missions/{}/index.html");
        assert!(Templater::new(&["(".to_string()]).is_err());
    }

    #[test]
    fn a_template_without_placeholders_names_its_key() {
        for k in ["plain/key:name", "a:{}:b", "/images/logo.gif"] {
            let p = parse(k);
            assert_eq!(
                p.template.literal(),
                Some((k.as_bytes(), hash_bytes(k.as_bytes())))
            );
            // As a successor it names what building it names.
            let t = between(&parse("user:1"), &p);
            assert_eq!(&apply(&t, &parse("user:2")).unwrap()[..], k.as_bytes());
        }
        assert_eq!(parse("user:42").template.literal(), None);
    }

    #[test]
    fn equal_values_are_the_same_whether_numbers_or_not() {
        let values = [
            "1",
            "01",
            "001",
            "7",
            "999999999999999999",
            "0123456789abcdef",
            "123e4567-e89b-12d3-a456-426614174000",
        ];
        for x in values {
            for y in values {
                let t = between(&parse(&format!("a:{x}")), &parse(&format!("b:{y}")));
                assert_eq!(t.fills[0] == Fill::Same(0), x == y, "{x} -> {y}");
            }
        }
    }

    #[test]
    fn a_literal_brace_pair_is_not_a_placeholder() {
        assert_ne!(parse("a:{}:b").template, parse("a:1:b").template);
    }

    #[test]
    fn same_id_transitions_apply_to_unseen_ids() {
        let t = between(&parse("user:42:profile"), &parse("user:42:orders"));
        assert_eq!(t.fills[..], [Fill::Same(0)]);
        assert_eq!(
            apply(&t, &parse("user:77:profile")).unwrap(),
            "user:77:orders"
        );
    }

    #[test]
    fn numbers_are_plain_decimals_that_print_back() {
        let max = "9".repeat(18);
        for (s, n) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("1200", Some(1200)),
            ("007", None),
        ] {
            assert_eq!(number(s.as_bytes()), n, "{s}");
        }
        assert_eq!(number(max.as_bytes()), Some(999_999_999_999_999_999));
        for s in ["", "-1", "+1", "1a", "1 ", "1.5", "1234567890123456789"] {
            assert_eq!(number(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn offsets_follow_pages() {
        let t = between(&parse("feed:page:3"), &parse("feed:page:4"));
        assert_eq!(t.fills[..], [Fill::Offset(0, 1)]);
        assert_eq!(apply(&t, &parse("feed:page:9")).unwrap(), "feed:page:10");
        // Leading zeros are not numbers that print back the same: a literal.
        let t = between(&parse("f:1"), &parse("f:007"));
        assert_eq!(t.fills[..], [Fill::Literal(Bytes::from_static(b"007"))]);
        // An offset below zero does not apply.
        let t = between(&parse("f:5"), &parse("f:1"));
        assert_eq!(apply(&t, &parse("f:2")), None);
    }

    #[test]
    fn values_move_between_positions_and_far_jumps_are_literals() {
        let t = between(&parse("a:1:b:2"), &parse("c:2"));
        assert_eq!(t.fills[..], [Fill::Same(1)]);
        assert_eq!(apply(&t, &parse("a:5:b:6")).unwrap(), "c:6");
        let t = between(&parse("a:1"), &parse("b:900000"));
        assert_eq!(t.fills[..], [Fill::Literal(Bytes::from_static(b"900000"))]);
        // A transition naming a placeholder the current key lacks does not apply.
        assert_eq!(apply(&t, &parse("a:1")).unwrap(), "b:900000");
        let t = between(&parse("a:1:2"), &parse("b:2"));
        assert_eq!(apply(&t, &parse("a:1")), None);
    }
}
