//! `main-wasm-bindgen --target web|nodejs --out-dir DIR MODULE.wasm`: what
//! `wasm-bindgen --target … --out-dir … MODULE.wasm` writes, from the
//! library the wasm-bindgen CLI itself is built on, with the CLI's
//! defaults. Built in about a minute on 2 cores where `cargo install
//! wasm-bindgen-cli` takes two and a half (it also builds the test runner
//! and its HTTP server, which this project never uses).

use std::path::PathBuf;
use std::process::ExitCode;

use wasm_bindgen_cli_support::Bindgen;

const USAGE: &str = "usage: main-wasm-bindgen --target web|nodejs --out-dir DIR MODULE.wasm";

struct Args {
    target: String,
    out_dir: PathBuf,
    input: PathBuf,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut target, mut out_dir, mut input) = (None, None, None);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--target" => target = Some(value("--target")?),
            "--out-dir" => out_dir = Some(PathBuf::from(value("--out-dir")?)),
            s if s.starts_with('-') => return Err(format!("unknown option '{s}'")),
            _ if input.is_some() => return Err(format!("a second module '{a}'")),
            _ => input = Some(PathBuf::from(a)),
        }
    }
    Ok(Args {
        target: target.ok_or("--target is missing")?,
        out_dir: out_dir.ok_or("--out-dir is missing")?,
        input: input.ok_or("the module to bind is missing")?,
    })
}

fn run(args: &Args) -> Result<(), String> {
    let mut b = Bindgen::new();
    match args.target.as_str() {
        "web" => b.web(true),
        "nodejs" => b.nodejs(true),
        t => return Err(format!("unknown target '{t}' (known: web, nodejs)")),
    }
    .map_err(|e| e.to_string())?;
    // The CLI's defaults where the library's differ: TypeScript definitions
    // on, and `init()` without arguments loads the module from next to the
    // glue (the annotation tool relies on it).
    b.input_path(&args.input)
        .typescript(true)
        .omit_default_module_path(false)
        .generate(&args.out_dir)
        .map_err(|e| format!("{}: {e:#}", args.input.display()))
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)).and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("main-wasm-bindgen: {e}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}
