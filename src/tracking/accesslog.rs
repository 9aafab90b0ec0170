//! The access log's line format, written by the tracker and read by `prescient replay`:
//!
//! ```text
//! <unix seconds with millis> TAB <context> TAB <COMMAND> TAB <key> LF
//! ```
//!
//! Context and key are percent-encoded where they hold a control byte, a space, `%` or a
//! byte above 0x7e, so any binary key fits on one line and reads back identically.

use bytes::Bytes;
use percent_encoding::{percent_decode, percent_encode, AsciiSet, CONTROLS};

const ESCAPED: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'\t');

/// One line of the log, with its trailing newline.
pub fn line(unix_secs: f64, context: &[u8], command: &str, key: &[u8]) -> String {
    format!(
        "{unix_secs:.3}\t{}\t{command}\t{}\n",
        percent_encode(context, ESCAPED),
        percent_encode(key, ESCAPED)
    )
}

/// A parsed line: time, context, command, key.
pub type Entry = (f64, Bytes, String, Bytes);

pub fn parse(line: &str) -> Option<Entry> {
    let mut f = line.trim_end_matches(['\r', '\n']).split('\t');
    let time = f.next()?.parse().ok()?;
    let context = Bytes::from(percent_decode(f.next()?.as_bytes()).collect::<Vec<u8>>());
    let command = f.next()?.to_string();
    let key = Bytes::from(percent_decode(f.next()?.as_bytes()).collect::<Vec<u8>>());
    f.next().is_none().then_some((time, context, command, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_keys_round_trip_on_one_line() {
        let key = b"a b\tc\n%\xff\x00:1";
        let l = line(1700000000.25, b"client 7", "GET", key);
        assert_eq!(l.matches('\n').count(), 1);
        let (t, ctx, cmd, k) = parse(&l).unwrap();
        assert_eq!(t, 1700000000.25);
        assert_eq!(&ctx[..], b"client 7");
        assert_eq!(cmd, "GET");
        assert_eq!(&k[..], key);
        assert_eq!(parse("not a line"), None);
    }
}
