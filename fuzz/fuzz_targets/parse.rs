//! Any bytes end in a script or one diagnostic located inside the input,
//! never a panic (`docs/language.md`, "Running").
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(err) = lang::parse("fuzz.mte", data) {
        let span = err.span();
        assert!(span.start <= span.end && span.end as usize <= data.len());
        let lines = data.split(|&b| b == b'\n').count();
        assert!(err.line() >= 1 && err.line() as usize <= lines);
        assert!(err.column() >= 1);
        assert!(err.to_string().starts_with("fuzz.mte:"));
    }
});
