//! Chat templates from strangers: the real templates of the LLaMA-2/3,
//! Mistral, ChatML/Qwen, Gemma, Phi-3 and DeepSeek families render within
//! the engine's bounds (with a wide margin), and hostile ones, written into
//! GGUF files as a stranger would ship them, fail with a clear error instead
//! of hanging or filling memory.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use main_engine::gguf::{Gguf, GgufWriter, Value};
use main_engine::model::Model;
use main_engine::template::{ChatTemplate, FUEL};
use main_engine::Error;

const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

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

fn model_with_template(template: &str) -> Model {
    Model::from_gguf_bytes(Arc::from(gguf_with_template(template))).unwrap()
}

/// Runs `f` on its own thread and fails the test if it has not returned
/// after `limit`: a hang must fail, not stall the test run.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}: unbounded"))
}

// ---------------------------------------------------------------------------
// Real templates (as the families publish them in tokenizer_config.json)
// ---------------------------------------------------------------------------

const LLAMA2: &str = r#"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"#;

const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

const LLAMA31: &str = r#"{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

const MISTRAL_V3: &str = r#"{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"#;

const QWEN25: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

const GEMMA: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

const PHI3: &str = "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

const DEEPSEEK_LLM: &str = "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

const DEEPSEEK_R1: &str = r#"{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' in message %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}{%- if message['content'] is none %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- else %}{{'<｜Assistant｜>' + message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first = true -%}{%- else %}{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}{% endif %}"#;

/// Name, template, and the prompt it renders for the user message "Hi"
/// with the fixture's BOS/EOS texts written as `{bos}`/`{eos}`.
const FAMILIES: &[(&str, &str, &str)] = &[
    ("llama2", LLAMA2, "{bos}[INST] Hi [/INST]"),
    (
        "llama3",
        LLAMA3,
        "{bos}<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    (
        "llama3.1",
        LLAMA31,
        "{bos}<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    ("mistral-v0.3", MISTRAL_V3, "{bos} [INST] Hi [/INST]"),
    (
        "qwen2.5",
        QWEN25,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    ),
    (
        "gemma",
        GEMMA,
        "{bos}<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    ),
    ("phi-3", PHI3, "<|user|>\nHi<|end|>\n<|assistant|>\n"),
    ("deepseek-llm", DEEPSEEK_LLM, "{bos}User: Hi\n\nAssistant:"),
    ("deepseek-r1", DEEPSEEK_R1, "{bos}<｜User｜>Hi<｜Assistant｜><think>\n"),
];

#[test]
fn real_templates_render_from_a_gguf_far_below_the_bounds() {
    // One long text, as a pair of the data sets the engine scores would be.
    let long = "word, and more words. ".repeat(2_000);
    for &(name, source, prompt) in FAMILIES {
        let model = model_with_template(source);
        assert_eq!(model.chat_template.as_deref(), Some(source), "{name}");
        let t = ChatTemplate::for_model(&model).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tok = &model.tokenizer;
        let text = |id: Option<u32>| id.and_then(|id| tok.id_to_token(id)).unwrap_or_default();
        let expected = prompt
            .replace("{bos}", &text(tok.bos_id()))
            .replace("{eos}", &text(tok.eos_id()));
        assert_eq!(t.render_prompt("Hi").unwrap(), expected, "{name}");

        // The most the engine asks of a template: a two-turn conversation
        // (end of turn) and a long single message (each view's prompt).
        let mut most = 0;
        for messages in [
            vec![("user", long.as_str()), ("assistant", long.as_str())],
            vec![("user", long.as_str())],
        ] {
            let (rendered, steps) = t.render_measured(&messages, true).unwrap();
            assert!(rendered.contains(long.trim()), "{name}");
            most = most.max(steps);
        }
        assert!(steps_ok(most), "{name}: {most} steps of the {FUEL} allowed");
        eprintln!("{name}: {most} steps");
    }
}

/// Real templates must use under 1% of the fuel.
fn steps_ok(steps: u64) -> bool {
    steps > 0 && steps * 100 < FUEL
}

// ---------------------------------------------------------------------------
// Hostile templates
// ---------------------------------------------------------------------------

/// The issue's template: 10^10 loop steps.
const NESTED_LOOPS: &str =
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}x";

const HOSTILE: &[(&str, &str, &str)] = &[
    ("nested loops", NESTED_LOOPS, "steps"),
    (
        "recursive macro",
        "{% macro f(n) %}{% for i in range(100) %}{{ f(n) }}{% endfor %}{% endmacro %}{{ f(1) }}",
        "recursion limit",
    ),
    (
        "output flood",
        "{% for i in range(99999) %}{{ 'x' * 99999 }}{% endfor %}",
        "bytes",
    ),
    ("one huge string", "{{ 'x' * 99999999 }}", "bytes"),
    // Found by the chat_template fuzzer: printing or serializing a namespace
    // that holds itself recursed until the stack overflowed. A namespace
    // may no longer hold a namespace.
    (
        "namespace holding itself",
        "{% set ns = namespace(n=0) %}{% set ns.n = ns %}{{ ns.n }}",
        "inside a namespace",
    ),
    (
        "namespace cycle to JSON",
        "{% set a = namespace() %}{% set b = namespace(a=a) %}{% set a.b = b %}{{ a | tojson }}",
        "inside a namespace",
    ),
];

fn template_error<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(e @ Error::Template(_)) => e.to_string(),
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn hostile_templates_in_a_gguf_fail_fast_with_a_clear_error() {
    for &(name, source, says) in HOSTILE {
        let gguf: Arc<[u8]> = Arc::from(gguf_with_template(source));
        let start = Instant::now();
        // Refused where the model loads (template::check_bounds, from Model::assemble), before
        // any scorer or data.
        let msg = within(Duration::from_secs(20), move || {
            template_error(Model::from_gguf_bytes(gguf).map(|_| ()))
        });
        eprintln!("{name}: {:?}: {msg}", start.elapsed());
        assert!(msg.contains(says), "{name}: {msg}");
    }
}

/// The issue's report: `main-score score` on such a GGUF spun until killed.
#[test]
fn main_score_refuses_a_gguf_whose_template_loops() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("templates");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("nested-loops.gguf");
    std::fs::write(&model, gguf_with_template(NESTED_LOOPS)).unwrap();
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
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("main-score still running after 30 s: the template was not bounded");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("chat template") && err.contains("steps"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Golden renderings: 50-turn conversations, byte for byte as before the
// memory bounds (engine/tests/data/templates/*.txt, written by the engine
// before those bounds existed)
// ---------------------------------------------------------------------------

/// A conversation of `turns` user/assistant exchanges (with a system message
/// first when `system`), in the texts real data has: leading and trailing
/// spaces, newlines, non-ASCII, markup and a reasoning block.
fn conversation(turns: usize, system: bool) -> Vec<(String, String)> {
    let mut m = Vec::new();
    if system {
        m.push((
            "system".to_string(),
            "You are a careful assistant.\nAnswer briefly.".to_string(),
        ));
    }
    for t in 0..turns {
        m.push((
            "user".to_string(),
            format!("  Question {t}: what is {t} × 2? <b>bold</b> {{% raw %}} é ✓\n"),
        ));
        m.push((
            "assistant".to_string(),
            format!(
                "<think>step {t}</think>\n{} is the answer.\n\n- item\n- `code`  ",
                t * 2
            ),
        ));
    }
    m
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/templates")
        .join(format!("{name}.txt"))
}

/// Every family renders the conversation (whole, and up to its last user
/// message with the generation prompt) exactly as the golden file says.
/// `MAIN_BLESS_TEMPLATES=1` rewrites the files from the current code.
#[test]
fn real_templates_render_50_turn_conversations_as_before() {
    let bless = std::env::var_os("MAIN_BLESS_TEMPLATES").is_some();
    for &(name, source, _) in FAMILIES {
        // Gemma refuses a system message.
        let m = conversation(50, name != "gemma");
        let t = ChatTemplate::new(Some(source), Some("<s>".into()), Some("</s>".into()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let all: Vec<(&str, &str)> = m.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
        let whole = t
            .render(&all, false)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let prompt = t
            .render(&all[..all.len() - 1], true)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = format!("{whole}\n=====PROMPT=====\n{prompt}");
        let path = golden_path(name);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            got == want,
            "{name}: the rendering differs from {}",
            path.display()
        );
        assert!(whole.matches("is the answer.").count() >= 50, "{name}");
    }
}
