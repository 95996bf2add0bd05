//! A chat template is bounded in memory and stack, not only in steps
//! (issue 21): templates that grow a value without bound, write or capture
//! without bound, make a namespace hold itself, or recurse, written into a
//! GGUF as a stranger would ship them, are refused when the model loads,
//! with an error naming the template and the limit, within a second and
//! under 200 MB peak, each measured in a child process of its own (the
//! child reads its own peak resident memory, VmHWM, as it ends).
//!
//! The same cases run from C (tests/c), Python (python/tests) and Node's
//! wasm build (wasm/tests) through those skins; the CLI case is here.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use main_engine::gguf::{Gguf, GgufWriter, Value};
use main_engine::model::Model;
use main_engine::template::ChatTemplate;

const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// The template: 64 doublings of an 8-byte string (2^67 bytes).
const DOUBLING: &str = "{% set ns = namespace(s=\"xxxxxxxx\") %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}";

/// (name, template, text the error must contain).
const HOSTILE: &[(&str, &str, &str)] = &[
    ("doubling with ~", DOUBLING, "limit of"),
    (
        "doubling with +",
        "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
        "limit of",
    ),
    // Memory growth through macros: each call's output is captured, and
    // nested calls double it.
    (
        "nested ~ in macros",
        "{% macro twice(s) %}{{ s ~ s }}{% endmacro %}{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = twice(ns.s) %}{% endfor %}{{ ns.s }}",
        "limit of",
    ),
    (
        "recursive macro doubling its argument",
        "{% macro f(s, n) %}{% if n > 0 %}{{ f(s ~ s, n - 1) }}{% else %}{{ s }}{% endif %}{% endmacro %}{{ f('xxxxxxxx', 40) }}",
        "limit of",
    ),
    (
        "capture flood in a macro",
        "{% macro f() %}{% for i in range(99999) %}{{ 'x' * 9999 }}{% endfor %}{% endmacro %}{% set y = f() %}done",
        "limit of",
    ),
    (
        "raw text flood in a set block",
        "{% set y %}{% for i in range(99999) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}{% endset %}done",
        "limit of",
    ),
    // Memory growth through sequences: `* n`, `+` and `|join`.
    (
        "list * 2, 64 times",
        "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l * 2 %}{% endfor %}{{ ns.l | length }}",
        "items",
    ),
    (
        "list + list, joined",
        "{% set ns = namespace(l=['xxxxxxxx']) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | join(',') }}",
        "items",
    ),
    (
        "join of a list of one big string repeated",
        "{% set big = 'x' * 100000 %}{{ [big, big, big, big, big, big, big, big, big, big, big, big] | join(big) }}",
        "limit of",
    ),
    (
        "many distinct big strings kept",
        "{% set ns = namespace(l=[]) %}{% for i in range(2000) %}{% set ns.l = ns.l + [('x' * 1000000) ~ i] %}{% endfor %}{{ ns.l | length }}",
        "limit of",
    ),
    (
        "replace with an empty pattern",
        "{{ ('x' * 100000) | replace('', 'yyyyyyyyyyyyyyyy') }}",
        "limit of",
    ),
    (
        ".replace() with an empty pattern",
        "{{ ('x' * 100000).replace('', 'yyyyyyyyyyyyyyyy') }}",
        "limit of",
    ),
    ("indent width", "{{ 'a\nb' | indent(99999999999) }}", "limit of"),
    ("batch count", "{{ [1] | batch(999999999999) }}", "items"),
    ("slice count", "{{ [1] | slice(999999999999) }}", "items"),
    ("printf width", "{{ '%999999999s' | format('x') }}", "limit of"),
    ("str.format width", "{{ '{:>999999999}'.format('x') }}", "limit of"),
    ("tojson indent", "{{ [1, 2] | tojson(indent=99999999999) }}", "limit of"),
    (
        "constant folding",
        "{{ ('x' * 99999999) ~ ('x' * 99999999) ~ ('x' * 99999999) }}",
        "limit of",
    ),
    // A namespace that holds itself: refused when it is made to.
    (
        "self-referencing namespace through ~",
        "{% set ns = namespace(a=0) %}{% set ns.a = ns %}{{ ns ~ '' }}",
        "inside a namespace",
    ),
    (
        "self-referencing namespace through |string",
        "{% set ns = namespace(a=0) %}{% set ns.a = ns %}{{ ns | string }}",
        "inside a namespace",
    ),
    (
        "self-referencing namespace through |pprint",
        "{% set ns = namespace(a=0) %}{% set ns.a = ns %}{{ ns | pprint }}",
        "inside a namespace",
    ),
    (
        "self-referencing namespace compared",
        "{% set ns = namespace(a=0) %}{% set ns.a = ns %}{{ ns == ns }}{{ ns < ns }}{{ ns in [ns] }}",
        "inside a namespace",
    ),
    (
        "namespace cycle through a list",
        "{% set ns = namespace(a=0) %}{% set ns.a = [1, [ns]] %}{{ ns }}",
        "inside a namespace",
    ),
    (
        "two namespaces holding each other",
        "{% set a = namespace() %}{% set b = namespace(a=a) %}{% set a.b = b %}{{ a | tojson }}",
        "inside a namespace",
    ),
    // Deep recursion: macros, recursive loops, nesting built in a loop.
    (
        "macro recursion",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "recursion limit of",
    ),
    (
        "macro recursion through a filter",
        "{% macro f(x) %}{{ [x] | map('string') | join }}{{ f([x]) }}{% endmacro %}{{ f(1) }}",
        "limit of",
    ),
    (
        "recursive loop",
        "{% for x in [[1]] recursive %}{{ loop([[x]]) }}{% endfor %}",
        "limit of",
    ),
    (
        "nesting built in a loop",
        "{% set ns = namespace(l=[]) %}{% for i in range(99999) %}{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l == ns.l }}",
        "levels deep",
    ),
    (
        "nesting through macro arguments",
        "{% macro f(x, n) %}{% if n > 0 %}{{ f([[[[[[[[[[x]]]]]]]]]], n - 1) }}{% else %}{{ x == x }}{% endif %}{% endmacro %}{{ f(1, 40) }}",
        "levels deep",
    ),
    (
        "a deep constant list",
        "{{ [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]] == 1 }}",
        "levels deep",
    ),
];

/// The small fixture model rewritten with `template` as its chat template.
fn gguf_with_template(template: &str) -> Vec<u8> {
    let path = common::fixture("mistral-tiny/model.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let mut w = GgufWriter::new();
    for (key, value) in &g.metadata {
        if key != CHAT_TEMPLATE_KEY {
            w.add(key.clone(), value.clone()).unwrap();
        }
    }
    w.add(CHAT_TEMPLATE_KEY, Value::from(template)).unwrap();
    for t in &g.tensors {
        w.add_tensor(
            t.name.clone(),
            t.dtype,
            &t.dims,
            &bytes[t.offset..t.offset + t.n_bytes],
        )
        .unwrap();
    }
    w.to_bytes()
}

/// Peak resident memory of this process so far, in bytes (Linux).
fn peak_rss(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    Some(
        kib.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?
            * 1024,
    )
}

const CASE_VAR: &str = "MAIN_TEMPLATE_BOUNDS_CASE";
const PEAK_LIMIT: u64 = 200 << 20;

/// The child: loads the model with case `MAIN_TEMPLATE_BOUNDS_CASE`'s
/// template and reports the outcome, the time the load took and its own
/// peak memory. Does nothing when run as an ordinary test.
#[test]
fn hostile_template_child() {
    let Ok(case) = std::env::var(CASE_VAR) else {
        return;
    };
    let (_, source, _) = HOSTILE[case.parse::<usize>().unwrap()];
    let gguf: Arc<[u8]> = Arc::from(gguf_with_template(source));
    let start = Instant::now();
    let outcome = Model::from_gguf_bytes(gguf);
    let ms = start.elapsed().as_millis();
    let msg = match outcome {
        Ok(_) => "LOADED".to_string(),
        Err(e) => e.to_string(),
    };
    println!(
        "\nCASE-RESULT ms={ms} peak={} err={msg}",
        peak_rss("self").unwrap_or(0)
    );
}

#[test]
#[cfg(target_os = "linux")]
fn hostile_templates_are_refused_at_load_fast_and_small() {
    let exe = std::env::current_exe().unwrap();
    let mut failures = Vec::new();
    for (i, &(name, _, says)) in HOSTILE.iter().enumerate() {
        let out = Command::new(&exe)
            .args(["--exact", "hostile_template_child", "--nocapture"])
            .env(CASE_VAR, i.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("CASE-RESULT ")) else {
            failures.push(format!(
                "{name}: the child died: {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        };
        let ms: u64 = line["ms=".len()..line.find(' ').unwrap()].parse().unwrap();
        let peak_at = line.find("peak=").unwrap() + "peak=".len();
        let peak: u64 = line[peak_at..peak_at + line[peak_at..].find(' ').unwrap()]
            .parse()
            .unwrap();
        let msg = &line[line.find("err=").unwrap() + "err=".len()..];
        eprintln!("{name}: {ms} ms, peak {} MB: {msg}", peak >> 20);
        if !(msg.starts_with("chat template:")
            && msg.contains("chat_template")
            && msg.contains(says))
        {
            failures.push(format!("{name}: not the expected error ({says:?}): {msg}"));
        }
        if ms > 1000 {
            failures.push(format!("{name}: {ms} ms to refuse"));
        }
        if peak == 0 || peak > PEAK_LIMIT {
            failures.push(format!("{name}: peak {peak} bytes"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The bounds leave real use alone: a long message renders whole.
#[test]
fn a_long_message_renders_within_the_bounds() {
    let t = ChatTemplate::new(
        Some("{% for m in messages %}{{ '<|' + m.role + '|>' + m.content | trim + '\n' }}{% endfor %}"),
        None,
        None,
    )
    .unwrap();
    let long = "word ".repeat(400_000);
    let out = t
        .render(&[("user", &long), ("assistant", &long)], false)
        .unwrap();
    assert_eq!(out.len(), 2 * (long.trim().len() + "<|user|>\n".len()) + 5);
}

/// The report: `main-score score` on a GGUF with the doubling
/// template reached 8.9 GB. It must stop at load with the error, within a
/// second of work and under 200 MB (its VmHWM, read while it runs).
#[test]
#[cfg(target_os = "linux")]
fn main_score_refuses_the_doubling_template() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("template-bounds");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("doubling.gguf");
    std::fs::write(&model, gguf_with_template(DOUBLING)).unwrap();
    let input = dir.join("one.jsonl");
    std::fs::write(&input, "{\"prompt\": \"Hi\", \"response\": \"Hello\"}\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_main-score"))
        .arg("score")
        .arg("--model")
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .args(["--threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let start = Instant::now();
    let mut peak = 0;
    let status = loop {
        // VmHWM only grows: the last reading before exit is the peak so far.
        if let Some(p) = peak_rss(&pid) {
            peak = peak.max(p);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("main-score still running after 30 s: the template was not bounded");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let elapsed = start.elapsed();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    eprintln!("main-score: {elapsed:?}, peak {} MB: {err}", peak >> 20);
    assert!(!status.success());
    assert!(
        err.contains("chat template") && err.contains("limit of"),
        "{err}"
    );
    assert!(peak < PEAK_LIMIT, "peak {peak} bytes");
    // Process start and model read included.
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}
