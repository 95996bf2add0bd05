//! Chat templates and the four views of a pair (DESIGN.md §2):
//! - against Jinja2 and llama.cpp (`tests/reference/render_views.py` ->
//!   `tests/data/views_jinja2.json`): the SmolLM2 fixture's own template,
//!   and LLaMA-2 / Mistral templates on llama.cpp's SPM test vocabulary;
//! - templates of other families (LLaMA-3, LLaMA-3.1, Mistral, LLaMA-2,
//!   Zephyr, Gemma, a ChatML variant with Python methods), expectations
//!   rendered by Jinja2 with `transformers`' settings;
//! - truncation: content is cut, never the template, and both views of a
//!   direction score the same target ids.

mod common;

use main_engine::gguf::Gguf;
use main_engine::model::Model;
use main_engine::score::Pair;
use main_engine::template::ChatTemplate;
use main_engine::tokenizer::Tokenizer;
use main_engine::views::{
    build_view, pair_views, reverse_content, ViewKind, ViewTokens, REVERSE_PROMPT,
};
use main_engine::Error;

use common::{default_model, fixture, ids_of, read_json};

fn smollm2() -> (Model, ChatTemplate) {
    let model = Model::load(&default_model()).expect("load SmolLM2 fixture");
    let template = ChatTemplate::for_model(&model).expect("SmolLM2 chat template");
    (model, template)
}

fn vocab(rel: &str) -> Tokenizer {
    let bytes = std::fs::read(fixture(rel)).unwrap();
    Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap()
}

fn str_of(v: &serde_json::Value) -> &str {
    v.as_str().expect("string")
}

/// The content of each view's user message, in [`ViewKind`] order.
fn contents(pair: &Pair) -> [String; 4] {
    [
        pair.instruction.clone(),
        String::new(),
        reverse_content(&pair.response),
        String::new(),
    ]
}

/// Checks every view of the reference `pairs` rendered with `template` on `tok`.
fn check_against_reference(
    tok: &Tokenizer,
    template: &ChatTemplate,
    reference: &serde_json::Value,
    what: &str,
) {
    assert_eq!(
        template.end_of_turn(),
        str_of(&reference["end_of_turn"]),
        "{what}: end of turn"
    );
    let pairs = reference["pairs"].as_array().unwrap();
    assert!(
        pairs.len() >= 5,
        "{what}: reference has {} pairs",
        pairs.len()
    );
    for (i, p) in pairs.iter().enumerate() {
        let pair = Pair::new(str_of(&p["instruction"]), str_of(&p["response"]));
        let views = pair_views((tok, template), (tok, template), &pair, 4096).unwrap();
        let expected = p["views"].as_array().unwrap();
        let contents = contents(&pair);
        let targets = [
            &pair.response,
            &pair.response,
            &pair.instruction,
            &pair.instruction,
        ];
        for (k, kind) in ViewKind::ALL.into_iter().enumerate() {
            let e = &expected[k];
            let at = format!("{what} pair {i} {}", kind.name());
            assert_eq!(str_of(&e["kind"]), kind.name(), "{at}: view order");
            assert_eq!(
                template.render_prompt(&contents[k]).unwrap(),
                str_of(&e["prompt"]),
                "{at}: prompt text"
            );
            assert_eq!(
                format!("{}{}", targets[k], template.end_of_turn()),
                str_of(&e["target"]),
                "{at}: target text"
            );
            let v = &views[k];
            assert_eq!(
                v.prompt(),
                ids_of(&e["prompt_ids"]).as_slice(),
                "{at}: prompt ids"
            );
            assert_eq!(
                v.target(),
                ids_of(&e["target_ids"]).as_slice(),
                "{at}: target ids"
            );
            assert!(!v.truncated, "{at}: flagged truncated");
        }
    }
}

#[test]
fn smollm2_views_match_jinja2_and_llama_cpp() {
    let reference = read_json("tests/data/views_jinja2.json");
    assert_eq!(str_of(&reference["reverse_prompt"]), REVERSE_PROMPT);
    let (model, template) = smollm2();
    assert_eq!(template.end_of_turn(), "<|im_end|>");
    check_against_reference(&model.tokenizer, &template, &reference, "SmolLM2");
}

#[test]
fn spm_templates_write_bos_once_as_llama_cpp_tokenizes() {
    let reference = read_json("tests/data/views_jinja2.json");
    let tok = vocab(str_of(&reference["spm_vocab"]));
    assert!(tok.add_bos_default(), "the SPM vocabulary adds BOS");
    let bos = tok.bos_id().unwrap();
    for name in ["llama2", "mistral"] {
        let r = &reference["spm"][name];
        let template = ChatTemplate::new(
            Some(str_of(&r["template"])),
            Some("<s>".into()),
            Some("</s>".into()),
        )
        .unwrap();
        check_against_reference(&tok, &template, r, name);
        let v = build_view(&tok, &template, "Hi", "Hello", 4096).unwrap();
        assert_eq!(v.ids[0], bos);
        assert_ne!(v.ids[1], bos, "{name}: BOS doubled");
    }
}

// ---------------------------------------------------------------------------
// Other families
// ---------------------------------------------------------------------------

const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}";

const LLAMA31: &str = r#"{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%A %d %B %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

const MISTRAL: &str = r#"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"#;

const LLAMA2: &str = r#"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"#;

/// Zephyr: one block tag per line, so `trim_blocks` decides the output.
const ZEPHYR: &str = "{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}
";

const GEMMA: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '
' + message['content'] | trim + '<end_of_turn>
' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model
'}}{% endif %}";

/// ChatML as Qwen writes it: namespace(), `break`, Python string methods,
/// `tojson` behind a `tools` test.
const CHATML_PY: &str = r#"{%- set ns = namespace(has_system=false) %}
{%- for message in messages %}
    {%- if message.role == 'system' %}{% set ns.has_system = true %}{% break %}{% endif %}
{%- endfor %}
{%- if not ns.has_system %}
    {{- '<|im_start|>system\nYou are Qwen, a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- if tools %}{{ tools | tojson }}{% endif %}
{%- for message in messages %}
    {%- if message.content.startswith('/') %}{{ raise_exception('commands are not messages: ' + message.content) }}{% endif %}
    {{- '<|im_start|>' + message.role + '\n' + message.content.strip() + '<|im_end|>' + '\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

/// A template, its special tokens, and what Jinja2 configured as
/// `transformers` does renders for the user message "  Hi there \n".
struct Family {
    name: &'static str,
    source: &'static str,
    bos: Option<&'static str>,
    eos: &'static str,
    prompt: &'static str,
    end_of_turn: &'static str,
}

const fn family(
    name: &'static str,
    source: &'static str,
    bos: Option<&'static str>,
    eos: &'static str,
    prompt: &'static str,
    end_of_turn: &'static str,
) -> Family {
    Family {
        name,
        source,
        bos,
        eos,
        prompt,
        end_of_turn,
    }
}

const FAMILIES: &[Family] = &[
    family(
        "llama3",
        LLAMA3,
        Some("<|begin_of_text|>"),
        "<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id|>",
    ),
    family(
        "llama3.1",
        LLAMA31,
        Some("<|begin_of_text|>"),
        "<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: Friday 26 July 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id|>",
    ),
    family("mistral", MISTRAL, Some("<s>"), "</s>", "<s>[INST]   Hi there \n [/INST]", "</s>"),
    family("llama2", LLAMA2, Some("<s>"), "</s>", "<s>[INST] Hi there [/INST]", " </s>"),
    family("zephyr", ZEPHYR, Some("<s>"), "</s>", "<|user|>\n  Hi there \n</s>\n<|assistant|>\n", "</s>"),
    family(
        "gemma",
        GEMMA,
        Some("<bos>"),
        "<eos>",
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
        "<end_of_turn>",
    ),
    family(
        "chatml-python",
        CHATML_PY,
        None,
        "<|im_end|>",
        "<|im_start|>system\nYou are Qwen, a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        "<|im_end|>",
    ),
];

#[test]
fn families_render_as_jinja2_does() {
    for &Family {
        name,
        source,
        bos,
        eos,
        prompt,
        end_of_turn,
    } in FAMILIES
    {
        let t = ChatTemplate::new(Some(source), bos.map(String::from), Some(eos.to_string()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            t.render_prompt("  Hi there \n").unwrap(),
            prompt,
            "{name}: prompt"
        );
        assert_eq!(t.end_of_turn(), end_of_turn, "{name}: end of turn");
    }
}

fn template_error(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::Template(msg)) => msg,
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn raise_exception_is_a_template_error_with_its_message() {
    let gemma = ChatTemplate::new(Some(GEMMA), Some("<bos>".into()), Some("<eos>".into())).unwrap();
    let msg = template_error(gemma.render(&[("system", "Be brief."), ("user", "Hi")], true));
    assert!(msg.contains("System role not supported"), "{msg}");
    let mistral =
        ChatTemplate::new(Some(MISTRAL), Some("<s>".into()), Some("</s>".into())).unwrap();
    let msg = template_error(mistral.render(&[("user", "a"), ("user", "b")], true));
    assert!(msg.contains("Conversation roles must alternate"), "{msg}");
    let chatml = ChatTemplate::new(Some(CHATML_PY), None, Some("<|im_end|>".into())).unwrap();
    let msg = template_error(chatml.render_prompt("/reset"));
    assert!(msg.contains("commands are not messages: /reset"), "{msg}");

    // Checked when the template is built: the error names the problem.
    let msg = template_error(ChatTemplate::new(
        Some("{{ raise_exception('no chat here') }}"),
        None,
        None,
    ));
    assert!(msg.contains("no chat here"), "{msg}");
    let msg = template_error(ChatTemplate::new(
        Some("{% for m in messages %}{{ m.content }"),
        None,
        None,
    ));
    assert!(
        msg.contains("chat_template"),
        "syntax errors name the template: {msg}"
    );
    let msg = template_error(ChatTemplate::new(
        Some("{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}"),
        None,
        None,
    ));
    assert!(
        msg.contains("end-of-turn"),
        "a template that drops assistant turns: {msg}"
    );
}

#[test]
fn template_content_is_never_template_code() {
    let (_, t) = smollm2();
    let s = "{{ bos_token }} {% if true %}x{% endif %} {# c #}";
    assert!(t.render_prompt(s).unwrap().contains(s));
}

#[test]
fn alpaca_without_template() {
    let (model, _) = smollm2();
    let tok = &model.tokenizer;
    let t = ChatTemplate::new(None, None, Some("<|im_end|>".into())).unwrap();
    assert_eq!(
        t.render_prompt("Name a color.").unwrap(),
        "### Instruction:\nName a color.\n\n### Response:\n"
    );
    assert_eq!(t.end_of_turn(), "<|im_end|>");
    let v = build_view(tok, &t, "Name a color.", "Blue", 1024).unwrap();
    assert_eq!(
        v.prompt(),
        tok.encode(
            "### Instruction:\nName a color.\n\n### Response:\n",
            false,
            true
        )
        .unwrap()
    );
    assert_eq!(
        *v.target().last().unwrap(),
        tok.eos_id().unwrap(),
        "the target ends with EOS"
    );
}

// ---------------------------------------------------------------------------
// Truncation
// ---------------------------------------------------------------------------

const PARAGRAPH: &str =
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen; \
the light reactions happen in the thylakoid membranes and the Calvin cycle in the stroma. ";

/// The template's text before and after the user content.
fn template_parts(t: &ChatTemplate) -> (String, String) {
    let marker = "\u{1}MARK\u{1}";
    let p = t.render_prompt(marker).unwrap();
    let (head, tail) = p.split_once(marker).unwrap();
    (head.to_string(), tail.to_string())
}

/// The template is intact around the (cut) content, the target ends with
/// the end of turn, and the cut target text is a prefix of `target`.
fn check_intact(
    tok: &Tokenizer,
    t: &ChatTemplate,
    v: &ViewTokens,
    target: &str,
    max_tokens: usize,
    what: &str,
) {
    assert!(
        v.ids.len() <= max_tokens,
        "{what}: {} ids over {max_tokens}",
        v.ids.len()
    );
    assert!(!v.target().is_empty(), "{what}: no target");
    let (head, tail) = template_parts(t);
    let head_ids = tok.encode(&head, false, true).unwrap();
    let tail_ids = tok.encode(&tail, false, true).unwrap();
    assert!(
        v.prompt().starts_with(&head_ids),
        "{what}: template head cut"
    );
    assert!(v.prompt().ends_with(&tail_ids), "{what}: template tail cut");
    let eot_ids = tok.encode(t.end_of_turn(), false, true).unwrap();
    assert!(v.target().ends_with(&eot_ids), "{what}: end of turn cut");
    let text = tok.decode(&v.target()[..v.target().len() - eot_ids.len()]);
    assert!(
        target.starts_with(&text),
        "{what}: target text {text:?} is not a prefix"
    );
    assert!(!text.contains('\u{FFFD}'), "{what}: cut inside a character");
}

#[test]
fn long_pairs_are_cut_in_content_never_in_the_template() {
    let (model, t) = smollm2();
    let tok = &model.tokenizer;
    let x = format!("Summarize this text.\n\n{}", PARAGRAPH.repeat(20));
    let y = PARAGRAPH.repeat(15);
    let max = 160;
    let pair = Pair::new(x.clone(), y.clone());
    let views = pair_views((tok, &t), (tok, &t), &pair, max).unwrap();
    let targets = [&y, &y, &x, &x];
    for (k, v) in views.iter().enumerate() {
        let what = ViewKind::ALL[k].name();
        check_intact(tok, &t, v, targets[k], max, what);
        assert!(v.truncated, "{what}: not flagged");
    }
    // Both contents long: the target keeps about half.
    let n = views[0].target().len();
    assert!(
        n <= max / 2 && n + 3 >= max / 2,
        "fwd target {n} ids for max {max}"
    );
    assert!(
        views[0].ids.len() + 3 >= max,
        "the prompt content fills the rest: {}",
        views[0].ids.len()
    );
    assert_eq!(
        views[0].target(),
        views[1].target(),
        "forward views score different targets"
    );
    assert_eq!(
        views[2].target(),
        views[3].target(),
        "reverse views score different targets"
    );
    assert_eq!(
        views[1].prompt(),
        tok.encode(&t.render_prompt("").unwrap(), false, true)
            .unwrap()
    );
    // The reverse prompt keeps its fixed instruction and cuts the response.
    let rev_prompt = tok.decode(views[2].prompt());
    assert!(rev_prompt.contains(REVERSE_PROMPT), "{rev_prompt}");
}

#[test]
fn the_short_side_is_kept_whole() {
    let (model, t) = smollm2();
    let tok = &model.tokenizer;
    let long = PARAGRAPH.repeat(20);
    let max = 128;

    // Short prompt: the target takes all the room that is left.
    let v = build_view(tok, &t, "Explain photosynthesis.", &long, max).unwrap();
    check_intact(tok, &t, &v, &long, max, "long target");
    let full_prompt = tok
        .encode(
            &t.render_prompt("Explain photosynthesis.").unwrap(),
            false,
            true,
        )
        .unwrap();
    assert_eq!(
        v.prompt(),
        full_prompt.as_slice(),
        "the short prompt was cut"
    );
    assert!(v.truncated && v.ids.len() + 3 >= max, "{} ids", v.ids.len());

    // Short target: kept whole, the prompt content is cut.
    let v = build_view(tok, &t, &long, "Plants make sugar from light.", max).unwrap();
    check_intact(
        tok,
        &t,
        &v,
        "Plants make sugar from light.",
        max,
        "long prompt",
    );
    assert_eq!(
        v.target(),
        tok.encode("Plants make sugar from light.<|im_end|>", false, true)
            .unwrap()
    );
    assert!(v.truncated && v.ids.len() + 3 >= max);

    // Fits: untouched and not flagged.
    let v = build_view(tok, &t, "Hi", "Hello", max).unwrap();
    assert!(!v.truncated);
    assert_eq!(
        v.target(),
        tok.encode("Hello<|im_end|>", false, true).unwrap()
    );
}

#[test]
fn cuts_fall_between_characters() {
    let (model, t) = smollm2();
    let tok = &model.tokenizer;
    // Byte-level tokens split these characters; a cut must not.
    let y = "東京駅で🚉を見た。Ærøskøbing — naïve café. ".repeat(40);
    let x = "日本語で説明してください。🙂".repeat(40);
    for max in [61, 64, 77, 100] {
        let pair = Pair::new(x.clone(), y.clone());
        let views = pair_views((tok, &t), (tok, &t), &pair, max).unwrap();
        check_intact(tok, &t, &views[0], &y, max, &format!("fwd max {max}"));
        check_intact(tok, &t, &views[2], &x, max, &format!("rev max {max}"));
        let prompt = tok.decode(views[0].prompt());
        assert!(
            !prompt.contains('\u{FFFD}'),
            "max {max}: prompt cut inside a character"
        );
    }
}

#[test]
fn a_template_longer_than_max_tokens_is_an_error() {
    let (model, t) = smollm2();
    let tok = &model.tokenizer;
    let bare = tok
        .encode(&t.render_prompt("").unwrap(), false, true)
        .unwrap()
        .len();
    let err = build_view(tok, &t, "Hi", "Hello there", bare).unwrap_err();
    assert!(err.to_string().contains("template"), "{err}");
    // Prompt with empty content + end of turn + nothing else: the smallest that works.
    let v = build_view(tok, &t, "Hi", "Hello there", bare + 1).unwrap();
    assert_eq!(
        v.target(),
        [tok.eos_id().unwrap()],
        "only the end of turn is left"
    );
    assert!(v.truncated);
    let v = build_view(tok, &t, "Hi", "Hello there", bare + 2).unwrap();
    assert_eq!(v.target().len(), 2);
}

#[test]
fn nothing_to_score_is_an_error() {
    let (model, _) = smollm2();
    let t = ChatTemplate::new(None, None, None).unwrap();
    assert!(build_view(&model.tokenizer, &t, "Say nothing.", "", 1024).is_err());
}

#[test]
fn templates_are_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<ChatTemplate>();
}
