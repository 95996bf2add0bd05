//! The budget of one chat-template rendering: the limits, the error a
//! limit gives ([`Exceeded`]), and the counters every check of
//! [`super::bounds`] and [`super::estimate`] charges. Shared by the macros
//! a rendering calls through MiniJinja's per-render temporaries.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Object, Value, ValueKind};
use minijinja::{Error as JinjaError, ErrorKind, State};

/// Items one list or map may hold, as MiniJinja's own `range` allows.
pub const MAX_ITEMS: usize = 100_000;

/// Levels of lists, maps and namespaces a value is built with.
pub const MAX_NESTING: usize = 64;

/// Bytes a rendering may make in all (every string, list and written piece
/// of text, freed or not) per byte of its limit. Real templates copy each
/// message a handful of times (each `+` in a chain copies the text so far).
pub const WORK_FACTOR: usize = 64;

/// Values the checks may look at in one rendering: the work of the checks
/// themselves is bounded too.
pub const MAX_VISITS: usize = 10_000_000;

/// MiniJinja's recursion limit for the template (its default is 500). A
/// macro call counts 4, a loop or `with` block 1: this leaves 50 nested
/// macro calls, far more than any real template, in far less stack than a
/// browser's 1 MB.
pub const RECURSION_LIMIT: usize = 200;

/// Bytes a list or map item is counted as (a MiniJinja `Value` and its
/// share of the container).
const ITEM_BYTES: usize = 32;

/// The root-context key holding the rendering's limit in bytes.
pub(super) const LIMIT_KEY: &str = "main:limit";

const BUDGET_KEY: &str = "main:budget";

// ---------------------------------------------------------------------------
// The limit that was hit
// ---------------------------------------------------------------------------

/// A bound the template went past, carried as the source of the MiniJinja
/// error so the caller can tell a bound from the template's own errors.
#[derive(Debug)]
pub(super) struct Exceeded {
    /// What went past it, e.g. "a string made with `~`".
    pub what: String,
    pub limit: usize,
    /// The limit's unit: "bytes", "items", "levels", ...
    pub unit: &'static str,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} went past the limit of {} {}",
            self.what, self.limit, self.unit
        )
    }
}

impl std::error::Error for Exceeded {}

pub(super) fn exceeded(what: impl Into<String>, limit: usize, unit: &'static str) -> JinjaError {
    let e = Exceeded {
        what: what.into(),
        limit,
        unit,
    };
    JinjaError::new(ErrorKind::InvalidOperation, e.to_string()).with_source(e)
}

/// The [`Exceeded`] under a MiniJinja error, if a bound stopped it.
pub(super) fn exceeded_in(e: &JinjaError) -> Option<&Exceeded> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(x) = s.downcast_ref::<Exceeded>() {
            return Some(x);
        }
        source = s.source();
    }
    None
}

// ---------------------------------------------------------------------------
// The budget of one rendering
// ---------------------------------------------------------------------------

/// What one rendering has used. Atomic only because MiniJinja's temporaries
/// must be `Sync`; a rendering runs on one thread.
#[derive(Debug)]
pub(super) struct Budget {
    /// Bytes any one string, and all written text together, may have.
    pub(super) limit: usize,
    made: AtomicUsize,
    written: AtomicUsize,
    visits: AtomicUsize,
}

impl Object for Budget {}

pub(super) fn budget(state: &State) -> Arc<Budget> {
    state.get_or_set_temp_object(BUDGET_KEY, || Budget {
        limit: state
            .lookup(LIMIT_KEY)
            .and_then(|v| v.as_usize())
            .unwrap_or(super::MAX_EXTRA_OUTPUT),
        made: AtomicUsize::new(0),
        written: AtomicUsize::new(0),
        visits: AtomicUsize::new(0),
    })
}

impl Budget {
    /// Counts `bytes` newly made.
    pub(super) fn make(&self, bytes: usize, what: &str) -> Result<(), JinjaError> {
        let cap = self.limit.saturating_mul(WORK_FACTOR);
        let made = self.made.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if made > cap {
            return Err(exceeded(
                format!("the memory the rendering allocated (at {what})"),
                cap,
                "bytes",
            ));
        }
        Ok(())
    }

    /// Counts `bytes` of text written to the output or into a capture.
    pub(super) fn write(&self, bytes: usize) -> Result<(), JinjaError> {
        let written = self.written.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if written > self.limit {
            return Err(exceeded(
                "the text the rendering writes (its output and what macros and set blocks capture)",
                self.limit,
                "bytes",
            ));
        }
        self.make(bytes, "writing text")
    }

    pub(super) fn visit(&self) -> Result<(), JinjaError> {
        if self.visits.fetch_add(1, Ordering::Relaxed) >= MAX_VISITS {
            return Err(exceeded(
                "the values the bounds had to inspect",
                MAX_VISITS,
                "values",
            ));
        }
        Ok(())
    }

    /// A string of `len` bytes made by `what`.
    pub(super) fn string(&self, len: usize, what: &str) -> Result<(), JinjaError> {
        if len > self.limit {
            return Err(exceeded(
                format!("a string made by {what} ({len} bytes)"),
                self.limit,
                "bytes",
            ));
        }
        self.make(len, what)
    }

    /// Checks a value just made by `what`: a string's size, a container's
    /// item count and nesting.
    pub(super) fn value(&self, v: &Value, what: &str) -> Result<(), JinjaError> {
        match v.kind() {
            ValueKind::String => self.string(v.as_str().map_or(0, str::len), what),
            ValueKind::Bytes => self.string(v.as_bytes().map_or(0, <[u8]>::len), what),
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
                let n = self.items(v, what)?;
                self.make(n.saturating_mul(ITEM_BYTES), what)?;
                self.walk(v, 1, false, what)
            }
            _ => Ok(()),
        }
    }

    /// The number of items of a container, counted up to [`MAX_ITEMS`] when
    /// it does not know it (a lazy iterable).
    pub(super) fn items(&self, v: &Value, what: &str) -> Result<usize, JinjaError> {
        let n = match v.len() {
            Some(n) => n,
            None => match v.try_iter() {
                Ok(it) => it.take(MAX_ITEMS + 1).count(),
                Err(_) => 0,
            },
        };
        if n > MAX_ITEMS {
            return Err(exceeded(
                format!("a list or map made by {what} ({n} items)"),
                MAX_ITEMS,
                "items",
            ));
        }
        Ok(n)
    }

    /// Walks `v` to [`MAX_NESTING`] levels; with `no_namespace`, a namespace
    /// anywhere in it is refused.
    pub(super) fn walk(
        &self,
        v: &Value,
        depth: usize,
        no_namespace: bool,
        what: &str,
    ) -> Result<(), JinjaError> {
        self.visit()?;
        if depth > MAX_NESTING {
            return Err(exceeded(
                format!("a value made by {what} nested"),
                MAX_NESTING,
                "levels deep",
            ));
        }
        if no_namespace && v.downcast_object_ref::<Namespace>().is_some() {
            // The one way a value can come to contain itself.
            return Err(exceeded(
                format!(
                    "{what}: a namespace put inside a namespace (the one way a value can come \
                     to contain itself)"
                ),
                0,
                "namespaces inside a namespace",
            ));
        }
        match v.kind() {
            ValueKind::Map => {
                if let Ok(keys) = v.try_iter() {
                    for k in keys.take(MAX_ITEMS + 1) {
                        let item = v.get_item(&k).unwrap_or_default();
                        self.walk(&item, depth + 1, no_namespace, what)?;
                    }
                }
            }
            ValueKind::Seq | ValueKind::Iterable => {
                if let Ok(items) = v.try_iter() {
                    for item in items.take(MAX_ITEMS + 1) {
                        self.walk(&item, depth + 1, no_namespace, what)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The bytes `v` prints as, up to `cap`; `None` past it.
    pub(super) fn display_len(&self, v: &Value, cap: usize) -> Option<usize> {
        if let Some(s) = v.as_str() {
            return (s.len() <= cap).then_some(s.len());
        }
        let mut w = Counter { n: 0, cap };
        write!(w, "{v}").ok().map(|_| w.n)
    }
}

/// This rendering's limit in bytes.
pub(super) fn limit(state: &State) -> usize {
    budget(state).limit
}

/// Counts `bytes` made by `what` (a filter of the parent module).
pub(super) fn made(state: &State, bytes: usize, what: &str) -> Result<(), JinjaError> {
    budget(state).string(bytes, what)
}

/// An `io::Write` into bytes that fails past `cap` bytes, and says so.
pub(super) struct CappedBytes {
    pub bytes: Vec<u8>,
    cap: usize,
    pub over: bool,
}

impl CappedBytes {
    pub fn new(cap: usize) -> CappedBytes {
        CappedBytes {
            bytes: Vec::new(),
            cap,
            over: false,
        }
    }
}

impl std::io::Write for CappedBytes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.cap {
            self.over = true;
            return Err(std::io::Error::other("past the limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `fmt::Write` that counts and fails past `cap` bytes.
struct Counter {
    n: usize,
    cap: usize,
}

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.n += s.len();
        if self.n > self.cap {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// A `fmt::Write` into a string that fails past `cap` bytes.
pub(super) struct Capped {
    pub(super) s: String,
    pub(super) cap: usize,
}

impl fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.s.len() + s.len() > self.cap {
            return Err(fmt::Error);
        }
        self.s.push_str(s);
        Ok(())
    }
}

/// `v` printed (`{}`) or debug-printed (`{:#?}`) into at most the limit.
pub(super) fn bounded_text(
    b: &Budget,
    v: &Value,
    debug: bool,
    what: &str,
) -> Result<String, JinjaError> {
    let mut w = Capped {
        s: String::new(),
        cap: b.limit,
    };
    let r = if debug {
        write!(w, "{v:#?}")
    } else {
        write!(w, "{v}")
    };
    if r.is_err() {
        return Err(exceeded(
            format!("a string made by {what}"),
            b.limit,
            "bytes",
        ));
    }
    b.make(w.s.len(), what)?;
    Ok(w.s)
}

/// `namespace()`: MiniJinja's own, which only its VM can assign to, is
/// replaced by this one, assigned through [`set_attr`]. It behaves as a map
/// of its attributes in sorted order, as MiniJinja's does.
#[derive(Debug, Default)]
pub(super) struct Namespace {
    data: Mutex<BTreeMap<Arc<str>, Value>>,
}

impl Namespace {
    pub(super) fn data(&self) -> std::sync::MutexGuard<'_, BTreeMap<Arc<str>, Value>> {
        // A panic cannot leave the map half-written: insert is one call.
        self.data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Object for Namespace {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.data().get(key.as_str()?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.data().keys().cloned().map(Value::from).collect())
    }
}
