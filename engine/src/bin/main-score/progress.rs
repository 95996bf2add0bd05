//! The progress bars of `main-score score` (driven by the job's events)
//! and `main-score report` (bytes read).

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Pairs done / total, pairs per second and time left, on stderr (an
/// indicatif bar): redrawn in place on a terminal; with `--progress`
/// elsewhere, plain lines at most once a second, so logs stay readable.
pub struct Progress {
    bar: ProgressBar,
}

/// Where a bar is drawn: nowhere, in place on a terminal, or as log lines.
fn draw_target(enabled: bool) -> ProgressDrawTarget {
    if !enabled {
        ProgressDrawTarget::hidden()
    } else if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::term_like_with_hz(Box::new(LogLines), 1)
    }
}

impl Progress {
    /// Bytes read of a file of `total` bytes (`main-score report`).
    pub fn bytes(enabled: bool, total: u64) -> Progress {
        let style = ProgressStyle::with_template(
            "[{bar:30}] {bytes}/{total_bytes}  {bytes_per_sec}  ETA {eta}",
        )
        .expect("the progress template is valid")
        .progress_chars("#>-");
        let bar =
            ProgressBar::with_draw_target(Some(total), draw_target(enabled)).with_style(style);
        bar.tick();
        Progress { bar }
    }

    pub fn new(enabled: bool, total: Option<usize>) -> Progress {
        Progress::counting(enabled, total, "pairs")
    }

    /// `unit`s done / total (`main-score score`: pairs; `generate`: records).
    pub fn counting(enabled: bool, total: Option<usize>, unit: &str) -> Progress {
        let target = draw_target(enabled);
        let template = match total {
            Some(_) => format!("[{{bar:30}}] {{pos}}/{{len}} {unit}  {{rate}}  ETA {{eta}}"),
            None => format!("{{pos}} {unit}  {{rate}}"),
        };
        let unit = unit.to_string();
        let style = ProgressStyle::with_template(&template)
            .expect("the progress template is valid")
            .progress_chars("#>-")
            .with_key(
                "rate",
                move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.2} {unit}/s", state.per_sec());
                },
            );
        let bar = ProgressBar::with_draw_target(total.map(|t| t as u64), target).with_style(style);
        bar.tick();
        Progress { bar }
    }

    /// `done` records scored by this run (or bytes read).
    pub fn set(&self, done: usize) {
        self.bar.set_position(done as u64);
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}

/// A terminal for logs: every drawing of the bar becomes one line, and the
/// cursor moves that would redraw in place are ignored.
#[derive(Debug)]
struct LogLines;

impl indicatif::TermLike for LogLines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    // Blank writes are the padding that would erase an old drawing.
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        if s.trim().is_empty() {
            return Ok(());
        }
        writeln!(std::io::stderr(), "{s}")
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The note a resumed job prints on stderr: a partial last line dropped, or
/// how many records the output already holds.
pub fn resume_note(event: &main_engine::job::JobEvent) {
    use main_engine::job::JobEvent;
    match event {
        JobEvent::DroppedPartialLine { output, bytes } => eprintln!(
            "main-score: {}: dropping a partial last line ({bytes} bytes) left by an interrupted run",
            output.display()
        ),
        JobEvent::Resuming { output, records } => eprintln!(
            "main-score: {}: resuming after {records} records",
            output.display()
        ),
        _ => {}
    }
}
