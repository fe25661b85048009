//! Any bytes read as a trace end in its records and totals or in one error
//! located inside the input, never a panic (`docs/trace-format.md`,
//! "Reading").
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match trace::TraceReader::new(data) {
        Ok(mut reader) => loop {
            match reader.next_record() {
                Ok(Some(_)) => {}
                Ok(None) => {
                    assert!(reader.totals().is_some());
                    assert_eq!(reader.bytes_read(), data.len() as u64);
                    break;
                }
                Err(err) => {
                    assert!(err.offset() <= data.len() as u64);
                    assert!(err.to_string().starts_with("byte "));
                    break;
                }
            }
        },
        Err(err) => assert!(err.offset() <= data.len() as u64),
    }
});
