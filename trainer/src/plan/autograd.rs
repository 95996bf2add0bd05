//! A replay of candle 0.11's tensors and autograd, bytes only: every
//! tensor is a reference-counted node holding a reference-counted storage,
//! and an op that tracks gradients holds its inputs, exactly as candle's
//! `Tensor` and `BackpropOp` do; `backward` replays `Tensor::backward` arm
//! by arm (`candle-core/src/backprop.rs`) with its statements in the same
//! order, so Rust drops every temporary when candle does and the peak of
//! live bytes is the real one.
//!
//! What this catches that counting tensors by hand misses:
//! - every forward output stays alive until the loss is dropped (each op
//!   holds its inputs); views (reshape of a contiguous tensor, transpose,
//!   narrow, broadcast) share their input's storage;
//! - a gradient accumulation `or_insert(arg)` allocates zeros the first
//!   time, then the sum; the old sum dies after;
//! - a gradient computed from a tensor that tracks gradients (a weight, an
//!   activation) is itself tracked and holds its inputs, among them the
//!   consumer's upstream gradient, until it is processed: candle detaches
//!   only the gradient it is working on;
//! - an input that needs no gradient (the attention mask, RoPE's tables,
//!   the loss weights) still gets one, kept until the store is dropped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Live and peak bytes, shared by every storage.
#[derive(Default)]
pub struct Mem {
    pub live: u64,
    pub peak: u64,
}

pub type MemRef = Rc<RefCell<Mem>>;

struct Storage {
    bytes: u64,
    mem: MemRef,
}

impl Storage {
    fn new(bytes: u64, mem: &MemRef) -> Rc<Storage> {
        {
            let mut m = mem.borrow_mut();
            m.live += bytes;
            m.peak = m.peak.max(m.live);
        }
        Rc::new(Storage {
            bytes,
            mem: mem.clone(),
        })
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.mem.borrow_mut().live -= self.bytes;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Neg,
    Recip,
    Sqr,
    Sqrt,
    Exp,
    Log,
    Silu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// An op with its inputs (held while the tensor lives, as candle does).
pub enum Op {
    Unary(Unary, T),
    Affine(T),
    Binary(Binary, T, T),
    Matmul(T, T),
    Sum(T),
    Max(T),
    Broadcast(T),
    Reshape(T),
    Transpose(T),
    /// The input's elements before and after the kept slice.
    Narrow(T, u64, u64),
    Copy(T),
    Cat(Vec<T>),
    IndexSelect(T),
    Gather(T),
    ToDType(T),
    /// Ops whose backward is never replayed (index_add, scatter_add, eq):
    /// only their retention matters.
    Other(Vec<T>),
}

impl Op {
    fn inputs(&self) -> Vec<&T> {
        match self {
            Op::Unary(_, x)
            | Op::Affine(x)
            | Op::Sum(x)
            | Op::Max(x)
            | Op::Broadcast(x)
            | Op::Reshape(x)
            | Op::Transpose(x)
            | Op::Narrow(x, _, _)
            | Op::Copy(x)
            | Op::IndexSelect(x)
            | Op::Gather(x)
            | Op::ToDType(x) => vec![x],
            Op::Binary(_, l, r) | Op::Matmul(l, r) => vec![l, r],
            Op::Cat(a) | Op::Other(a) => a.iter().collect(),
        }
    }
}

pub struct Node {
    id: usize,
    pub numel: u64,
    pub elem: u64,
    storage: Rc<Storage>,
    op: Option<Op>,
    var: bool,
}

pub type T = Rc<Node>;

impl Node {
    pub fn id(&self) -> usize {
        self.id
    }
    fn tracks(&self) -> bool {
        self.var || self.op.is_some()
    }
    pub fn bytes(&self) -> u64 {
        self.numel * self.elem
    }
}

/// Makes tensors: fresh storages or views, with ops held only when an
/// input tracks gradients (candle's `BackpropOp::new`).
pub struct Ctx {
    pub mem: MemRef,
    next: RefCell<usize>,
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx {
            mem: Rc::new(RefCell::new(Mem::default())),
            next: RefCell::new(0),
        }
    }
}

impl Ctx {
    pub fn live(&self) -> u64 {
        self.mem.borrow().live
    }
    pub fn peak(&self) -> u64 {
        self.mem.borrow().peak
    }
    /// Bytes held outside the replay (weights' moments, ...).
    pub fn hold(&self, bytes: u64) -> impl Drop {
        Storage::new(bytes, &self.mem)
    }
    fn id(&self) -> usize {
        let mut n = self.next.borrow_mut();
        *n += 1;
        *n
    }
    fn make(&self, numel: u64, elem: u64, storage: Rc<Storage>, op: Op, var: bool) -> T {
        let tracks = op.inputs().iter().any(|x| x.tracks());
        Rc::new(Node {
            id: self.id(),
            numel,
            elem,
            storage,
            op: if tracks { Some(op) } else { None },
            var,
        })
    }
    /// A tensor with no history (ids, masks, tables).
    pub fn leaf(&self, numel: u64, elem: u64) -> T {
        let s = Storage::new(numel * elem, &self.mem);
        self.make(numel, elem, s, Op::Other(vec![]), false)
    }
    /// A trainable weight (`Var`).
    pub fn var(&self, numel: u64, elem: u64) -> T {
        let s = Storage::new(numel * elem, &self.mem);
        Rc::new(Node {
            id: self.id(),
            numel,
            elem,
            storage: s,
            op: None,
            var: true,
        })
    }
    /// A new storage of `numel` elements of `elem` bytes, made by `op`.
    pub fn new_t(&self, numel: u64, elem: u64, op: Op) -> T {
        let s = Storage::new(numel * elem, &self.mem);
        self.make(numel, elem, s, op, false)
    }
    /// A view of `x` with `numel` logical elements.
    pub fn view(&self, x: &T, numel: u64, op: Op) -> T {
        self.make(numel, x.elem, x.storage.clone(), op, false)
    }
    /// Same data, no history (candle's `detach`).
    pub fn detach(&self, x: &T) -> T {
        Rc::new(Node {
            id: self.id(),
            numel: x.numel,
            elem: x.elem,
            storage: x.storage.clone(),
            op: None,
            var: false,
        })
    }

    // Tensor ops, each allocating like candle's CPU backend.
    pub fn unary(&self, u: Unary, x: &T) -> T {
        self.new_t(x.numel, x.elem, Op::Unary(u, x.clone()))
    }
    pub fn affine(&self, x: &T) -> T {
        self.new_t(x.numel, x.elem, Op::Affine(x.clone()))
    }
    pub fn binary(&self, b: Binary, l: &T, r: &T) -> T {
        self.new_t(
            l.numel.max(r.numel),
            l.elem,
            Op::Binary(b, l.clone(), r.clone()),
        )
    }
    pub fn add(&self, l: &T, r: &T) -> T {
        self.binary(Binary::Add, l, r)
    }
    pub fn sub(&self, l: &T, r: &T) -> T {
        self.binary(Binary::Sub, l, r)
    }
    pub fn mul(&self, l: &T, r: &T) -> T {
        self.binary(Binary::Mul, l, r)
    }
    pub fn div(&self, l: &T, r: &T) -> T {
        self.binary(Binary::Div, l, r)
    }
    pub fn matmul(&self, l: &T, r: &T, out: u64) -> T {
        self.new_t(out, l.elem, Op::Matmul(l.clone(), r.clone()))
    }
    pub fn sum_keepdim(&self, x: &T, out: u64) -> T {
        self.new_t(out, x.elem, Op::Sum(x.clone()))
    }
    pub fn max_keepdim(&self, x: &T, out: u64) -> T {
        self.new_t(out, x.elem, Op::Max(x.clone()))
    }
    pub fn broadcast_as(&self, x: &T, numel: u64) -> T {
        self.view(x, numel, Op::Broadcast(x.clone()))
    }
    pub fn transpose(&self, x: &T) -> T {
        self.view(x, x.numel, Op::Transpose(x.clone()))
    }
    /// Reshape of a contiguous tensor: a view.
    pub fn reshape(&self, x: &T) -> T {
        self.view(x, x.numel, Op::Reshape(x.clone()))
    }
    /// Reshape of a strided tensor: a copy.
    pub fn reshape_copy(&self, x: &T) -> T {
        self.new_t(x.numel, x.elem, Op::Reshape(x.clone()))
    }
    pub fn contiguous_copy(&self, x: &T) -> T {
        self.new_t(x.numel, x.elem, Op::Copy(x.clone()))
    }
    pub fn narrow(&self, x: &T, before: u64, len: u64) -> T {
        let after = x.numel - before - len;
        self.view(x, len, Op::Narrow(x.clone(), before, after))
    }
    pub fn cat(&self, xs: &[&T]) -> T {
        let n = xs.iter().map(|x| x.numel).sum();
        self.new_t(
            n,
            xs[0].elem,
            Op::Cat(xs.iter().map(|&x| x.clone()).collect()),
        )
    }
    pub fn index_select(&self, x: &T, rows: u64, width: u64) -> T {
        self.new_t(rows * width, x.elem, Op::IndexSelect(x.clone()))
    }
    pub fn gather(&self, x: &T, out: u64) -> T {
        self.new_t(out, x.elem, Op::Gather(x.clone()))
    }
    pub fn to_dtype(&self, x: &T, elem: u64) -> T {
        if x.elem == elem {
            x.clone()
        } else {
            self.new_t(x.numel, elem, Op::ToDType(x.clone()))
        }
    }
    /// `Var::from_tensor` of a tensor that is not one: a copy.
    pub fn var_from(&self, x: &T) -> T {
        let s = Storage::new(x.bytes(), &self.mem);
        Rc::new(Node {
            id: self.id(),
            numel: x.numel,
            elem: x.elem,
            storage: s,
            op: None,
            var: true,
        })
    }
    /// `pad_with_zeros` along rows: zeros then a cat (nothing when no pad).
    pub fn pad_rows(&self, x: &T, pad: u64) -> T {
        if pad == 0 {
            return x.clone();
        }
        let z = self.zeros(pad, x.elem);
        self.cat(&[&z, x])
    }
    pub fn zeros_like(&self, x: &T) -> T {
        let s = Storage::new(x.bytes(), &self.mem);
        self.make(x.numel, x.elem, s, Op::Other(vec![]), false)
    }
    pub fn zeros(&self, numel: u64, elem: u64) -> T {
        let s = Storage::new(numel * elem, &self.mem);
        self.make(numel, elem, s, Op::Other(vec![]), false)
    }
    /// Ops replayed for their bytes and what they hold only.
    pub fn other(&self, numel: u64, elem: u64, inputs: &[&T]) -> T {
        self.new_t(
            numel,
            elem,
            Op::Other(inputs.iter().map(|&x| x.clone()).collect()),
        )
    }

    /// candle's `sorted_nodes`: the post-order of a depth-first walk from
    /// the loss over inputs in argument order, reversed, keeping the nodes
    /// a gradient reaches.
    fn sorted_nodes(&self, loss: &T) -> Vec<T> {
        fn walk(node: &T, seen: &mut HashMap<usize, bool>, out: &mut Vec<T>) -> bool {
            if let Some(&t) = seen.get(&node.id) {
                return t;
            }
            let mut track = false;
            if node.var {
                track = true;
            } else if let Some(op) = &node.op {
                for x in op.inputs() {
                    track |= walk(x, seen, out);
                }
            }
            seen.insert(node.id, track);
            if track {
                out.push(node.clone());
            }
            track
        }
        let mut out = Vec::new();
        walk(loss, &mut HashMap::new(), &mut out);
        out.reverse();
        out
    }

    /// Replays `loss.backward()`; returns the gradient store (dropping it
    /// frees what it holds).
    pub fn backward(&self, loss: &T) -> HashMap<usize, T> {
        let nodes = self.sorted_nodes(loss);
        let mut grads: HashMap<usize, T> = HashMap::new();
        grads.insert(loss.id, self.zeros_like(loss));
        for node in nodes.iter() {
            if node.var {
                continue;
            }
            // candle's `let grad = if .. { grad } else { grad.detach() }`
            // moves the removed gradient only on the branch not taken: the
            // original, with everything its history holds, lives to the end
            // of the iteration.
            let removed = grads.remove(&node.id).expect("a gradient for every node");
            let grad = self.detach(&removed);
            let Some(op) = &node.op else { continue };
            match op {
                Op::Binary(Binary::Add, lhs, rhs) => {
                    self.acc(&mut grads, lhs, |c, s| c.add(s, &grad));
                    self.acc(&mut grads, rhs, |c, s| c.add(s, &grad));
                }
                Op::Binary(Binary::Sub, lhs, rhs) => {
                    self.acc(&mut grads, lhs, |c, s| c.add(s, &grad));
                    self.acc(&mut grads, rhs, |c, s| c.sub(s, &grad));
                }
                Op::Binary(Binary::Mul, lhs, rhs) => {
                    let lhs_grad = self.mul(&grad, rhs);
                    self.acc(&mut grads, lhs, |c, s| c.add(s, &lhs_grad));
                    let rhs_grad = self.mul(&grad, lhs);
                    self.acc(&mut grads, rhs, |c, s| c.add(s, &rhs_grad));
                }
                Op::Binary(Binary::Div, lhs, rhs) => {
                    let lhs_grad = self.div(&grad, rhs);
                    self.acc(&mut grads, lhs, |c, s| c.add(s, &lhs_grad));
                    let rhs_grad = self.div(&self.mul(&grad, lhs), &self.unary(Unary::Sqr, rhs));
                    self.acc(&mut grads, rhs, |c, s| c.sub(s, &rhs_grad));
                }
                Op::Matmul(lhs, rhs) => {
                    let lhs_grad = self.matmul(&grad, &self.transpose(rhs), lhs.numel);
                    self.acc(&mut grads, lhs, |c, s| c.add(s, &lhs_grad));
                    let rhs_grad = self.matmul(&self.transpose(lhs), &grad, rhs.numel);
                    self.acc(&mut grads, rhs, |c, s| c.add(s, &rhs_grad));
                }
                Op::Cat(args) => {
                    let mut start = 0;
                    for arg in args {
                        let arg_grad = self.narrow(&grad, start, arg.numel);
                        self.acc(&mut grads, arg, |c, s| c.add(s, &arg_grad));
                        start += arg.numel;
                    }
                }
                Op::Broadcast(arg) => {
                    let arg_grad = self.sum_keepdim(&grad, arg.numel);
                    self.acc(&mut grads, arg, |c, s| {
                        c.add(s, &c.broadcast_as(&arg_grad, s.numel))
                    });
                }
                Op::Sum(arg) => {
                    let g = self.broadcast_as(&grad, arg.numel);
                    self.acc(&mut grads, arg, |c, s| c.add(s, &g));
                }
                Op::Max(arg) => {
                    let n = self.broadcast_as(node, arg.numel);
                    let g = self.broadcast_as(&grad, arg.numel);
                    let eq = self.other(arg.numel, 1, &[&n, arg]);
                    let g = self.mul(&self.to_dtype(&eq, g.elem), &g);
                    drop(eq);
                    self.acc(&mut grads, arg, |c, s| {
                        c.add(s, &c.broadcast_as(&g, s.numel))
                    });
                }
                Op::ToDType(arg) => {
                    self.acc(&mut grads, arg, |c, s| {
                        c.add(s, &c.to_dtype(&grad, arg.elem))
                    });
                }
                Op::Copy(arg) => self.acc(&mut grads, arg, |c, s| c.add(s, &grad)),
                Op::Affine(arg) => {
                    let arg_grad = self.affine(&grad);
                    self.acc(&mut grads, arg, |c, s| c.add(s, &arg_grad));
                }
                Op::Unary(Unary::Log, arg) => {
                    self.acc(&mut grads, arg, |c, s| c.add(s, &c.div(&grad, arg)));
                }
                Op::Unary(Unary::Exp, arg) => {
                    self.acc(&mut grads, arg, |c, s| c.add(s, &c.mul(&grad, node)));
                }
                Op::Unary(Unary::Neg, arg) => self.acc(&mut grads, arg, |c, s| c.sub(s, &grad)),
                Op::Unary(Unary::Recip, arg) => {
                    let g = self.div(&grad, &self.unary(Unary::Sqr, arg));
                    self.acc(&mut grads, arg, |c, s| c.sub(s, &g));
                }
                Op::Unary(Unary::Silu, arg) => {
                    // sigmoid = ((-x).exp() + 1).recip(); silu' = sigmoid * (1 - node) + node
                    let sigmoid = self.unary(
                        Unary::Recip,
                        &self.affine(&self.unary(Unary::Exp, &self.unary(Unary::Neg, arg))),
                    );
                    let silu_grad = self.add(&self.mul(&sigmoid, &self.affine(node)), node);
                    self.acc(&mut grads, arg, |c, s| c.add(s, &c.mul(&grad, &silu_grad)));
                }
                Op::Unary(Unary::Sqr, arg) => {
                    let arg_grad = self.affine(&self.mul(arg, &grad));
                    self.acc(&mut grads, arg, |c, s| c.add(s, &arg_grad));
                }
                Op::Unary(Unary::Sqrt, arg) => {
                    let arg_grad = self.affine(&self.div(&grad, node));
                    self.acc(&mut grads, arg, |c, s| c.add(s, &arg_grad));
                }
                &Op::Narrow(ref arg, before, after) => {
                    let left = (before > 0).then(|| self.zeros(before, grad.elem));
                    let right = (after > 0).then(|| self.zeros(after, grad.elem));
                    let arg_grad = match (&left, &right) {
                        (None, None) => grad.clone(),
                        (Some(l), None) => self.cat(&[l, &grad]),
                        (None, Some(r)) => self.cat(&[&grad, r]),
                        (Some(l), Some(r)) => self.cat(&[l, &grad, r]),
                    };
                    self.acc(&mut grads, arg, |c, s| c.add(s, &arg_grad));
                }
                Op::Reshape(arg) => {
                    let arg_grad = self.view(&grad, arg.numel, Op::Other(vec![]));
                    self.acc(&mut grads, arg, |c, s| c.add(s, &arg_grad));
                }
                Op::Transpose(arg) => {
                    let arg_grad = self.transpose(&grad);
                    self.acc(&mut grads, arg, |c, s| c.add(s, &arg_grad));
                }
                Op::IndexSelect(arg) => {
                    // index_add copies the sum and adds into the copy.
                    self.acc(&mut grads, arg, |c, s| {
                        c.other(s.numel, s.elem, &[s, &grad])
                    });
                }
                Op::Gather(arg) => {
                    // scatter_add likewise.
                    self.acc(&mut grads, arg, |c, s| {
                        c.other(s.numel, s.elem, &[s, &grad])
                    });
                }
                Op::Other(_) => {}
            }
            drop(grad);
            drop(removed);
        }
        grads
    }

    /// `let s = grads.or_insert(arg)?; *s = f(s)`: zeros the first time,
    /// the old sum dropped after the new one exists.
    fn acc(&self, grads: &mut HashMap<usize, T>, arg: &T, f: impl FnOnce(&Ctx, &T) -> T) {
        let sum = grads.entry(arg.id).or_insert_with(|| self.zeros_like(arg));
        *sum = f(self, sum);
    }
}
