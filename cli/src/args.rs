//! A small command-line parser: `--flag value`, `--flag=value`, switches,
//! and errors that name the flag and the bad value.

use std::time::Duration;

/// A parse failure, printed as one line before exiting with status 2.
#[derive(Debug)]
pub struct ArgError(pub String);

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Args {
    cmd: &'static str,
    items: Vec<String>,
    pos: usize,
}

impl Args {
    pub fn new(cmd: &'static str, items: Vec<String>) -> Self {
        Args { cmd, items, pos: 0 }
    }

    /// The next flag (`--name`), with an inline `=value` split off, or a
    /// positional argument.
    pub fn next(&mut self) -> Option<Arg> {
        let item = self.items.get(self.pos)?.clone();
        self.pos += 1;
        if let Some(flag) = item.strip_prefix("--") {
            if let Some((name, value)) = flag.split_once('=') {
                // Put the value back to be read by `value`.
                self.items.insert(self.pos, value.to_owned());
                return Some(Arg::Flag(name.to_owned()));
            }
            return Some(Arg::Flag(flag.to_owned()));
        }
        if item == "-h" {
            return Some(Arg::Flag("help".into()));
        }
        if item.starts_with('-') && item.len() > 1 {
            return Some(Arg::Flag(item));
        }
        Some(Arg::Positional(item))
    }

    pub fn value(&mut self, flag: &str) -> Result<String, ArgError> {
        let v = self
            .items
            .get(self.pos)
            .cloned()
            .ok_or_else(|| ArgError(format!("wsloop {}: --{flag} needs a value", self.cmd)))?;
        self.pos += 1;
        Ok(v)
    }

    pub fn bad(&self, flag: &str, value: &str, expected: &str) -> ArgError {
        ArgError(format!(
            "wsloop {}: invalid value '{value}' for --{flag}: expected {expected}",
            self.cmd
        ))
    }

    pub fn unknown(&self, flag: &str) -> ArgError {
        ArgError(format!(
            "wsloop {}: unknown argument '{flag}' (see --help)",
            self.cmd
        ))
    }

    /// A size: bytes, or with a K, M or G suffix (powers of 1024).
    pub fn size(&mut self, flag: &str) -> Result<usize, ArgError> {
        let v = self.value(flag)?;
        parse_size(&v).ok_or_else(|| self.bad(flag, &v, "a size such as 65536, 64K or 16M"))
    }

    /// A whole number.
    pub fn num(&mut self, flag: &str) -> Result<usize, ArgError> {
        let v = self.value(flag)?;
        v.parse().map_err(|_| self.bad(flag, &v, "a whole number"))
    }

    /// A duration: seconds, or with ms, s, m suffix. `0` means off when
    /// `zero_off` is set.
    pub fn duration(&mut self, flag: &str, zero_off: bool) -> Result<Option<Duration>, ArgError> {
        let v = self.value(flag)?;
        match parse_duration(&v) {
            Some(d) if d.is_zero() && zero_off => Ok(None),
            Some(d) if d.is_zero() => Err(self.bad(flag, &v, "a duration above zero")),
            Some(d) => Ok(Some(d)),
            None => Err(self.bad(flag, &v, "a duration such as 30, 30s, 500ms or 5m")),
        }
    }
}

pub enum Arg {
    Flag(String),
    Positional(String),
}

pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1usize << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    if let Some(m) = s.strip_suffix('m') {
        return m
            .parse::<u64>()
            .ok()?
            .checked_mul(60)
            .map(Duration::from_secs);
    }
    let secs = s.strip_suffix('s').unwrap_or(s);
    let v: f64 = secs.parse().ok()?;
    if !v.is_finite() || !(0.0..=1e9).contains(&v) {
        return None;
    }
    Some(Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("16M"), Some(16 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("abc"), None);
    }
}
