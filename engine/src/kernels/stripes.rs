//! The output side of a matmul: a matrix cut into column stripes that
//! threads claim, and the tile of a stripe one kernel call writes.

use std::sync::atomic::{AtomicBool, Ordering};

/// The columns `[col0, col0 + width)` of a row-major `[n_rows, n_cols]` f32
/// matrix: one worker's output rows of a matmul.
pub struct Stripe<'a> {
    ptr: *mut f32,
    n_rows: usize,
    n_cols: usize,
    pub col0: usize,
    pub width: usize,
    _y: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a stripe is the only handle to its columns (see `ColumnStripes::claim`).
unsafe impl Send for Stripe<'_> {}

impl Stripe<'_> {
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Row `t` of the stripe (`width` elements).
    pub fn row_mut(&mut self, t: usize) -> &mut [f32] {
        assert!(t < self.n_rows, "stripe row {t} of {}", self.n_rows);
        // SAFETY: the range lies inside the matrix (checked at construction and
        // above), no other stripe covers these columns, and `&mut self` makes
        // this view the only live one into the stripe.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(t * self.n_cols + self.col0), self.width)
        }
    }
}

/// A matrix cut into column stripes that threads claim, each exactly once, so
/// they can write disjoint columns of one output without locks.
pub struct ColumnStripes<'a> {
    ptr: *mut f32,
    n_rows: usize,
    n_cols: usize,
    stripe_width: usize,
    claimed: Vec<AtomicBool>,
    _y: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: claims hand out each stripe once (atomically), and stripes are disjoint.
unsafe impl Sync for ColumnStripes<'_> {}

impl<'a> ColumnStripes<'a> {
    pub fn new(y: &'a mut [f32], n_rows: usize, n_cols: usize, stripe_width: usize) -> Self {
        assert_eq!(y.len(), n_rows * n_cols, "output has the wrong length");
        assert!(stripe_width > 0);
        let n = n_cols.div_ceil(stripe_width);
        ColumnStripes {
            ptr: y.as_mut_ptr(),
            n_rows,
            n_cols,
            stripe_width,
            claimed: (0..n).map(|_| AtomicBool::new(false)).collect(),
            _y: std::marker::PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.claimed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.claimed.is_empty()
    }

    /// Stripe `i`; panics if it was claimed before.
    pub fn claim(&self, i: usize) -> Stripe<'_> {
        assert!(
            !self.claimed[i].swap(true, Ordering::AcqRel),
            "stripe {i} claimed twice"
        );
        let col0 = i * self.stripe_width;
        Stripe {
            ptr: self.ptr,
            n_rows: self.n_rows,
            n_cols: self.n_cols,
            col0,
            width: self.stripe_width.min(self.n_cols - col0),
            _y: std::marker::PhantomData,
        }
    }
}

/// The writable destination of one tile: columns `col..col + n_rows` of a stripe.
pub struct OutTile<'s, 'y> {
    pub stripe: &'s mut Stripe<'y>,
    /// First column, relative to the stripe.
    pub col: usize,
}

impl OutTile<'_, '_> {
    /// The tile's outputs for token `t` (as many as the stripe has room for).
    pub fn row(&mut self, t: usize) -> &mut [f32] {
        let col = self.col;
        &mut self.stripe.row_mut(t)[col..]
    }
}
