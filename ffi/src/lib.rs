//! libmain, the C ABI of MAIN. Not written yet: the engine comes first (issue 4 tracks this crate).
