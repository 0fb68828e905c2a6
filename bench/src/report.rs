//! The summary of a run: text for people, one JSON line for scripts, and
//! the number formats both use.

use std::fmt::Write as _;
use std::time::Duration;

use crate::hist::Hist;
use crate::options::{Mode, Options};
use crate::series::Row;
use crate::stats::Stats;

pub(crate) struct Rss {
    pub(crate) pid: u32,
    pub(crate) before: Option<u64>,
    pub(crate) open: Option<u64>,
    pub(crate) after: Option<u64>,
    /// The anonymous part (`RssAnon`) before and with all open.
    pub(crate) anon_before: Option<u64>,
    pub(crate) anon_open: Option<u64>,
}

pub(crate) struct Report<'a> {
    pub(crate) o: &'a Options,
    pub(crate) s: &'a Stats,
    pub(crate) connect_secs: f64,
    /// The measured time: --duration unless every connection ended first.
    pub(crate) measured_secs: f64,
    /// What rates are over: the measured time, or in open loop until the
    /// last reply to a message due in it came, if that was later (a server
    /// that falls behind answers the window's messages after it).
    pub(crate) answered_secs: f64,
    pub(crate) close_secs: f64,
    pub(crate) rss: Option<Rss>,
    /// Cores' worth of server CPU (1.0 = one core busy all the time) and
    /// the seconds it is averaged over: the measured window, or in connect
    /// mode the connect phase. From --server-pid.
    pub(crate) server_cpu: Option<(f64, f64)>,
    /// The run second by second.
    pub(crate) series: Vec<Row>,
}

/// 1234567 → "1,234,567".
pub(crate) fn group(n: u64) -> String {
    let d = n.to_string();
    let mut out = String::with_capacity(d.len() + d.len() / 3);
    for (i, ch) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub(crate) fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    }
}

/// Nanoseconds for people.
/// `p50 X  p99 Y  p99.9 Z  max M` of a histogram, for people.
fn quantiles(h: &Hist) -> String {
    format!(
        "p50 {}  p99 {}  p99.9 {}  max {}",
        dur(h.quantile(0.5)),
        dur(h.quantile(0.99)),
        dur(h.quantile(0.999)),
        dur(h.max)
    )
}

pub(crate) fn dur(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_949 => format!("{:.1} µs", ns as f64 / 1e3),
        999_950..=999_994_999 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// A byte count for people: `32 B`, `16 KiB`, `1 MiB`.
pub fn fmt_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

pub(crate) fn json_str(s: &str, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Report<'_> {
    fn rate(&self, n: u64) -> f64 {
        if self.answered_secs > 0.0 {
            n as f64 / self.answered_secs
        } else {
            0.0
        }
    }

    fn cut_short(&self) -> bool {
        self.measured_secs + 0.01 < self.o.duration.as_secs_f64()
    }

    /// The note after a rate line when the window ended early.
    fn cut_short_note(&self) -> &'static str {
        if self.cut_short() {
            " (cut short: no connection left)"
        } else {
            ""
        }
    }

    fn kib_per_conn(&self) -> Option<f64> {
        let r = self.rss.as_ref()?;
        self.per_conn(r.before?, r.open?)
    }

    /// [`Report::kib_per_conn`] from the anonymous part of the RSS only.
    fn anon_kib_per_conn(&self) -> Option<f64> {
        let r = self.rss.as_ref()?;
        self.per_conn(r.anon_before?, r.anon_open?)
    }

    fn per_conn(&self, before: u64, open: u64) -> Option<f64> {
        (self.s.opened > 0).then(|| (open as f64 - before as f64) / self.s.opened as f64)
    }

    /// Server CPU nanoseconds per echoed message (echo and latency modes)
    /// or per handshake (connect mode).
    fn cpu_ns_per_msg(&self) -> Option<f64> {
        let (cores, secs) = self.server_cpu?;
        let n = match self.o.mode {
            Mode::Connect => self.s.opened,
            _ => self.s.msgs,
        };
        (n > 0).then(|| cores * secs * 1e9 / n as f64)
    }

    pub(crate) fn text(&self) -> String {
        let (o, s) = (self.o, self.s);
        let mut t = String::new();
        let what = match (o.mode, o.rate) {
            (Mode::Connect, _) => format!("{} connections held {}", o.conns, secs(o.hold)),
            (Mode::Chat, rate) => format!(
                "{} members in {} rooms, {} publishes/s, {} texts, {} warmup, {} measured",
                o.conns,
                o.rooms,
                group(rate.unwrap_or(0)),
                fmt_bytes(o.size),
                secs(o.warmup),
                secs(o.duration)
            ),
            (_, Some(rate)) => format!(
                "{} conns, open loop at {} msgs/s (at most {} in flight each), {} {}, {} warmup, {} measured",
                o.conns,
                group(rate),
                o.pipeline,
                fmt_bytes(o.size),
                if o.text { "text" } else { "binary" },
                secs(o.warmup),
                secs(o.duration)
            ),
            _ => format!(
                "{} conns x {} in flight, {} {}, {} warmup, {} measured",
                o.conns,
                o.pipeline,
                fmt_bytes(o.size),
                if o.text { "text" } else { "binary" },
                secs(o.warmup),
                secs(o.duration)
            ),
        };
        let mut threads = if o.threads > 1 {
            format!(", {} threads", o.threads)
        } else {
            String::new()
        };
        if o.deflate {
            threads.push_str(", permessage-deflate");
        }
        if o.compressible && o.mode != Mode::Connect {
            threads.push_str(", compressible payloads");
        }
        let _ = writeln!(
            t,
            "wsloop bench {} {}: {what}{threads}",
            o.mode.name(),
            o.urls.join(" ")
        );
        let hs_rate = if self.connect_secs > 0.0 {
            s.opened as f64 / self.connect_secs
        } else {
            0.0
        };
        let _ = writeln!(
            t,
            "  connect    {}/{} open in {:.3} s: {} handshakes/s",
            group(s.opened),
            group(o.conns as u64),
            self.connect_secs,
            group(hs_rate as u64)
        );
        let h = &s.handshake;
        if h.total > 0 {
            let _ = writeln!(t, "  handshake  {}", quantiles(h));
        }
        if o.mode == Mode::Chat && s.opened > 0 {
            self.chat_text(&mut t);
        } else if o.mode != Mode::Connect && s.opened > 0 {
            let _ = writeln!(
                t,
                "  messages   {} echoed in {:.2} s: {} msgs/s, {:.1} MB/s{}",
                group(s.msgs),
                self.answered_secs,
                group(self.rate(s.msgs) as u64),
                self.rate(s.bytes) / 1e6,
                self.cut_short_note()
            );
            let r = &s.rtt;
            if r.total > 0 {
                let _ = writeln!(
                    t,
                    "  round trip {}  mean {}{}",
                    quantiles(r),
                    dur(r.mean()),
                    if o.rate.is_some() {
                        " (from when each was due)"
                    } else {
                        ""
                    }
                );
            }
            if o.rate.is_some() {
                self.schedule_text(&mut t);
            }
        }
        if let (Some((cores, _)), Some(per)) = (self.server_cpu, self.cpu_ns_per_msg()) {
            let _ = writeln!(
                t,
                "  server cpu {:.0}% of a core, {} per {}",
                cores * 100.0,
                dur(per.round() as u64),
                match o.mode {
                    Mode::Connect => "handshake",
                    Mode::Chat => "delivery",
                    _ => "message",
                }
            );
        }
        if let Some(r) = &self.rss {
            let kib = |v: Option<u64>| v.map_or("?".to_owned(), |k| format!("{} KiB", group(k)));
            let _ = write!(
                t,
                "  server RSS {} before, {} with {} open, {} after close (pid {})",
                kib(r.before),
                kib(r.open),
                group(s.opened),
                kib(r.after),
                r.pid
            );
            match self.kib_per_conn() {
                Some(k) if o.mode == Mode::Connect => {
                    let _ = writeln!(t, "\n             {k:.2} KiB per connection (user space; kernel socket buffers not included)");
                    if let Some(a) = self.anon_kib_per_conn() {
                        let _ = writeln!(t, "             {a:.3} KiB per connection of anonymous memory (without the binary's pages)");
                    }
                }
                _ => t.push('\n'),
            }
        }
        if s.opened > 0 {
            let _ = writeln!(
                t,
                "  close      {}/{} closed cleanly in {:.3} s",
                group(s.clean_closes),
                group(s.opened),
                self.close_secs
            );
        }
        let _ = writeln!(t, "  errors     {}", group(s.error_count));
        let mut kinds: Vec<_> = s.errors.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (k, n) in kinds {
            let _ = writeln!(t, "  {:>10} {k}", group(*n));
        }
        t
    }

    pub(crate) fn json(&self) -> String {
        let (o, s) = (self.o, self.s);
        let mut j = String::from("{");
        j.push_str("\"mode\":");
        json_str(o.mode.name(), &mut j);
        j.push_str(",\"url\":");
        json_str(o.urls.first().map_or("", |u| u.as_str()), &mut j);
        if o.urls.len() > 1 {
            j.push_str(",\"urls\":[");
            for (i, u) in o.urls.iter().enumerate() {
                if i > 0 {
                    j.push(',');
                }
                json_str(u, &mut j);
            }
            j.push(']');
        }
        let _ = write!(
            j,
            ",\"deflate\":{},\"compressible\":{}",
            o.deflate, o.compressible
        );
        let _ = write!(
            j,
            ",\"conns\":{},\"threads\":{},\"open\":{},\"failed\":{},\"connect_s\":{:.6},\"handshakes_per_s\":{:.1}",
            o.conns,
            o.threads,
            s.opened,
            s.failed,
            self.connect_secs,
            if self.connect_secs > 0.0 { s.opened as f64 / self.connect_secs } else { 0.0 }
        );
        let us = |ns: u64| ns as f64 / 1e3;
        let h = &s.handshake;
        let _ = write!(
            j,
            ",\"handshake_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}}",
            us(h.quantile(0.5)),
            us(h.quantile(0.99)),
            us(h.quantile(0.999)),
            us(if h.total > 0 { h.max } else { 0 })
        );
        if o.mode == Mode::Connect {
            let _ = write!(j, ",\"hold_s\":{}", o.hold.as_secs_f64());
        } else if o.mode == Mode::Chat {
            self.chat_json(&mut j);
        } else {
            let r = &s.rtt;
            let _ = write!(
                j,
                ",\"pipeline\":{},\"size\":{},\"text\":{},\"warmup_s\":{},\"duration_s\":{},\"measured_s\":{:.6},\"msgs\":{},\"msgs_per_s\":{:.1},\"mb_per_s\":{:.3},\"rtt_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}}",
                o.pipeline,
                o.size,
                o.text,
                o.warmup.as_secs_f64(),
                o.duration.as_secs_f64(),
                self.measured_secs,
                s.msgs,
                self.rate(s.msgs),
                self.rate(s.bytes) / 1e6,
                us(r.quantile(0.5)),
                us(r.quantile(0.99)),
                us(r.quantile(0.999)),
                us(if r.total > 0 { r.max } else { 0 }),
                us(r.mean())
            );
            if o.rate.is_some() {
                self.schedule_json(&mut j);
            }
        }
        if let Some(r) = &self.rss {
            let n = |v: Option<u64>| v.map_or("null".to_owned(), |k| k.to_string());
            let _ = write!(
                j,
                ",\"server_pid\":{},\"rss_kib_before\":{},\"rss_kib_open\":{},\"rss_kib_after\":{},\"kib_per_conn\":{}",
                r.pid,
                n(r.before),
                n(r.open),
                n(r.after),
                self.kib_per_conn().map_or("null".to_owned(), |k| format!("{k:.3}"))
            );
            let _ = write!(
                j,
                ",\"rss_anon_kib_before\":{},\"rss_anon_kib_open\":{},\"kib_per_conn_anon\":{}",
                n(r.anon_before),
                n(r.anon_open),
                self.anon_kib_per_conn()
                    .map_or("null".to_owned(), |k| format!("{k:.3}"))
            );
        }
        if let Some((cores, _)) = self.server_cpu {
            let key = match o.mode {
                Mode::Connect => "server_cpu_ns_per_handshake",
                Mode::Chat => "server_cpu_ns_per_delivery",
                _ => "server_cpu_ns_per_msg",
            };
            let _ = write!(
                j,
                ",\"server_cpu_cores\":{cores:.4},\"{key}\":{}",
                self.cpu_ns_per_msg()
                    .map_or("null".to_owned(), |n| format!("{n:.1}"))
            );
        }
        let _ = write!(
            j,
            ",\"clean_closes\":{},\"close_s\":{:.6},\"errors\":{},\"error_kinds\":{{",
            s.clean_closes, self.close_secs, s.error_count
        );
        for (i, (k, n)) in s.errors.iter().enumerate() {
            if i > 0 {
                j.push(',');
            }
            json_str(k, &mut j);
            let _ = write!(j, ":{n}");
        }
        j.push_str("},\"series\":[");
        for (i, row) in self.series.iter().enumerate() {
            if i > 0 {
                j.push(',');
            }
            row.json(&mut j);
        }
        j.push_str("]}");
        j
    }

    /// Chat mode's lines: deliveries, their latency, the schedule, order.
    fn chat_text(&self, t: &mut String) {
        let s = self.s;
        let _ = writeln!(
            t,
            "  deliveries {} in {:.2} s: {}/s ({} published in all){}",
            group(s.msgs),
            self.answered_secs,
            group(self.rate(s.msgs) as u64),
            group(s.sent),
            self.cut_short_note()
        );
        let r = &s.rtt;
        if r.total > 0 {
            let _ = writeln!(
                t,
                "  latency    {}  mean {} (publish due to delivery)",
                quantiles(r),
                dur(r.mean())
            );
        }
        self.schedule_text(t);
        let _ = writeln!(
            t,
            "  order      {} gaps, {} duplicates, {} out of order, {} undelivered",
            group(s.gaps),
            group(s.duplicates),
            group(s.reorders),
            group(s.undelivered)
        );
    }

    /// Open loop: how well the schedule was kept.
    fn schedule_text(&self, t: &mut String) {
        let s = self.s;
        let l = &s.lag;
        let _ = write!(
            t,
            "  schedule   {} sent, behind by p50 {}  p99 {}  max {}; {} never sent",
            group(s.sent),
            dur(l.quantile(0.5)),
            dur(l.quantile(0.99)),
            dur(if l.total > 0 { l.max } else { 0 }),
            group(s.unsent)
        );
        if self.o.mode == Mode::Chat {
            t.push('\n');
        } else {
            let _ = writeln!(t, ", {} not echoed by the end", group(s.unanswered));
        }
    }

    fn chat_json(&self, j: &mut String) {
        let (o, s) = (self.o, self.s);
        let us = |ns: u64| ns as f64 / 1e3;
        let r = &s.rtt;
        let _ = write!(
            j,
            ",\"rooms\":{},\"size\":{},\"warmup_s\":{},\"duration_s\":{},\"measured_s\":{:.6},\"deliveries\":{},\"deliveries_per_s\":{:.1},\"latency_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}},\"gaps\":{},\"duplicates\":{},\"reorders\":{},\"undelivered\":{}",
            o.rooms,
            o.size,
            o.warmup.as_secs_f64(),
            o.duration.as_secs_f64(),
            self.measured_secs,
            s.msgs,
            self.rate(s.msgs),
            us(r.quantile(0.5)),
            us(r.quantile(0.99)),
            us(r.quantile(0.999)),
            us(if r.total > 0 { r.max } else { 0 }),
            us(r.mean()),
            s.gaps,
            s.duplicates,
            s.reorders,
            s.undelivered
        );
        self.schedule_json(j);
    }

    fn schedule_json(&self, j: &mut String) {
        let (o, s) = (self.o, self.s);
        let us = |ns: u64| ns as f64 / 1e3;
        let l = &s.lag;
        let _ = write!(
            j,
            ",\"answered_s\":{:.6},\"rate\":{},\"sent\":{},\"unsent\":{},\"lag_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"max\":{:.1}}}",
            self.answered_secs,
            o.rate.unwrap_or(0),
            s.sent,
            s.unsent,
            us(l.quantile(0.5)),
            us(l.quantile(0.99)),
            us(if l.total > 0 { l.max } else { 0 })
        );
        if o.mode != Mode::Chat {
            let _ = write!(j, ",\"unanswered\":{}", s.unanswered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(group(0), "0");
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(group(100), "100");
        assert_eq!(dur(850), "850 ns");
        assert_eq!(dur(123_456), "123.5 µs");
        assert_eq!(dur(3_842_000), "3.84 ms");
        assert_eq!(dur(999_990), "1.00 ms");
        assert_eq!(fmt_bytes(16 << 10), "16 KiB");
        assert_eq!(fmt_bytes(32), "32 B");
        let mut s = String::new();
        json_str("a\"b\\c\n", &mut s);
        assert_eq!(s, r#""a\"b\\c\n""#.replace("\\n", "\\u000a"));
    }
}
