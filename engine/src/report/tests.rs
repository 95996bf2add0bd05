//! The builder on small synthetic records, against numbers worked out by
//! hand or by the independent functions of `stats`.

use super::*;
use crate::error::Error;
use crate::summary::SUMMARY_FIELDS;

/// A scored pair's line: `fwd` and `rev` pmi, `len` response tokens.
fn pair(instruction: &str, response: &str, fwd: f64, rev: f64, len: u32, line: u32) -> String {
    serde_json::json!({
        "instruction": instruction, "input": "", "output": response,
        "alignment": {
            "alignment": fwd.min(rev), "fwd_pmi": fwd, "rev_pmi": rev,
            "fwd_pmi_total": fwd * len as f64, "rev_pmi_total": rev * 3.0,
            "semantic": fwd, "structural": 0.0, "ifd": (-fwd).exp(),
            "response_tokens": len, "instruction_tokens": 3, "truncated": false, "line": line
        }
    })
    .to_string()
}

fn build(params: &ReportParams, lines: &[String]) -> ReportData {
    let mut b = ReportBuilder::new(params, "t.jsonl").unwrap();
    for (i, l) in lines.iter().enumerate() {
        b.add_line(l.as_bytes(), i + 1).unwrap();
    }
    b.finish()
}

fn stat<'a>(d: &'a ReportData, field: &str) -> &'a FieldStats {
    d.stats.iter().find(|s| s.field == field).unwrap()
}

/// Ten pairs: fwd_pmi 0.1 .. 1.0 less 0.5 (so five are <= 0), rev_pmi
/// alternating signs, lengths 10, 20, ... (fwd_pmi falls with length).
fn ten() -> Vec<String> {
    (0..10)
        .map(|i| {
            let fwd = 0.5 - 0.1 * (i + 1) as f64 + 0.05;
            let rev = if i % 2 == 0 { 0.3 } else { -0.2 };
            pair(
                &format!("question {i}"),
                &format!("answer number {i} here"),
                fwd,
                rev,
                10 * (i + 1),
                i + 1,
            )
        })
        .collect()
}

#[test]
fn counts_quadrants_histograms_and_quantiles() {
    let d = build(&ReportParams::default(), &ten());
    assert_eq!((d.records, d.pairs, d.conversations), (10, 10, 0));
    assert!(d.exact && d.filter.is_none());
    // fwd > 0 for i = 0..=3 (0.45, 0.35, 0.25, 0.15), i = 4 gives 0.05.
    // i even: rev > 0. Aligned: i = 0, 2, 4; not recoverable: 1, 3;
    // ignores the instruction: 6, 8; both weak: 5, 7, 9.
    let q = &d.quadrants;
    assert_eq!(
        (
            q.aligned,
            q.not_recoverable,
            q.ignores_instruction,
            q.both_weak,
            q.missing
        ),
        (3, 2, 2, 3, 0)
    );
    for h in &d.histograms {
        let inside: u64 = h.counts.iter().sum();
        assert_eq!(inside + h.below + h.above + h.missing, 10, "{}", h.field);
        assert_eq!(h.count, 10);
    }
    // Quantiles as numpy: fwd_pmi sorted is -0.45 .. 0.45 by 0.1; p50 = 0.0.
    let f = stat(&d, "fwd_pmi");
    let p = |q: f64| {
        f.percentiles
            .iter()
            .find(|(p, _)| *p == q)
            .unwrap()
            .1
            .unwrap()
    };
    assert!(p(50.0).abs() < 1e-12);
    assert!((p(5.0) - (-0.45 + 0.45 * 0.1)).abs() < 1e-12);
    assert_eq!((f.min, f.max), (Some(-0.45), Some(0.45)));
    // fwd_pmi falls as length grows: rho = -1, with the summary's warning.
    assert!((f.rho_length.unwrap() + 1.0).abs() < 1e-12);
    assert!(f.length_warning.as_ref().unwrap().contains("keeps short"));
    let row = d.summary.iter().find(|r| r.field == "fwd_pmi").unwrap();
    assert!(row.warning.is_some());
    assert_eq!(d.summary.len(), SUMMARY_FIELDS.len());
    // The dots: every record, columns line, kept, then the fields.
    assert_eq!(d.sample.rows.len(), 10);
    assert_eq!(d.sample.columns[..3], ["line", "kept", "alignment"]);
    // Examples by alignment at 5, 50, 95.
    assert_eq!(d.examples.field, "alignment");
    assert_eq!(d.examples.items.len(), 3);
    assert!(d.examples.items[0]
        .shown
        .instruction
        .starts_with("question"));
}

#[test]
fn the_filter_kept_share_and_threshold() {
    let mut params = ReportParams {
        rules: vec![Rule::keep_top(0.4, "fwd_pmi").unwrap()],
        ..ReportParams::default()
    };
    let d = build(&params, &ten());
    let f = d.filter.as_ref().unwrap();
    // round(0.4 x 10) = 4 best fwd_pmi: 0.45, 0.35, 0.25, 0.15: cut 0.15.
    assert_eq!((f.kept, f.of, f.exact), (4, 10, true));
    assert!((f.thresholds[0].value - 0.15).abs() < 1e-12);
    assert_eq!(f.thresholds[0].keep, "above");
    let kept_dots = d.sample.rows.iter().filter(|r| r[1] == true).count();
    assert_eq!(kept_dots, 4);
    // A min rule as well: rev_pmi >= 0 keeps i even: of the four, 0 and 2.
    params.rules.push(Rule::parse_min("rev_pmi=0").unwrap());
    let d = build(&params, &ten());
    assert_eq!(d.filter.as_ref().unwrap().kept, 2);
    // Keeping the lowest: the threshold is on the field's own scale.
    params.rules = vec![Rule::keep_top(0.2, "-ifd").unwrap()];
    let d = build(&params, &ten());
    let t = &d.filter.as_ref().unwrap().thresholds[0];
    assert_eq!((t.field.as_str(), t.keep.as_str()), ("ifd", "below"));
    assert!((t.value - (-0.35f64).exp()).abs() < 1e-12);
    // A min rule alone: counted over every record.
    params.rules = vec![Rule::parse_min("alignment=0").unwrap()];
    let d = build(&params, &ten());
    assert_eq!(d.filter.as_ref().unwrap().kept, 3);
    assert!(Rule::parse_min("nope=1").is_err() && Rule::parse_min("alignment").is_err());
}

#[test]
fn beyond_the_caps_samples_are_bounded_and_said() {
    let params = ReportParams {
        exact_cap: 100,
        dots: 50,
        near_sample: 30,
        ..ReportParams::default()
    };
    let lines: Vec<String> = (0..1000)
        .map(|i| {
            pair(
                &format!("q {i}"),
                &format!("a {i}"),
                (i % 7) as f64 / 7.0 - 0.3,
                0.1,
                5 + i % 13,
                i + 1,
            )
        })
        .collect();
    let d = build(&params, &lines);
    assert!(!d.exact);
    assert_eq!(d.records, 1000);
    assert_eq!(d.sample.rows.len(), 50);
    assert_eq!(d.duplicates.near.sample, 30);
    assert_eq!(d.notes.len(), 3, "{:?}", d.notes);
    // Histograms still count every record.
    for h in &d.histograms {
        assert_eq!(
            h.counts.iter().sum::<u64>() + h.below + h.above + h.missing,
            1000
        );
    }
    // The quadrant counts are exact: fwd > 0 for i % 7 >= 3 (4 of 7).
    let aligned = (0..1000).filter(|i| i % 7 >= 3).count() as u64;
    assert_eq!(d.quadrants.aligned, aligned);
    assert_eq!(d.quadrants.not_recoverable, 0);
    assert_eq!(stat(&d, "fwd_pmi").count, 1000);
}

#[test]
fn duplicates_exact_and_near() {
    let long = "the quick brown fox jumps over the lazy dog and then runs far away into the deep green forest where nobody can find it ever again";
    let near = long.replace("lazy", "sleepy");
    let lines = vec![
        pair("Say hi", "Hi!", 0.1, 0.1, 2, 1),
        pair("say   HI", "Hello.", 0.1, 0.1, 2, 2),
        pair("Other", long, 0.1, 0.1, 30, 3),
        pair("Say hi", "Hi!", 0.1, 0.1, 2, 4),
        pair("Tell a story", &near, 0.1, 0.1, 30, 5),
        pair(
            "Unrelated",
            "completely different words in this answer about cooking pasta with tomato sauce",
            0.1,
            0.1,
            12,
            6,
        ),
    ];
    let d = build(&ReportParams::default(), &lines);
    let e = &d.duplicates.exact;
    // Instructions: "say hi" on lines 1, 2, 4.
    assert_eq!(
        (
            e.instruction.groups,
            e.instruction.records,
            e.instruction.extra
        ),
        (1, 3, 2)
    );
    assert_eq!(e.instruction.list[0].lines, vec![1, 2, 4]);
    assert_eq!(e.instruction.list[0].text, "say hi");
    // Responses: "hi!" on 1 and 4; pairs: the same.
    assert_eq!(e.response.list[0].lines, vec![1, 4]);
    assert_eq!((e.pair.groups, e.pair.records), (1, 2));
    // Near: the exact "hi!" pair is found; the unrelated answer joins no
    // group. (The two fox stories differ in one word of 26: their
    // 3-shingle Jaccard is 21/27 = 0.78, at the threshold's edge, so
    // either outcome is right for them.)
    let n = &d.duplicates.near.response;
    assert!(n.list.iter().any(|g| g.lines == vec![1, 4]), "{n:?}");
    assert!(!n.list.iter().any(|g| g.lines.contains(&6)), "{n:?}");
}

#[test]
fn conversations_give_their_weakest_turns() {
    let conv = serde_json::json!({
        "conversations": [
            {"from": "human", "value": "first question"}, {"from": "gpt", "value": "first answer"},
            {"from": "human", "value": "second question"}, {"from": "gpt", "value": "second answer"}
        ],
        "alignment": {
            "alignment": -0.5, "fwd_pmi": -0.5, "rev_pmi": 0.2, "response_tokens": 4,
            "turns": [
                {"turn": 1, "alignment": 0.3, "fwd_pmi": 0.3, "rev_pmi": 0.4, "response_tokens": 3},
                {"turn": 2, "alignment": -0.5, "fwd_pmi": -0.5, "rev_pmi": 0.2, "response_tokens": 4}
            ],
            "line": 7
        }
    })
    .to_string();
    let lines = vec![pair("a", "b", 0.2, 0.2, 3, 1), conv];
    let params = ReportParams {
        weakest_turns: 1,
        ..ReportParams::default()
    };
    let d = build(&params, &lines);
    assert_eq!((d.pairs, d.conversations, d.turns), (1, 1, 2));
    let w = &d.conversations_detail.weakest;
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].line, w[0].turn, w[0].n_turns), (7, 2, 2));
    assert_eq!(w[0].turn_alignments, vec![0.3, -0.5]);
    assert_eq!(
        (w[0].user.as_str(), w[0].assistant.as_str()),
        ("second question", "second answer")
    );
}

#[test]
fn bad_lines_name_the_source_and_line() {
    let mut b = ReportBuilder::new(&ReportParams::default(), "data.jsonl").unwrap();
    b.add_line(b"", 1).unwrap();
    let e = b
        .add_line(br#"{"instruction": "a", "output": "b"}"#, 2)
        .unwrap_err();
    assert!(
        matches!(&e, Error::Record { file, line: 2, reason } if file == "data.jsonl" && reason.contains("no \"alignment\" object")),
        "{e}"
    );
    let e = b
        .add_line(br#"{"instruction": "a", "alignm"#, 3)
        .unwrap_err();
    assert!(
        e.to_string().contains("line 3") && e.to_string().contains("cut short"),
        "{e}"
    );
    let e = b.add_line(b"{nope}", 4).unwrap_err();
    assert!(e.to_string().contains("invalid JSON"), "{e}");
    let params = ReportParams {
        max_line_bytes: 10,
        ..ReportParams::default()
    };
    let mut b = ReportBuilder::new(&params, "data.jsonl").unwrap();
    let e = b.add_line(&[b' '; 11], 5).unwrap_err();
    assert!(e.to_string().contains("over the limit of 10"), "{e}");
}

#[cfg(feature = "std-fs")]
#[test]
fn a_file_with_a_line_over_the_limit_stops_there() {
    let dir = std::env::temp_dir().join(format!("main-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("long.jsonl");
    let good = pair("a", "b", 0.1, 0.1, 2, 1);
    std::fs::write(&path, format!("{good}\n{}\n{good}\n", "x".repeat(5000))).unwrap();
    let params = ReportParams {
        max_line_bytes: 1000,
        ..ReportParams::default()
    };
    let e = report_file(&path, &params, &mut |_, _| {}).unwrap_err();
    assert!(matches!(&e, Error::Record { line: 2, .. }), "{e}");
    assert!(
        e.to_string()
            .contains("longer than the limit of 1000 bytes"),
        "{e}"
    );
    // A truncated last line (no newline, JSON cut).
    std::fs::write(&path, format!("{good}\n{}", &good[..good.len() / 2])).unwrap();
    let e = report_file(&path, &ReportParams::default(), &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(&e, Error::Record { line: 2, .. }) && e.to_string().contains("cut short"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_page_embeds_the_data_safely() {
    let lines = vec![pair("</script><b>", "x & y", 0.1, 0.2, 3, 1)];
    let d = build(&ReportParams::default(), &lines);
    let html = render_html(&d);
    assert!(!html.contains("</script><b>"));
    assert!(html.contains("\\u003c/script\\u003e"));
    assert!(html.contains("id=\"main-report-data\""));
    assert!(html.contains("globalThis.MainReport"));
    assert!(!html.contains("http://") || !html.contains("src=\"http"));
    assert_eq!(html, render_html(&d), "deterministic");
}

#[test]
fn the_provenance_filter_is_the_default_and_options_win() {
    let provenance = serde_json::json!({
        "main_score": "0.1.0",
        "filter": {"keep_top": 0.4, "rank_by": "fwd_pmi", "min_alignment": 0.0,
                   "min_alignment_field": "alignment", "scored": "o.jsonl.scored.jsonl", "kept": 2, "of": 10}
    });
    let mut b = ReportBuilder::new(&ReportParams::default(), "t.jsonl").unwrap();
    b.set_provenance(provenance.clone());
    for (i, l) in ten().iter().enumerate() {
        b.add_line(l.as_bytes(), i + 1).unwrap();
    }
    let d = b.finish();
    let f = d.filter.unwrap();
    // The best 4 by fwd_pmi (i = 0..=3) with alignment >= 0 (i even): 2.
    assert_eq!(
        (f.source.as_str(), f.kept, f.rules.len()),
        ("provenance", 2, 2)
    );
    assert_eq!(d.provenance.unwrap()["main_score"], "0.1.0");
    let params = ReportParams {
        rules: vec![Rule::parse_min("rev_pmi=0").unwrap()],
        ..ReportParams::default()
    };
    let mut b = ReportBuilder::new(&params, "t.jsonl").unwrap();
    b.set_provenance(provenance);
    for (i, l) in ten().iter().enumerate() {
        b.add_line(l.as_bytes(), i + 1).unwrap();
    }
    let f = b.finish().filter.unwrap();
    assert_eq!((f.source.as_str(), f.kept), ("options", 5));
}

#[cfg(feature = "std-fs")]
#[test]
fn a_scored_stage_reads_its_filtered_outputs_provenance() {
    let dir = std::env::temp_dir().join(format!("main-report-prov-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("o.jsonl");
    let stage = dir.join("o.jsonl.scored.jsonl");
    std::fs::write(&stage, ten().join("\n")).unwrap();
    assert!(provenance_beside(&stage).is_none());
    std::fs::write(
        dir.join("o.jsonl.scored.jsonl.provenance.json"),
        r#"{"filter": null}"#,
    )
    .unwrap();
    assert_eq!(
        provenance_beside(&stage).unwrap()["filter"],
        serde_json::Value::Null
    );
    std::fs::write(
        crate::job::provenance_path(&out),
        r#"{"filter": {"keep_top": 0.5, "rank_by": "alignment", "scored": "x", "kept": 5, "of": 10}}"#,
    )
    .unwrap();
    let d = report_file(&stage, &ReportParams::default(), &mut |_, _| {}).unwrap();
    let f = d.filter.unwrap();
    assert_eq!((f.source.as_str(), f.kept), ("provenance", 5));
    std::fs::remove_dir_all(&dir).unwrap();
}
