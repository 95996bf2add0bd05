//! WASM bindings of MAIN. Not written yet: the engine comes first (issue 5 tracks this crate).
