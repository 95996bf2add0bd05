//! Chat templates (DESIGN.md §2): a model is asked in the format it was
//! trained on, so prompts are rendered with the model's own Hugging Face
//! Jinja template (GGUF `tokenizer.chat_template` or `tokenizer_config.json`).
//!
//! The template runs in MiniJinja configured as `transformers` configures
//! Jinja2 for `apply_chat_template`: `trim_blocks` and `lstrip_blocks` on,
//! loop controls (`break`/`continue`), Python string/dict methods
//! (`.strip()`, `.startswith()`, `.items()`, ...), and the globals HF adds:
//! `raise_exception(msg)`, `strftime_now(fmt)` and a `tojson` filter that
//! writes JSON as Python's `json.dumps` does. The variables are `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`, `tools` (none) and
//! `documents` (none).
//!
//! Templates come from strangers, so rendering is bounded in steps and in
//! memory: at most [`FUEL`] MiniJinja steps; no string, and no text written
//! (output and captures together), past a limit of [`MAX_EXTRA_OUTPUT`]
//! bytes beyond four times the messages' own text; no list or map past
//! [`budget::MAX_ITEMS`] items or [`budget::MAX_NESTING`] levels; no more
//! than [`budget::WORK_FACTOR`] times the limit allocated in all; no
//! namespace inside a namespace (so no value contains itself) and a lowered
//! recursion limit (so no stack overflow). The checks run while the
//! template runs (`bounds`), so a template that loops, inflates or recurses
//! without bound is an error, not a hang or a crash, wherever the engine
//! runs (CLI, libmain, Python, the browser). [`check_bounds`] applies them
//! once when a model loads.

mod bounds;
mod budget;
mod estimate;
mod folding;

use std::collections::BTreeMap;

use minijinja::machinery::{self, CodeGenerator, WhitespaceConfig};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, ErrorKind};

use crate::error::{Error, Result};

pub use budget::{MAX_ITEMS, MAX_NESTING, MAX_VISITS, RECURSION_LIMIT, WORK_FACTOR};

/// The template for models that ship none (DESIGN.md §2): the prompt is
/// `### Instruction:\n{x}\n\n### Response:\n`, and an assistant turn ends
/// with the EOS token, the one thing such a model was trained to predict
/// after a response.
pub const ALPACA_TEMPLATE: &str = "{% for message in messages %}\
{% if message['role'] == 'user' %}### Instruction:\n{{ message['content'] }}\n\n\
{% elif message['role'] == 'assistant' %}### Response:\n{{ message['content'] }}{{ eos_token }}\n\n\
{% endif %}{% endfor %}\
{% if add_generation_prompt %}### Response:\n{% endif %}";

/// The name errors cite as the template's location (`in chat_template:3`).
const TEMPLATE_NAME: &str = "chat_template";

/// MiniJinja steps one rendering may take. The real templates of the
/// LLaMA-2/3, Mistral, ChatML/Qwen, Gemma, Phi-3 and DeepSeek families take
/// 50 to 150 for the conversations the engine renders (tests/templates.rs
/// measures them), so this leaves a margin of over 3,000x, while a hostile
/// loop stops within a few tens of milliseconds.
pub const FUEL: u64 = 500_000;

/// Output a rendering may write beyond four times its messages' text.
pub const MAX_EXTRA_OUTPUT: usize = 1 << 20;

/// Assistant content that no template rewrites and no text contains, so the
/// text after it is what the template appends to an assistant turn.
const SENTINEL: &str = "MAINx7f3aSENTINELx91c2";

/// A model's chat template, compiled once; immutable and shareable across
/// threads like the model it comes from.
#[derive(Debug)]
pub struct ChatTemplate {
    /// The filters, functions and checks the template runs with. The
    /// template itself is not added to it: it is compiled for each
    /// rendering with the checks woven in ([`bounds::rewrite`]), and an
    /// `{% include %}` of itself would run it without them.
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// What the template writes after an assistant message, trailing
    /// whitespace removed.
    end_of_turn: String,
}

impl ChatTemplate {
    /// Compiles `source` (`None`: [`ALPACA_TEMPLATE`]) with the model's BOS
    /// and EOS token texts, and checks that it renders a prompt and an
    /// assistant turn. With the Alpaca template and no EOS token the end of
    /// turn is empty: the target is then the content alone.
    pub fn new(
        source: Option<&str>,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate> {
        ChatTemplate::build(source, bos_token, eos_token).map_err(RenderError::into_error)
    }

    fn build(
        source: Option<&str>,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> std::result::Result<ChatTemplate, RenderError> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        // The formatter, `namespace`, the Python methods (pycompat) and the
        // filters that can grow, with their checks.
        bounds::install(&mut env);
        let source = source.unwrap_or(ALPACA_TEMPLATE).to_string();
        // Syntax errors here, at construction, as before.
        let ast = parse(&source).map_err(|e| RenderError::Other(template_error(e)))?;
        // Constants are folded as the template compiles, before the checks
        // that run with it: their sizes are checked here, once.
        let folding = folding::Folding {
            limit: MAX_EXTRA_OUTPUT,
        };
        folding
            .stmt(&ast)
            .map_err(|e| RenderError::Bound(bound_error(&e, 0)))?;
        drop(ast);
        let mut t = ChatTemplate {
            env,
            source,
            bos_token,
            eos_token,
            end_of_turn: String::new(),
        };
        t.render_bounded(&[("user", "")], true)?;
        t.end_of_turn = t.derive_end_of_turn()?;
        Ok(t)
    }

    /// The prompt for one user message with `user_content`, followed by the
    /// generation prompt (the assistant header the model continues from).
    pub fn render_prompt(&self, user_content: &str) -> Result<String> {
        self.render(&[("user", user_content)], true)
    }

    /// The text the template puts after an assistant message, trailing
    /// whitespace removed (`<|im_end|>` for ChatML, `<|eot_id|>` for
    /// LLaMA-3, ` </s>` for LLaMA-2, `</s>` for Mistral).
    pub fn end_of_turn(&self) -> &str {
        &self.end_of_turn
    }

    /// Renders a conversation of `(role, content)` messages.
    pub fn render(&self, messages: &[(&str, &str)], add_generation_prompt: bool) -> Result<String> {
        self.render_measured(messages, add_generation_prompt)
            .map(|(text, _)| text)
    }

    /// [`ChatTemplate::render`], also returning the MiniJinja steps it took
    /// (to show that real templates stay far below [`FUEL`]).
    pub fn render_measured(
        &self,
        messages: &[(&str, &str)],
        add_generation_prompt: bool,
    ) -> Result<(String, u64)> {
        self.render_bounded(messages, add_generation_prompt)
            .map_err(RenderError::into_error)
    }

    /// [`ChatTemplate::render_measured`], telling a bound that stopped the
    /// rendering from the template's own errors.
    fn render_bounded(
        &self,
        messages: &[(&str, &str)],
        add_generation_prompt: bool,
    ) -> std::result::Result<(String, u64), RenderError> {
        let content_bytes: usize = messages.iter().map(|(r, c)| r.len() + c.len()).sum();
        let limit = content_bytes
            .saturating_mul(4)
            .saturating_add(MAX_EXTRA_OUTPUT);
        let ast = parse(&self.source).map_err(|e| RenderError::Other(template_error(e)))?;
        let mut g = CodeGenerator::new(TEMPLATE_NAME, &self.source);
        g.compile_stmt(&ast);
        let (instructions, blocks) = g.finish();
        let instructions = bounds::rewrite(&instructions);
        let blocks: BTreeMap<_, _> = blocks
            .iter()
            .map(|(name, b)| (*name, bounds::rewrite(b)))
            .collect();
        let messages: Vec<Value> = messages
            .iter()
            .map(|&(role, content)| {
                Value::from_iter([
                    ("role", Value::from(role)),
                    ("content", Value::from(content)),
                ])
            })
            .collect();
        // HF leaves a missing special token undefined rather than none, so
        // `bos_token is defined` behaves as in `transformers`.
        let token = |t: &Option<String>| t.as_deref().map_or(Value::UNDEFINED, Value::from);
        let root = Value::from_iter([
            ("messages", Value::from(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", token(&self.bos_token)),
            ("eos_token", token(&self.eos_token)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
            // Where the checks find this rendering's limit; not a name a
            // template can look up.
            (budget::LIMIT_KEY, Value::from(limit)),
        ]);
        let mut text = String::new();
        let mut out = machinery::make_string_output(&mut text);
        let rendered = machinery::Vm::new(&self.env).eval(
            &instructions,
            root,
            &blocks,
            &mut out,
            AutoEscape::None,
        );
        let steps = match rendered {
            Ok((_, state)) => state.fuel_levels().map_or(0, |(used, _)| used),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                return Err(RenderError::Bound(Error::Template(format!(
                    "{TEMPLATE_NAME}: rendering took more than {FUEL} steps, far more than \
                     any chat template needs: the template loops without bound"
                ))))
            }
            Err(e) => {
                return Err(if budget::exceeded_in(&e).is_some() || is_recursion(&e) {
                    RenderError::Bound(bound_error(&e, content_bytes))
                } else {
                    RenderError::Other(template_error(e))
                })
            }
        };
        if text.len() > limit {
            return Err(RenderError::Bound(Error::Template(format!(
                "{TEMPLATE_NAME}: the rendered text passed {limit} bytes for {content_bytes} \
                 bytes of messages: the template writes without bound"
            ))));
        }
        Ok((text, steps))
    }

    fn derive_end_of_turn(&self) -> std::result::Result<String, RenderError> {
        let (text, _) = self.render_bounded(&[("user", "u"), ("assistant", SENTINEL)], false)?;
        let Some(at) = text.rfind(SENTINEL) else {
            return Err(RenderError::Other(Error::Template(format!(
                "an assistant message's content does not appear in the rendered \
                 conversation, so its end-of-turn text cannot be found: {text:?}"
            ))));
        };
        Ok(text[at + SENTINEL.len()..].trim_end().to_string())
    }
}

/// A rendering's failure: a bound that stopped it (refused at model load,
/// [`check_bounds`]) or the template's own error (a syntax error,
/// `raise_exception`, a role it does not support).
enum RenderError {
    Bound(Error),
    Other(Error),
}

impl RenderError {
    fn into_error(self) -> Error {
        match self {
            RenderError::Bound(e) | RenderError::Other(e) => e,
        }
    }
}

/// The template's syntax tree, parsed as `transformers` configures Jinja2
/// (`trim_blocks`, `lstrip_blocks`).
fn parse(
    source: &str,
) -> std::result::Result<minijinja::machinery::ast::Stmt<'_>, minijinja::Error> {
    let ws = WhitespaceConfig {
        keep_trailing_newline: false,
        lstrip_blocks: true,
        trim_blocks: true,
    };
    // A unit struct unless MiniJinja's `custom_syntax` feature is on (a
    // struct with a default then): `default()` compiles either way.
    #[allow(clippy::default_constructed_unit_structs)]
    let syntax = SyntaxConfig::default();
    machinery::parse(source, TEMPLATE_NAME, syntax, ws)
}

/// `chat_template line N` for an error MiniJinja located.
fn location(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("{TEMPLATE_NAME} line {line}"),
        None => TEMPLATE_NAME.to_string(),
    }
}

/// The error of a bound the template went past, with its location and the
/// limit (for `content_bytes` bytes of messages).
fn bound_error(e: &minijinja::Error, content_bytes: usize) -> Error {
    let at = location(e);
    match budget::exceeded_in(e) {
        // A limit in bytes grows with the messages: say how.
        Some(x) if x.unit == "bytes" => Error::Template(format!(
            "{at}: {x} (the limit for {content_bytes} bytes of messages: {MAX_EXTRA_OUTPUT} \
             bytes plus 4 per byte of messages): the template is refused"
        )),
        Some(x) => Error::Template(format!("{at}: {x}: the template is refused")),
        None => Error::Template(format!(
            "{at}: macros or loops nested past the recursion limit of {RECURSION_LIMIT} \
             (a macro call counts 4): the template is refused"
        )),
    }
}

/// MiniJinja's own recursion limit (lowered to [`RECURSION_LIMIT`]).
fn is_recursion(e: &minijinja::Error) -> bool {
    e.kind() == ErrorKind::InvalidOperation && e.to_string().contains("recursion limit")
}

/// Renders the template [`ChatTemplate::new`] would build from these parts
/// on a probe conversation under the bounds, so a model whose template runs
/// away is refused when it loads, before any data is read. Only a bound
/// refuses here: a template's own error (one that rejects a system
/// message, say) stays the error of the scorer that would use it.
pub fn check_bounds(
    source: Option<&str>,
    bos_token: Option<String>,
    eos_token: Option<String>,
) -> Result<()> {
    let t = match ChatTemplate::build(source, bos_token, eos_token) {
        Ok(t) => t,
        Err(RenderError::Bound(e)) => return Err(e),
        Err(RenderError::Other(_)) => return Ok(()),
    };
    let probe = [
        ("system", "You are a helpful assistant."),
        ("user", "Hello."),
        ("assistant", "Hi. How can I help?"),
        ("user", "Add 2 and 3."),
    ];
    for (messages, generation) in [
        (&probe[..], true),
        (&probe[1..], true),
        (&probe[1..3], false),
    ] {
        if let Err(RenderError::Bound(e)) = t.render_bounded(messages, generation) {
            return Err(e);
        }
    }
    Ok(())
}

/// A MiniJinja error as ours, with its location and the errors under it
/// (a function's own message sits in the source chain).
fn template_error(e: minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    Error::Template(msg)
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("the template raised an exception: {msg}"),
    ))
}

// ---------------------------------------------------------------------------
// strftime_now
// ---------------------------------------------------------------------------

/// The date `strftime_now` formats: a pair's score must not depend on the
/// day it is computed, and wasm32 has no clock. 26 Jul 2024 is the date
/// LLaMA-3.1's own template falls back to.
const FIXED_DATE: (i32, u32, u32) = (2024, 7, 26);
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Python's `datetime.strftime` for the date fields of [`FIXED_DATE`] at
/// midnight; an unknown directive is an error rather than a silent guess.
fn strftime_now(fmt: String) -> std::result::Result<Value, minijinja::Error> {
    let (year, month, day) = FIXED_DATE;
    let (weekday, day_of_year) = weekday_and_ordinal(year, month, day);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // `%-d` (glibc's unpadded form) is accepted as HF templates use it.
        let (unpadded, d) = match chars.next() {
            Some('-') => (true, chars.next()),
            d => (false, d),
        };
        let num = |v: u32, width: usize| {
            if unpadded {
                v.to_string()
            } else {
                format!("{v:0width$}")
            }
        };
        match d {
            Some('d') => out.push_str(&num(day, 2)),
            Some('m') => out.push_str(&num(month, 2)),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&num(year.rem_euclid(100) as u32, 2)),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('b') | Some('h') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('j') => out.push_str(&num(day_of_year, 3)),
            Some('H') | Some('M') | Some('S') | Some('I') => out.push_str(&num(0, 2)),
            Some('p') => out.push_str("AM"),
            Some('%') => out.push('%'),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.map_or(String::new(), String::from)
                    ),
                ))
            }
        }
    }
    Ok(Value::from(out))
}

/// (0 = Monday, day of the year from 1) of a Gregorian date.
fn weekday_and_ordinal(year: i32, month: u32, day: u32) -> (usize, u32) {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let ordinal = month_days[..month as usize - 1].iter().sum::<u32>() + day;
    // Days since 0001-01-01 (a Monday) in the proleptic Gregorian calendar.
    let y = (year - 1) as i64;
    let days = y * 365 + y / 4 - y / 100 + y / 400 + ordinal as i64 - 1;
    (days.rem_euclid(7) as usize, ordinal)
}

// ---------------------------------------------------------------------------
// tojson
// ---------------------------------------------------------------------------

/// `transformers`' `tojson`: Python's `json.dumps(x, ensure_ascii=False,
/// indent=indent)`, so `{"a": 1, "b": [1, 2]}` with a space after `,` and
/// `:`, and no HTML escaping (Jinja2's and MiniJinja's own `tojson` escape
/// `<`, `>`, `&`, `'`, which would change the prompt).
fn tojson(
    state: &minijinja::State,
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(usize::try_from(v)?),
    };
    // Values are acyclic and shallow (bounds), but a shared one printed many
    // times, or a huge indent, can still make far more text than memory
    // holds: the JSON is written into a buffer capped at the limit.
    let limit = budget::limit(state);
    if indent.is_some_and(|n| n > limit) {
        return Err(budget::exceeded("tojson's indent", limit, "bytes"));
    }
    let mut out = budget::CappedBytes::new(limit);
    let written = match indent {
        // Python's indented form is serde_json's pretty form: "," + newline
        // + indent between items, ": " after keys.
        Some(n) => {
            let pad = " ".repeat(n);
            let f = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            serde::Serialize::serialize(
                value,
                &mut serde_json::Serializer::with_formatter(&mut out, f),
            )
        }
        None => serde::Serialize::serialize(
            value,
            &mut serde_json::Serializer::with_formatter(&mut out, PythonCompact),
        ),
    };
    if out.over {
        return Err(budget::exceeded("the JSON tojson writes", limit, "bytes"));
    }
    written.map_err(|e| {
        minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: cannot serialize")
            .with_source(e)
    })?;
    budget::made(state, out.bytes.len(), "tojson")?;
    let s = String::from_utf8(out.bytes).map_err(|e| {
        minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: not UTF-8").with_source(e)
    })?;
    Ok(Value::from_safe_string(s))
}

/// `json.dumps`' default separators `", "` and `": "`.
struct PythonCompact;

impl serde_json::ser::Formatter for PythonCompact {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpaca_prompt_and_end_of_turn() {
        let t = ChatTemplate::new(None, Some("<s>".into()), Some("</s>".into())).unwrap();
        assert_eq!(
            t.render_prompt("Add 2 and 3.").unwrap(),
            "### Instruction:\nAdd 2 and 3.\n\n### Response:\n"
        );
        assert_eq!(t.end_of_turn(), "</s>");
        let bare = ChatTemplate::new(None, None, None).unwrap();
        assert_eq!(
            bare.end_of_turn(),
            "",
            "no EOS: the target is the content alone"
        );
    }

    /// The rewritten instructions render what MiniJinja's own renders:
    /// operators, loop controls, macros with callers and defaults, set and
    /// filter blocks, recursive loops, namespaces, the checked filters and
    /// Python methods.
    #[test]
    fn bounded_rendering_equals_minijinja_s_own() {
        const CASES: &[&str] = &[
            "{{ 'a' ~ 1 ~ none ~ true }}|{{ 'ab' * 3 }}|{{ 3 * 'x' }}|{{ [1, 2] * 2 }}|{{ 6 * 7 }}|{{ 2 ** 10 }}|{{ 7 // 2 }}|{{ 1.5 * 2 }}",
            "{{ 'a' + 'b' }}|{{ [1] + [2, 3] }}|{{ 'x,y' | replace(',', ';') }}|{{ ['a', 'b'] | join('-') }}|{{ 'abc' | join('.') }}",
            "{% set ns = namespace(n=0, s='') %}{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }}:{{ ns.s }}:{{ ns }}",
            "{% for i in range(6) %}{% if i is odd %}{% continue %}{% endif %}{{ i }}{% else %}none{% endfor %}{% for x in [] %}{% else %}empty{% endfor %}",
            "{% macro m(x, y='d') %}[{{ x }}{{ y }}{% if caller %}{{ caller() }}{% endif %}]{% endmacro %}{{ m(1) }}{% call m(2, 'z') %}c{% endcall %}",
            "{% set t %}in {{ 1 + 1 }}{% endset %}{{ t | upper }}|{% filter upper %}abc {{ 'd' }}{% endfilter %}",
            "{% for n in [{'v': 1, 'c': [{'v': 2, 'c': []}]}] recursive %}{{ n.v }}({{ loop(n.c) }}){% endfor %}",
            "{{ '%s-%05d' | format('a', 42) }}|{{ 'a\nb' | indent(2, true) }}|{{ [1,2,3,4,5] | batch(2) | list }}|{{ [1,2,3] | slice(2) | list }}|{{ 'abc'[1:] }}|{{ [3,1,2] | sort }}",
            "{{ {'b': 1, 'a': 2} | dictsort }}|{{ [1, [2, [3]]] }}|{{ 'Hello' if true else 'no' }}|{{ 'x' in 'xyz' }}|{{ [1,2] | sum }}|{{ [1] | pprint }}|{{ 5 | string }}",
            "{% for m in messages %}{{ loop.index }}:{{ m.role }}={{ m.content | trim }}{% if not loop.last %}, {% endif %}{% endfor %}",
            "{{ 'a-b'.replace('-', '+') }}|{{ ','.join(['x', 'y']) }}|{{ '{} {}'.format('p', 2) }}|{{ ' s '.strip() }}|{{ {'k': 1}.items() | list }}",
            "{% set d = namespace(a=namespace) %}{{ d.a is defined }}{% with x = 3 %}{{ x }}{% endwith %}{{ range(3) | list }}",
        ];
        let messages = [("user", " hi "), ("assistant", "yo")];
        for case in CASES {
            let source =
                format!("{{% for m in messages %}}{{{{ m.content }}}}{{% endfor %}}{case}");
            let ours = ChatTemplate::new(Some(&source), Some("<s>".into()), Some("</s>".into()))
                .unwrap_or_else(|e| panic!("{case}: {e}"))
                .render(&messages, false)
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            let mut env = Environment::new();
            env.set_trim_blocks(true);
            env.set_lstrip_blocks(true);
            env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
            let msgs: Vec<Value> = messages
                .iter()
                .map(|&(r, c)| Value::from_iter([("role", r), ("content", c)]))
                .collect();
            let theirs = env
                .render_str(
                    &source,
                    minijinja::context! { messages => msgs, add_generation_prompt => false },
                )
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(ours, theirs, "{case}");
        }
    }

    #[test]
    fn fixed_date_formats_like_python() {
        // datetime.date(2024, 7, 26).strftime("%d %b %Y %A %j %-d/%m/%y")
        let s = strftime_now("%d %b %Y %A %j %-d/%m/%y %%".into()).unwrap();
        assert_eq!(s.as_str().unwrap(), "26 Jul 2024 Friday 208 26/07/24 %");
        assert!(strftime_now("%Q".into()).is_err());
        assert_eq!(
            weekday_and_ordinal(2000, 1, 1),
            (5, 1),
            "1 Jan 2000 was a Saturday"
        );
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        // json.dumps({'a': 1, 'z': [1, 'x<y'], 'b': None}, ensure_ascii=False)
        let t = ChatTemplate::new(
            Some("{% for m in messages %}{{ m.content }}|{% endfor %}{{ {'a': 1, 'z': [1, 'x<y'], 'b': none} | tojson }}"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            t.render_prompt("é").unwrap(),
            r#"é|{"a": 1, "z": [1, "x<y"], "b": null}"#
        );
        let t = ChatTemplate::new(Some("{% for m in messages %}{{ m.content }}{% endfor %}{{ [1, {'k': 'é'}] | tojson(indent=2) }}"), None, None).unwrap();
        assert_eq!(
            t.render_prompt("").unwrap(),
            "[\n  1,\n  {\n    \"k\": \"é\"\n  }\n]"
        );
    }
}
