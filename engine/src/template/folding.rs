//! MiniJinja folds constant expressions while it compiles a template
//! (`{{ ('x' * 99999999) ~ ('x' * 99999999) }}` becomes one 200 MB
//! constant), before any check of `bounds` can run, and folding nested
//! expressions doubles at each level. So the syntax tree is read first and
//! the size of every constant the compiler would fold is estimated from the
//! sizes of its parts, never made: a template whose constants pass the
//! limits is refused before it is compiled.

use minijinja::machinery::ast::{self, BinOpKind, CallArg, Expr, Stmt};
use minijinja::value::{Value, ValueKind};

use super::budget::{exceeded, MAX_ITEMS};

/// What a constant expression folds to, by size only.
#[derive(Clone, Copy)]
enum Folded {
    /// A string of this many bytes.
    Str(usize),
    /// An integer (or a bool), which `*` may repeat a string by.
    Int(i128),
    /// A list: its items, and the bytes it prints as (an upper bound).
    Seq { items: usize, bytes: usize },
    /// Anything else, printing in at most this many bytes.
    Other(usize),
}

impl Folded {
    fn of(v: &Value) -> Folded {
        match v.kind() {
            ValueKind::String => Folded::Str(v.as_str().map_or(0, str::len)),
            ValueKind::Number | ValueKind::Bool
                if v.is_integer() || v.kind() == ValueKind::Bool =>
            {
                i128::try_from(v.clone()).map_or(Folded::Other(64), Folded::Int)
            }
            // A list or map literal of constants: bounded by the source.
            _ => Folded::Other(v.to_string().len()),
        }
    }

    /// The bytes it prints as.
    fn bytes(self) -> usize {
        match self {
            Folded::Str(n) | Folded::Other(n) => n,
            Folded::Seq { bytes, .. } => bytes,
            Folded::Int(_) => 40,
        }
    }
}

/// The checks of one template's constants against `limit` bytes.
pub(super) struct Folding {
    pub limit: usize,
}

impl Folding {
    fn check(&self, f: Folded, what: &str) -> Result<Folded, minijinja::Error> {
        match f {
            Folded::Str(n) if n > self.limit => Err(exceeded(
                format!("the constant {what} folds to ({n} bytes)"),
                self.limit,
                "bytes",
            )),
            Folded::Seq { items, .. } if items > MAX_ITEMS => Err(exceeded(
                format!("the constant list {what} folds to ({items} items)"),
                MAX_ITEMS,
                "items",
            )),
            Folded::Seq { bytes, .. } if bytes > self.limit => Err(exceeded(
                format!("the constant list {what} folds to ({bytes} bytes printed)"),
                self.limit,
                "bytes",
            )),
            f => Ok(f),
        }
    }

    /// Checks every statement under `stmts`.
    pub fn stmts(&self, stmts: &[Stmt<'_>]) -> Result<(), minijinja::Error> {
        stmts.iter().try_for_each(|s| self.stmt(s))
    }

    pub fn stmt(&self, s: &Stmt<'_>) -> Result<(), minijinja::Error> {
        match s {
            Stmt::Template(t) => self.stmts(&t.children),
            Stmt::EmitExpr(e) => self.expr(&e.expr).map(drop),
            Stmt::EmitRaw(_) | Stmt::Continue(_) | Stmt::Break(_) => Ok(()),
            Stmt::ForLoop(f) => {
                self.expr(&f.target)?;
                self.expr(&f.iter)?;
                self.opt(f.filter_expr.as_ref())?;
                self.stmts(&f.body)?;
                self.stmts(&f.else_body)
            }
            Stmt::IfCond(i) => {
                self.expr(&i.expr)?;
                self.stmts(&i.true_body)?;
                self.stmts(&i.false_body)
            }
            Stmt::WithBlock(w) => {
                for (a, b) in &w.assignments {
                    self.expr(a)?;
                    self.expr(b)?;
                }
                self.stmts(&w.body)
            }
            Stmt::Set(s) => {
                self.expr(&s.target)?;
                self.expr(&s.expr).map(drop)
            }
            Stmt::SetBlock(s) => {
                self.expr(&s.target)?;
                self.opt(s.filter.as_ref())?;
                self.stmts(&s.body)
            }
            Stmt::AutoEscape(a) => {
                self.expr(&a.enabled)?;
                self.stmts(&a.body)
            }
            Stmt::FilterBlock(f) => {
                self.expr(&f.filter)?;
                self.stmts(&f.body)
            }
            Stmt::Block(b) => self.stmts(&b.body),
            Stmt::Import(i) => {
                self.expr(&i.expr)?;
                self.expr(&i.name).map(drop)
            }
            Stmt::FromImport(i) => {
                self.expr(&i.expr)?;
                for (a, b) in &i.names {
                    self.expr(a)?;
                    self.opt(b.as_ref())?;
                }
                Ok(())
            }
            Stmt::Extends(e) => self.expr(&e.name).map(drop),
            Stmt::Include(i) => self.expr(&i.name).map(drop),
            Stmt::Macro(m) => self.macro_decl(m),
            Stmt::CallBlock(c) => {
                self.call(&c.call)?;
                self.macro_decl(&c.macro_decl)
            }
            Stmt::Do(d) => self.call(&d.call),
        }
    }

    fn macro_decl(&self, m: &ast::Macro<'_>) -> Result<(), minijinja::Error> {
        m.args.iter().try_for_each(|e| self.expr(e).map(drop))?;
        m.defaults.iter().try_for_each(|e| self.expr(e).map(drop))?;
        self.stmts(&m.body)
    }

    fn call(&self, c: &ast::Call<'_>) -> Result<(), minijinja::Error> {
        self.expr(&c.expr)?;
        self.args(&c.args)
    }

    fn args(&self, args: &[CallArg<'_>]) -> Result<(), minijinja::Error> {
        for a in args {
            match a {
                CallArg::Pos(e)
                | CallArg::Kwarg(_, e)
                | CallArg::PosSplat(e)
                | CallArg::KwargSplat(e) => {
                    self.expr(e)?;
                }
            }
        }
        Ok(())
    }

    fn opt(&self, e: Option<&Expr<'_>>) -> Result<(), minijinja::Error> {
        e.map_or(Ok(()), |e| self.expr(e).map(drop))
    }

    /// What `e` folds to (`None`: not a constant), each folded part checked.
    fn expr(&self, e: &Expr<'_>) -> Result<Option<Folded>, minijinja::Error> {
        Ok(match e {
            Expr::Const(c) => Some(Folded::of(&c.value)),
            // A literal list or map is folded only when its items are
            // literals: bounded by the source.
            Expr::List(l) => {
                let mut folded = Some(Folded::Seq { items: 0, bytes: 2 });
                for item in &l.items {
                    let f = self.expr(item)?;
                    folded = match (folded, f, item) {
                        (Some(Folded::Seq { items, bytes }), Some(f), Expr::Const(_)) => {
                            Some(Folded::Seq {
                                items: items + 1,
                                bytes: bytes.saturating_add(f.bytes()).saturating_add(4),
                            })
                        }
                        _ => None,
                    };
                }
                folded
            }
            Expr::Map(m) => {
                for k in &m.keys {
                    self.expr(k)?;
                }
                for v in &m.values {
                    self.expr(v)?;
                }
                m.as_const().map(|v| Folded::Other(v.to_string().len()))
            }
            Expr::UnaryOp(u) => self.expr(&u.expr)?.map(|_| Folded::Other(64)),
            Expr::BinOp(b) => {
                let left = self.expr(&b.left)?;
                let right = self.expr(&b.right)?;
                match (left, right) {
                    (Some(l), Some(r)) => Some(self.check(binop(b.op, l, r), op_name(b.op))?),
                    _ => None,
                }
            }
            Expr::Compare(c) => {
                let mut all = self.expr(&c.expr)?.is_some();
                for op in &c.ops {
                    all &= self.expr(&op.expr)?.is_some();
                }
                all.then_some(Folded::Int(1))
            }
            Expr::Var(_) => None,
            Expr::Slice(s) => {
                self.expr(&s.expr)?;
                self.opt(s.start.as_ref())?;
                self.opt(s.stop.as_ref())?;
                self.opt(s.step.as_ref())?;
                None
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr)?;
                self.expr(&i.true_expr)?;
                self.opt(i.false_expr.as_ref())?;
                None
            }
            Expr::Filter(f) => {
                self.opt(f.expr.as_ref())?;
                self.args(&f.args)?;
                None
            }
            Expr::Test(t) => {
                self.expr(&t.expr)?;
                self.args(&t.args)?;
                None
            }
            Expr::GetAttr(g) => {
                self.expr(&g.expr)?;
                None
            }
            Expr::GetItem(g) => {
                self.expr(&g.expr)?;
                self.expr(&g.subscript_expr)?;
                None
            }
            Expr::Call(c) => {
                self.call(c)?;
                None
            }
        })
    }
}

fn op_name(op: BinOpKind) -> &'static str {
    match op {
        BinOpKind::Mul => "`*`",
        BinOpKind::Add => "`+`",
        BinOpKind::Concat => "`~`",
        _ => "an operator",
    }
}

/// The size of `l op r`, as MiniJinja's constant folding would make it.
fn binop(op: BinOpKind, l: Folded, r: Folded) -> Folded {
    use Folded::*;
    let int = |x: Option<i128>| x.map_or(Other(64), Int);
    match (op, l, r) {
        (BinOpKind::Mul, Str(n), Int(k)) | (BinOpKind::Mul, Int(k), Str(n)) => {
            Str(n.saturating_mul(usize::try_from(k.max(0)).unwrap_or(usize::MAX)))
        }
        (BinOpKind::Mul, Seq { items, bytes }, Int(k))
        | (BinOpKind::Mul, Int(k), Seq { items, bytes }) => {
            let k = usize::try_from(k.max(0)).unwrap_or(usize::MAX);
            Seq {
                items: items.saturating_mul(k),
                bytes: bytes.saturating_mul(k),
            }
        }
        (BinOpKind::Mul, Int(a), Int(b)) => int(a.checked_mul(b)),
        (BinOpKind::Add, Int(a), Int(b)) => int(a.checked_add(b)),
        (BinOpKind::Sub, Int(a), Int(b)) => int(a.checked_sub(b)),
        (BinOpKind::FloorDiv, Int(a), Int(b)) => int(a.checked_div_euclid(b)),
        (BinOpKind::Rem, Int(a), Int(b)) => int(a.checked_rem_euclid(b)),
        (BinOpKind::Pow, Int(a), Int(b)) => {
            int(u32::try_from(b).ok().and_then(|b| a.checked_pow(b)))
        }
        (BinOpKind::Add, Str(a), Str(b)) => Str(a.saturating_add(b)),
        (BinOpKind::Add, Seq { items: a, bytes: x }, Seq { items: b, bytes: y }) => Seq {
            items: a.saturating_add(b),
            bytes: x.saturating_add(y),
        },
        (BinOpKind::Concat, l, r) => Str(l.bytes().saturating_add(r.bytes())),
        // Either operand, whichever the test picks: the larger, to be safe.
        (BinOpKind::ScAnd | BinOpKind::ScOr, l, r) => {
            if l.bytes() >= r.bytes() {
                l
            } else {
                r
            }
        }
        _ => Other(64),
    }
}
