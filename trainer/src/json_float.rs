//! JSON has no NaN or infinity: serde_json writes a non-finite `f64` as
//! `null`. What the trainer writes and later reads back (the pipeline's
//! stage outputs, training reports) reads `null` as NaN rather than refusing
//! its own file; such a value was not a number when written either.

use serde::{Deserialize, Deserializer};

/// `#[serde(deserialize_with = "null_as_nan")]`: a number, or `null` as NaN.
pub fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct X {
        #[serde(deserialize_with = "super::null_as_nan")]
        v: f64,
    }

    #[test]
    fn non_finite_values_come_back_as_nan_and_numbers_exactly() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let s = serde_json::to_string(&X { v }).unwrap();
            assert_eq!(s, r#"{"v":null}"#);
            assert!(serde_json::from_str::<X>(&s).unwrap().v.is_nan());
        }
        let v = -0.1f64 / 3.0;
        let s = serde_json::to_string(&X { v }).unwrap();
        assert_eq!(
            serde_json::from_str::<X>(&s).unwrap().v.to_bits(),
            v.to_bits()
        );
    }
}
