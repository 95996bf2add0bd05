//! Memory and stack bounds on a chat template's rendering.
//!
//! Fuel bounds a template's steps, but one step can double a string
//! (`{% set ns.s = ns.s ~ ns.s %}`), so 64 steps fill any machine. MiniJinja
//! offers no hook on its operators or on the text its macros and set blocks
//! capture, so the template is compiled here with MiniJinja's own parser and
//! code generator, and its instructions are rewritten so that every place a
//! value can grow passes through a check of ours, registered as a filter
//! under a name no template can spell (`~` and `main:*`: filter names in a
//! template are identifiers):
//!
//! - `a ~ b` is our [`concat`], which writes both into a capped buffer;
//! - `*` is checked before it runs (a string or list times `n`), and every
//!   value an operator, filter, function, method or slice makes is checked
//!   after: its size, its item count and its nesting;
//! - the filters and Python methods whose result can be far larger than
//!   their input (`join`, `replace`, `indent`, `format`, `pprint`, `string`,
//!   `batch`, `slice`, `sum`, `.join()`, `.replace()`, `.format()`) estimate
//!   their result before the builtin runs;
//! - every piece of text written, to the output or into a macro's or set
//!   block's capture, is counted by the formatter (raw template text is
//!   turned into a constant and written through it too);
//! - `namespace()` is ours, and `{% set ns.x = v %}` goes through our
//!   [`set_attr`], which refuses a namespace inside a namespace. That is the
//!   only way a value can come to contain itself, so no value is cyclic, and
//!   with nesting checked where values are built, no value is deeper than
//!   about 2 x [`MAX_NESTING`]: printing, comparing, serializing and dropping
//!   values recurse a bounded depth;
//! - macro and loop recursion is capped by MiniJinja's recursion limit,
//!   lowered to [`RECURSION_LIMIT`].
//!
//! The budget of one rendering (its [`Budget`]) is shared by the macros it
//! calls through MiniJinja's per-render temporaries. The limit it enforces
//! travels in the root context under [`LIMIT_KEY`], a name no template can
//! look up.
//!
//! `unstable_machinery` is MiniJinja's internal API: the workspace pins the
//! exact MiniJinja version, and tests/templates.rs renders the real
//! templates byte for byte against golden files, so an upgrade that changes
//! the instruction set fails there first.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::{Enumerator, Object, Rest, Value, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind, State};

use super::estimate::{formatted_len, joined_len, precheck_filter, replaced_len};

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
const CONCAT: &str = "~";
const CHECK: &str = "main:check";
const MUL_GUARD: &str = "main:mul";
const SET_ATTR: &str = "main:setattr";

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

fn budget(state: &State) -> Arc<Budget> {
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
    fn make(&self, bytes: usize, what: &str) -> Result<(), JinjaError> {
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
    fn write(&self, bytes: usize) -> Result<(), JinjaError> {
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
    fn string(&self, len: usize, what: &str) -> Result<(), JinjaError> {
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
    fn value(&self, v: &Value, what: &str) -> Result<(), JinjaError> {
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
    fn items(&self, v: &Value, what: &str) -> Result<usize, JinjaError> {
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
    fn walk(
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
struct Capped {
    s: String,
    cap: usize,
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

// ---------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------

/// `namespace()`: MiniJinja's own, which only its VM can assign to, is
/// replaced by this one, assigned through [`set_attr`]. It behaves as a map
/// of its attributes in sorted order, as MiniJinja's does.
#[derive(Debug, Default)]
pub(super) struct Namespace {
    data: Mutex<BTreeMap<Arc<str>, Value>>,
}

impl Namespace {
    fn data(&self) -> std::sync::MutexGuard<'_, BTreeMap<Arc<str>, Value>> {
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

fn namespace(state: &State, defaults: Option<Value>) -> Result<Value, JinjaError> {
    let ns = Namespace::default();
    if let Some(defaults) = defaults {
        let pairs = defaults
            .as_object()
            .filter(|o| matches!(o.repr(), minijinja::value::ObjectRepr::Map))
            .and_then(|o| o.try_iter_pairs());
        let Some(pairs) = pairs else {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!(
                    "expected object or keyword arguments, got {}",
                    defaults.kind()
                ),
            ));
        };
        let b = budget(state);
        for (key, value) in pairs {
            if let Some(key) = key.as_str() {
                b.walk(&value, 2, true, &format!("namespace({key}=...)"))?;
                ns.data().insert(key.into(), value);
            }
        }
    }
    Ok(Value::from_object(ns))
}

/// `{% set target.name = value %}`.
fn set_attr(state: &State, value: Value, target: Value, name: &str) -> Result<Value, JinjaError> {
    let Some(ns) = target.downcast_object_ref::<Namespace>() else {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("can only assign to namespaces, not {}", target.kind()),
        ));
    };
    budget(state).walk(
        &value,
        2,
        true,
        &format!("setting the namespace's '{name}'"),
    )?;
    ns.data().insert(name.into(), value);
    Ok(Value::UNDEFINED)
}

// ---------------------------------------------------------------------------
// The checks the rewritten instructions call
// ---------------------------------------------------------------------------

/// `left ~ right`: MiniJinja's `format!("{left}{right}")`, into a buffer
/// capped at the limit.
fn concat(state: &State, left: &Value, right: &Value) -> Result<Value, JinjaError> {
    let b = budget(state);
    let mut w = Capped {
        s: String::new(),
        cap: b.limit,
    };
    if write!(w, "{left}{right}").is_err() {
        return Err(exceeded("a string made with `~`", b.limit, "bytes"));
    }
    b.make(w.s.len(), "`~`")?;
    Ok(Value::from(w.s))
}

/// After an operator, filter, function or method: the value it made.
fn check(state: &State, value: Value) -> Result<Value, JinjaError> {
    budget(state).value(&value, "an operator, filter or call")?;
    Ok(value)
}

/// Before `a * b`: a string or list repeated `n` times stays in bounds.
/// Returns both operands for the multiplication that follows.
fn mul_guard(state: &State, a: Value, b: Value) -> Result<Value, JinjaError> {
    let budget = budget(state);
    for (x, n) in [(&a, &b), (&b, &a)] {
        let Some(n) = n.as_usize() else { continue };
        match x.kind() {
            ValueKind::String => {
                let len = x.as_str().map_or(0, str::len);
                if len.checked_mul(n).is_none_or(|total| total > budget.limit) {
                    return Err(exceeded(
                        format!("a string of {len} bytes repeated {n} times with `*`"),
                        budget.limit,
                        "bytes",
                    ));
                }
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let len = budget.items(x, "`*`")?;
                if len.checked_mul(n).is_none_or(|total| total > MAX_ITEMS) {
                    return Err(exceeded(
                        format!("a list of {len} items repeated {n} times with `*`"),
                        MAX_ITEMS,
                        "items",
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(Value::from(vec![a, b]))
}

/// The filters [`precheck_filter`] knows, with MiniJinja's builtins.
fn checked_filters() -> Vec<(&'static str, Value)> {
    use minijinja::filters as f;
    vec![
        ("join", Value::from_function(f::join)),
        ("replace", Value::from_function(f::replace)),
        ("indent", Value::from_function(f::indent)),
        ("batch", Value::from_function(f::batch)),
        ("slice", Value::from_function(f::slice)),
        ("format", Value::from_function(f::format)),
        ("sum", Value::from_function(f::sum)),
        ("string", Value::from_function(f::string)),
        ("pprint", Value::from_function(f::pprint)),
    ]
}

/// Python string methods (minijinja-contrib's `pycompat`), with the ones
/// that can grow checked first.
fn method(state: &State, value: &Value, name: &str, args: &[Value]) -> Result<Value, JinjaError> {
    if let Some(s) = value.as_str() {
        let b = budget(state);
        match name {
            "replace" => {
                let old = args.first().and_then(Value::as_str).unwrap_or("");
                let new = args.get(1).and_then(Value::as_str).unwrap_or("");
                let len = replaced_len(s, old, new, args.get(2).and_then(Value::as_usize));
                if len > b.limit {
                    return Err(exceeded(
                        format!("the string .replace() would make ({len} bytes)"),
                        b.limit,
                        "bytes",
                    ));
                }
            }
            "join" => joined_len(
                &b,
                &args.first().cloned().unwrap_or_default(),
                s.len(),
                ".join()",
            )?,
            "format" => {
                formatted_len(&b, s, args)?;
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, name, args)
}

fn no_debug(_args: Rest<Value>) -> Result<Value, JinjaError> {
    // `debug()` prints the whole state, unbounded; no chat template uses it.
    Err(JinjaError::new(
        ErrorKind::InvalidOperation,
        "debug() is not available to chat templates",
    ))
}

/// Registers the checks in `env` (whose formatter, methods, `namespace`,
/// `debug` and growing filters they replace).
pub(super) fn install(env: &mut Environment<'static>) {
    env.set_recursion_limit(RECURSION_LIMIT);
    env.add_filter(CONCAT, concat);
    env.add_filter(CHECK, check);
    env.add_filter(MUL_GUARD, mul_guard);
    env.add_filter(SET_ATTR, set_attr);
    env.add_function("namespace", namespace);
    env.add_function("debug", no_debug);
    env.set_unknown_method_callback(method);
    for (name, builtin) in checked_filters() {
        env.add_filter(name, move |state: &State, args: Rest<Value>| {
            precheck_filter(&budget(state), name, &args)?;
            builtin.call(state, &args)
        });
    }
    env.set_formatter(|out, state, value| {
        let b = budget(state);
        let len = b
            .display_len(value, b.limit)
            .ok_or_else(|| exceeded("a value written by the template", b.limit, "bytes"))?;
        b.write(len)?;
        minijinja::escape_formatter(out, state, value)
    });
}

// ---------------------------------------------------------------------------
// The instruction rewrite
// ---------------------------------------------------------------------------

/// Filter `name` applied to the top `n` values of the stack (`!0`: looked
/// up each time, not cached in a local slot).
fn filter(name: &'static str, n: u16) -> Instruction<'static> {
    Instruction::ApplyFilter(name, Some(n), !0)
}

/// The instructions one instruction becomes.
fn expand<'s>(instr: &Instruction<'s>) -> Vec<Instruction<'s>> {
    use Instruction as I;
    match instr {
        // Raw template text is written through the formatter, so it counts.
        I::EmitRaw(text) => vec![I::LoadConst(Value::from(*text)), I::Emit],
        I::StringConcat => vec![filter(CONCAT, 2)],
        I::Mul => vec![
            filter(MUL_GUARD, 2),
            I::UnpackList(2),
            I::Mul,
            filter(CHECK, 1),
        ],
        I::SetAttr(name) => vec![
            I::LoadConst(Value::from(*name)),
            filter(SET_ATTR, 3),
            I::DiscardTop,
        ],
        I::Add
        | I::Slice
        | I::BuildList(_)
        | I::BuildMap(_)
        | I::ApplyFilter(..)
        | I::CallFunction(..)
        | I::CallMethod(..)
        | I::CallObject(_) => vec![instr.clone(), filter(CHECK, 1)],
        other => vec![other.clone()],
    }
}

/// `instr` with every jump target moved by `new_index`.
fn retarget<'s>(instr: Instruction<'s>, new_index: &[u32]) -> Instruction<'s> {
    use Instruction as I;
    let at = |t: u32| new_index[t as usize];
    match instr {
        I::Jump(t) => I::Jump(at(t)),
        I::JumpIfFalse(t) => I::JumpIfFalse(at(t)),
        I::JumpIfFalseOrPop(t) => I::JumpIfFalseOrPop(at(t)),
        I::JumpIfTrueOrPop(t) => I::JumpIfTrueOrPop(at(t)),
        I::Iterate(t) => I::Iterate(at(t)),
        I::BuildMacro(name, t, flags) => I::BuildMacro(name, at(t), flags),
        other => other,
    }
}

/// `src` with the checks of this module woven in, line and span
/// information kept for errors.
pub(super) fn rewrite<'s>(src: &Instructions<'s>) -> Instructions<'s> {
    let expanded: Vec<Vec<Instruction<'s>>> = (0..src.len() as u32)
        .map(|i| src.get(i).map(expand).unwrap_or_default())
        .collect();
    // new_index[i]: where old instruction i starts; one past the end too, as
    // a jump may target it.
    let mut new_index = Vec::with_capacity(expanded.len() + 1);
    let mut next = 0u32;
    for e in &expanded {
        new_index.push(next);
        next += e.len() as u32;
    }
    new_index.push(next);
    let mut out = Instructions::new(src.name(), src.source());
    for (i, e) in expanded.into_iter().enumerate() {
        let span = src.get_span(i as u32);
        let line = src.get_line(i as u32);
        for instr in e {
            let instr = retarget(instr, &new_index);
            match (span, line) {
                (Some(span), _) => out.add_with_span(instr, span),
                (None, Some(line)) => out.add_with_line(instr, line as u16),
                (None, None) => out.add(instr),
            };
        }
    }
    out
}
