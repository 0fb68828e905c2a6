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

/// One word of the command line, or one taken from an environment
/// variable (named, so errors can say where a bad value came from).
struct Item {
    text: String,
    var: Option<String>,
}

pub struct Args {
    cmd: &'static str,
    items: Vec<Item>,
    pos: usize,
    /// The variable the flag being parsed came from, if any.
    current_var: Option<String>,
}

/// How an option is spelled in the environment (`WSLOOP_<FLAG>`, the flag
/// upper-cased with `-` as `_`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvKind {
    /// `WSLOOP_MAX_MESSAGE=16M` is `--max-message 16M`.
    Value,
    /// `WSLOOP_DEFLATE=1` (or `true`, `yes`, `on`) is `--deflate`; `0`,
    /// `false`, `no`, `off` or empty is nothing.
    Switch,
    /// `WSLOOP_ALLOWED_ORIGIN=A,B` is `--allowed-origin A --allowed-origin B`.
    List,
}

/// The environment variable for `flag`.
pub fn env_var(flag: &str) -> String {
    format!("WSLOOP_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

impl Args {
    pub fn new(cmd: &'static str, items: Vec<String>) -> Self {
        Args {
            cmd,
            items: items
                .into_iter()
                .map(|text| Item { text, var: None })
                .collect(),
            pos: 0,
            current_var: None,
        }
    }

    /// Adds the options of `spec` that are set in the environment (read
    /// through `env`) and not on the command line, which wins.
    pub fn with_env(
        mut self,
        spec: &[(&str, EnvKind)],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ArgError> {
        let on_command_line = |flag: &str| {
            self.items.iter().any(|i| {
                i.text.strip_prefix("--").is_some_and(|f| {
                    f == flag || f.strip_prefix(flag).is_some_and(|r| r.starts_with('='))
                })
            })
        };
        let mut from_env = Vec::new();
        for &(flag, kind) in spec {
            let var = env_var(flag);
            let Some(value) = env(&var) else { continue };
            if on_command_line(flag) {
                continue;
            }
            let word = |text: String| Item {
                text,
                var: Some(var.clone()),
            };
            match kind {
                EnvKind::Value => {
                    from_env.push(word(format!("--{flag}")));
                    from_env.push(word(value));
                }
                EnvKind::Switch => match value.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => from_env.push(word(format!("--{flag}"))),
                    "" | "0" | "false" | "no" | "off" => {}
                    _ => {
                        return Err(ArgError(format!(
                            "wsloop {}: invalid value '{value}' for {var}: expected 1 or 0 \
                             (true/false, yes/no, on/off)",
                            self.cmd
                        )))
                    }
                },
                EnvKind::List => {
                    for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                        from_env.push(word(format!("--{flag}")));
                        from_env.push(word(v.to_owned()));
                    }
                }
            }
        }
        // Environment first: a later word on the command line would win
        // anyway, and errors come in the order people read them.
        from_env.append(&mut self.items);
        self.items = from_env;
        Ok(self)
    }

    /// The next flag (`--name`), with an inline `=value` split off, or a
    /// positional argument.
    pub fn next(&mut self) -> Option<Arg> {
        let item = self.items.get(self.pos)?;
        let (item, var) = (item.text.clone(), item.var.clone());
        self.pos += 1;
        self.current_var = var.clone();
        if let Some(flag) = item.strip_prefix("--") {
            if let Some((name, value)) = flag.split_once('=') {
                // Put the value back to be read by `value`.
                self.items.insert(
                    self.pos,
                    Item {
                        text: value.to_owned(),
                        var,
                    },
                );
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
            .map(|i| i.text.clone())
            .ok_or_else(|| ArgError(format!("wsloop {}: --{flag} needs a value", self.cmd)))?;
        self.pos += 1;
        Ok(v)
    }

    /// How to name `flag` in a message: `--flag`, or `WSLOOP_FLAG (--flag)`
    /// when its value came from the environment.
    pub fn name(&self, flag: &str) -> String {
        match &self.current_var {
            Some(var) => format!("{var} (--{flag})"),
            None => format!("--{flag}"),
        }
    }

    pub fn bad(&self, flag: &str, value: &str, expected: &str) -> ArgError {
        ArgError(format!(
            "wsloop {}: invalid value '{value}' for {}: expected {expected}",
            self.cmd,
            self.name(flag)
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

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn words(args: &mut Args) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(a) = args.next() {
            match a {
                Arg::Flag(f) => {
                    out.push(format!("--{f}"));
                    if f != "deflate" {
                        out.push(args.value(&f).unwrap());
                    }
                }
                Arg::Positional(p) => out.push(p),
            }
        }
        out
    }

    const SPEC: &[(&str, EnvKind)] = &[
        ("max-message", EnvKind::Value),
        ("deflate", EnvKind::Switch),
        ("allowed-origin", EnvKind::List),
    ];

    #[test]
    fn environment_fills_in_what_the_command_line_does_not_set() {
        let vars = [
            ("WSLOOP_MAX_MESSAGE", "1M"),
            ("WSLOOP_DEFLATE", "true"),
            (
                "WSLOOP_ALLOWED_ORIGIN",
                "https://a.example, https://b.example",
            ),
        ];
        let mut a = Args::new("serve", vec![])
            .with_env(SPEC, env(&vars))
            .unwrap();
        assert_eq!(
            words(&mut a),
            [
                "--max-message",
                "1M",
                "--deflate",
                "--allowed-origin",
                "https://a.example",
                "--allowed-origin",
                "https://b.example"
            ]
        );
        // A flag on the command line wins, in both spellings; a list is
        // replaced, not added to.
        let argv = vec![
            "--max-message=2M".to_string(),
            "--allowed-origin".into(),
            "https://c.example".into(),
        ];
        let mut a = Args::new("serve", argv).with_env(SPEC, env(&vars)).unwrap();
        assert_eq!(
            words(&mut a),
            [
                "--deflate",
                "--max-message",
                "2M",
                "--allowed-origin",
                "https://c.example"
            ]
        );
        // Switches that are off add nothing.
        let off = [("WSLOOP_DEFLATE", "0")];
        let mut a = Args::new("serve", vec![])
            .with_env(SPEC, env(&off))
            .unwrap();
        assert!(words(&mut a).is_empty());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let vars = [("WSLOOP_MAX_MESSAGE", "lots")];
        let mut a = Args::new("serve", vec![])
            .with_env(SPEC, env(&vars))
            .unwrap();
        let Some(Arg::Flag(f)) = a.next() else {
            panic!("expected a flag")
        };
        let e = a.size(&f).unwrap_err();
        assert_eq!(
            e.0,
            "wsloop serve: invalid value 'lots' for WSLOOP_MAX_MESSAGE (--max-message): \
             expected a size such as 65536, 64K or 16M"
        );
        // From the command line, the flag alone.
        let mut a = Args::new("serve", vec!["--max-message".into(), "lots".into()]);
        a.next();
        assert!(a
            .size("max-message")
            .unwrap_err()
            .0
            .contains("for --max-message:"));
        let Err(e) = Args::new("serve", vec![]).with_env(SPEC, env(&[("WSLOOP_DEFLATE", "maybe")]))
        else {
            panic!("a bad switch value is an error")
        };
        assert!(e.0.contains("'maybe' for WSLOOP_DEFLATE"), "{}", e.0);
    }
}
