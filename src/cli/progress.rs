//! Progress where people run webqlora: a bar on a terminal; elsewhere (`nohup`, CI, a
//! notebook, a pipe) a plain line at the start, every `--log-every` steps or ~10 seconds, and
//! at the end, as Hugging Face Trainer's logging lines; nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a plain progress line is printed when no step count is given.
pub const LINE_INTERVAL: Duration = Duration::from_secs(10);

/// Where plain lines go: `train`'s stdout is its log; `eval` and `merge` keep stdout for
/// their results and report progress on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

enum Kind {
    Bar(indicatif::ProgressBar),
    Lines(Stream),
    Silent,
}

pub struct Progress {
    kind: Kind,
    /// What is counted: "step", "question", "tensor".
    what: &'static str,
    total: u64,
    pos: u64,
    /// The position the count (re)started from, for the rate and the ETA.
    from: u64,
    started: Instant,
    last_line: Option<Instant>,
    /// A line every this many units (0: by time only).
    every: u64,
}

impl Progress {
    /// A bar on stderr when the streams a person would watch are terminals (stderr, and
    /// stdout too where plain lines would go there), else plain lines on `lines`; nothing
    /// when `quiet`. `template` is the bar's indicatif template.
    pub fn new(what: &'static str, total: u64, quiet: bool, lines: Stream, template: &str) -> Self {
        let terminal = std::io::stderr().is_terminal()
            && (lines == Stream::Stderr || std::io::stdout().is_terminal());
        let kind = if quiet {
            Kind::Silent
        } else if terminal {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(template).expect("a valid template"),
            );
            Kind::Bar(bar)
        } else {
            Kind::Lines(lines)
        };
        Progress {
            kind,
            what,
            total,
            pos: 0,
            from: 0,
            started: Instant::now(),
            last_line: None,
            every: 0,
        }
    }

    /// Print a plain line every `n` units as well as every `LINE_INTERVAL` (0: time only).
    pub fn every(mut self, n: u64) -> Self {
        self.every = n;
        self
    }

    /// Counting resumes at `pos` (a resumed run): rate and ETA count from here.
    pub fn start_at(&mut self, pos: u64) {
        self.pos = pos;
        self.from = pos;
        self.started = Instant::now();
        if let Kind::Bar(bar) = &self.kind {
            bar.set_position(pos);
            bar.reset_eta();
        }
    }

    pub fn set_total(&mut self, total: u64) {
        self.total = total;
        if let Kind::Bar(bar) = &self.kind {
            bar.set_length(total);
        }
    }

    /// Now at `pos`, with `msg` (the loss, the rate) to show beside the count.
    pub fn set(&mut self, pos: u64, msg: &str) {
        self.pos = pos;
        match &self.kind {
            Kind::Bar(bar) => {
                bar.set_message(msg.to_string());
                bar.set_position(pos);
            }
            Kind::Lines(stream) => {
                let now = Instant::now();
                let due = match self.last_line {
                    None => true,
                    Some(t) => {
                        now.duration_since(t) >= LINE_INTERVAL
                            || (self.every > 0 && pos.is_multiple_of(self.every))
                    }
                };
                if due || pos >= self.total {
                    self.last_line = Some(now);
                    let line = self.line(msg);
                    write_line(*stream, &line);
                }
            }
            Kind::Silent => {}
        }
    }

    /// `done` of `total` (a callback's counts), no message.
    pub fn counts(&mut self, done: usize, total: usize) {
        if total as u64 != self.total {
            self.set_total(total as u64);
        }
        self.set(done as u64, "");
    }

    /// A line of its own (a validation loss), above the bar or among the lines.
    pub fn println(&self, line: &str) {
        match &self.kind {
            Kind::Bar(bar) => bar.println(line),
            Kind::Lines(stream) => write_line(*stream, line),
            Kind::Silent => {}
        }
    }

    /// Done: the bar stays (`keep`) or is cleared.
    pub fn finish(&self, keep: bool) {
        if let Kind::Bar(bar) = &self.kind {
            if keep {
                bar.finish();
            } else {
                bar.finish_and_clear();
            }
        }
    }

    /// Stopped early: the bar stays where it was.
    pub fn abandon(&self) {
        if let Kind::Bar(bar) = &self.kind {
            bar.abandon();
        }
    }

    /// "step 12/120 (10%): loss 1.2345 … elapsed 1:02, ETA 8:40".
    fn line(&self, msg: &str) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let done = self.pos.saturating_sub(self.from);
        let left = self.total.saturating_sub(self.pos);
        let eta = if done > 0 {
            clock(elapsed / done as f64 * left as f64)
        } else {
            "?".into()
        };
        let percent = (100 * self.pos).checked_div(self.total).unwrap_or(0);
        let msg = if msg.is_empty() {
            String::new()
        } else {
            format!(": {msg}")
        };
        format!(
            "{} {}/{} ({percent}%){msg}; elapsed {}, ETA {eta}",
            self.what,
            self.pos,
            self.total,
            clock(elapsed)
        )
    }
}

fn write_line(stream: Stream, line: &str) {
    // A closed pipe is not worth failing a run for: the metrics file keeps everything.
    let _ = match stream {
        Stream::Stdout => {
            writeln!(std::io::stdout(), "{line}").and_then(|_| std::io::stdout().flush())
        }
        Stream::Stderr => writeln!(std::io::stderr(), "{line}"),
    };
}

/// Seconds as h:mm:ss, or m:ss under an hour.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_as_minutes_or_hours() {
        assert_eq!(clock(0.0), "0:00");
        assert_eq!(clock(62.4), "1:02");
        assert_eq!(clock(3600.0 + 61.0), "1:01:01");
        assert_eq!(clock(-3.0), "0:00");
    }

    #[test]
    fn a_line_says_count_share_message_and_eta() {
        let mut p = Progress::new("step", 10, true, Stream::Stdout, "{pos}");
        p.start_at(2);
        p.pos = 2;
        assert!(p.line("").ends_with("ETA ?"), "{}", p.line(""));
        p.pos = 5;
        let line = p.line("loss 1.0000");
        assert!(
            line.starts_with("step 5/10 (50%): loss 1.0000; elapsed 0:00, ETA "),
            "{line}"
        );
    }
}
