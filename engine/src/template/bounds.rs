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

use std::fmt::Write as _;

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind, State};

use super::budget::{budget, exceeded, Capped, Namespace, MAX_ITEMS, RECURSION_LIMIT};
use super::estimate::{formatted_len, joined_len, precheck_filter, replaced_len};

const CONCAT: &str = "~";
const CHECK: &str = "main:check";
const MUL_GUARD: &str = "main:mul";
const SET_ATTR: &str = "main:setattr";

// ---------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------

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
