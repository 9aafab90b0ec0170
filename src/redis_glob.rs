//! Redis's glob matching (`stringmatchlen` in util.c): `*`, `?`, `[abc]`, `[^a]`, `[a-z]` and
//! `\x`, byte for byte as Redis 7.0 matches, for KEYS, SCAN MATCH and PUBSUB on the embedded
//! store, the compression include/exclude patterns and `PROXY CONFIG GET`.
//!
//! Ported with Redis's guard against patterns like `*a*a*a*a*a*b`, which a naive matcher tries
//! in exponential time (CVE-2022-36021): once the rest of the pattern after a `*` matches from
//! no position of the string, no earlier `*` can help by matching more, and the search stops.
//! Reads past either end see a NUL, as the C code's terminated strings do.

/// Whether `string` matches `pattern`, case-sensitively.
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    imp(pattern, string, &mut skip_longer)
}

/// As KEYS and SCAN match: Redis skips matching for a lone `*`, so it takes every key, the
/// empty one too (which `matches` alone, like `stringmatchlen`, refuses).
pub fn matches_key(pattern: &[u8], key: &[u8]) -> bool {
    pattern == b"*" || matches(pattern, key)
}

fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn imp(pattern: &[u8], string: &[u8], skip_longer: &mut bool) -> bool {
    let (mut p, mut s) = (0usize, 0usize);
    let (plen, slen) = (pattern.len(), string.len());
    while p < plen && s < slen {
        match pattern[p] {
            b'*' => {
                while p < plen && at(pattern, p + 1) == b'*' {
                    p += 1;
                }
                if plen - p == 1 {
                    return true;
                }
                while s < slen {
                    if imp(&pattern[p + 1..], &string[s..], skip_longer) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let not = at(pattern, p) == b'^';
                if not {
                    p += 1;
                }
                let mut hit = false;
                let c = string[s];
                loop {
                    if at(pattern, p) == b'\\' && plen.saturating_sub(p) >= 2 {
                        p += 1;
                        hit |= pattern[p] == c;
                    } else if at(pattern, p) == b']' {
                        break;
                    } else if p >= plen {
                        p -= 1;
                        break;
                    } else if plen - p >= 3 && pattern[p + 1] == b'-' {
                        let (a, b) = (pattern[p], pattern[p + 2]);
                        let (lo, hi) = (a.min(b), a.max(b));
                        p += 2;
                        hit |= (lo..=hi).contains(&c);
                    } else {
                        hit |= pattern[p] == c;
                    }
                    p += 1;
                }
                if hit == not {
                    return false;
                }
                s += 1;
            }
            first => {
                let want = if first == b'\\' && plen - p >= 2 {
                    p += 1;
                    pattern[p]
                } else {
                    first
                };
                if want != string[s] {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == slen {
            while at(pattern, p) == b'*' {
                p += 1;
            }
            break;
        }
    }
    p >= plen && s == slen
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_as_redis_matches_them() {
        assert!(matches(b"k*", b"k1"));
        // stringmatchlen refuses the empty string for "*"; KEYS and SCAN special-case it.
        assert!(!matches(b"*", b""));
        assert!(super::matches_key(b"*", b""));
        assert!(matches(b"", b""));
        assert!(!matches(b"", b"a"));
        assert!(!matches(b"k?", b"k"));
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"h[a-c]llo", b"hbllo"));
        assert!(matches(b"h[c-a]llo", b"hbllo"));
        assert!(matches(b"a\\*b", b"a*b"));
        assert!(!matches(b"a\\*b", b"axb"));
        assert!(matches(b"a*", b"a"));
        assert!(matches(b"a**", b"a"));
        assert!(matches(b"*a*", b"bab"));
        assert!(!matches(b"*a", b"ab"));
        // An unclosed class ends at the pattern's end.
        assert!(matches(b"[ab", b"a"));
        assert!(matches(b"x[\\]]", b"x]"));
        assert!(matches(b"user:*:profile", b"user:42:profile"));
    }

    #[test]
    fn a_pattern_built_to_backtrack_ends_at_once() {
        // Naive backtracking tries about C(60, 12) ways here and would not finish.
        let pattern = b"*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let string = vec![b'a'; 60];
        assert!(!matches(pattern, &string));
        let mut yes = string.clone();
        yes.push(b'b');
        assert!(matches(pattern, &yes));
    }
}
