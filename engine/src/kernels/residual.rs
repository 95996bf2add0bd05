//! The residual connection, `x += y`, compiled per instruction set
//! ([`float_simd_fn!`]); one add per element, so every ISA gives the same bits.

float_simd_fn! {
    /// `x[i] += y[i]`.
    pub fn add_in_place(x: &mut [f32], y: &[f32]) = add_body;
}

#[inline(always)]
fn add_body(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "residual add: lengths differ");
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn adds_every_element_including_the_tail() {
        for n in [1, 7, 17, 1_031] {
            let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 3.0).collect();
            let y: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 1.1e-3).collect();
            let mut got = x.clone();
            super::add_in_place(&mut got, &y);
            for i in 0..n {
                assert_eq!(
                    got[i].to_bits(),
                    (x[i] + y[i]).to_bits(),
                    "n {n} element {i}"
                );
            }
        }
    }
}
