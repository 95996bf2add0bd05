//! The MAIN trainer. Not written yet: the engine comes first (issue 6 tracks this crate).
