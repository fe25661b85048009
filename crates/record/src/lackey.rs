//! Turns the text that lackey and the shim write into one pipe into trace
//! records, line by line, as it streams.
//!
//! The lines, and what becomes of them:
//!
//! | line | source | kept as |
//! |---|---|---|
//! | anything before `==PID== Command: ...` | the launcher (the shim is preloaded there too) | dropped |
//! | `I  ADDR,SIZE` | lackey: an instruction fetch | a count (not for the shim's instructions) |
//! | ` L ADDR,SIZE`, ` S ...`, ` M ...` | lackey: a data access | an access record, unless filtered |
//! | `#...` | the shim (protocol in `shim/mte_shim.c`) | an event record, or filter state |
//! | `==PID== ...`, `--PID-- ...` | Valgrind's own messages | dropped |
//!
//! An access is *filtered* (counted, not kept) when it falls between the
//! shim's `#>` and the line that ends the call (the allocator working on
//! the program's behalf), or when the instruction that made it lies in the
//! shim's own code (its prologues and epilogues). Lines that fit none of the
//! forms are counted and the first one kept for the report: they mean
//! Valgrind printed something unexpected, which the user should see.

use std::io::{self, Write};

use trace::{Access, AccessKind, Event, TraceWriter};

/// Parser state: the writer the records go to and what the lines so far
/// have established.
pub struct LackeyParser<W: Write> {
    writer: TraceWriter<W>,
    /// `Command:` has been seen: the program runs.
    started: bool,
    /// The shim's code, once it reported it (`#S`).
    shim_text: Option<(u64, u64)>,
    /// Inside a wrapped call (after `#>`).
    in_call: bool,
    /// The instruction of the accesses that follow is the shim's.
    insn_in_shim: bool,
    /// Instructions not yet handed to the writer.
    instructions: u64,
    filtered: u64,
    unknown_lines: u64,
    first_unknown: Option<String>,
}

/// What the parser saw besides the records it wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParseSummary {
    /// Valgrind printed its `Command:` header (the program started).
    pub started: bool,
    /// The shim announced itself in the program.
    pub shim_loaded: bool,
    pub unknown_lines: u64,
    pub first_unknown: Option<String>,
}

impl<W: Write> LackeyParser<W> {
    pub fn new(writer: TraceWriter<W>) -> Self {
        Self {
            writer,
            started: false,
            shim_text: None,
            in_call: false,
            insn_in_shim: false,
            instructions: 0,
            filtered: 0,
            unknown_lines: 0,
            first_unknown: None,
        }
    }

    /// Handles one line (without its newline).
    #[inline]
    pub fn line(&mut self, line: &[u8]) -> io::Result<()> {
        if !self.started {
            if line.starts_with(b"==") && contains(line, b"== Command: ") {
                self.started = true;
            }
            return Ok(());
        }
        match line.first() {
            Some(b'I') => self.instruction(line),
            Some(b' ') => self.access(line),
            Some(b'#') => self.shim_line(line),
            Some(b'=' | b'-') if line.starts_with(b"==") || line.starts_with(b"--") => Ok(()),
            _ => {
                self.unknown(line);
                Ok(())
            }
        }
    }

    #[inline]
    fn instruction(&mut self, line: &[u8]) -> io::Result<()> {
        let Some((addr, _)) = line.strip_prefix(b"I  ").and_then(addr_size) else {
            self.unknown(line);
            return Ok(());
        };
        self.insn_in_shim = self
            .shim_text
            .is_some_and(|(start, end)| (start..end).contains(&addr));
        if !self.in_call && !self.insn_in_shim {
            self.instructions += 1;
        }
        Ok(())
    }

    #[inline]
    fn access(&mut self, line: &[u8]) -> io::Result<()> {
        let kind = match line.get(1) {
            Some(b'L') => AccessKind::Load,
            Some(b'S') => AccessKind::Store,
            Some(b'M') => AccessKind::Modify,
            _ => {
                self.unknown(line);
                return Ok(());
            }
        };
        let parsed = line
            .get(2..)
            .and_then(|rest| rest.strip_prefix(b" "))
            .and_then(addr_size)
            .and_then(|(addr, size)| Some((addr, u32::try_from(size).ok().filter(|&s| s > 0)?)));
        let Some((addr, size)) = parsed else {
            self.unknown(line);
            return Ok(());
        };
        if self.in_call || self.insn_in_shim {
            self.filtered += 1;
            return Ok(());
        }
        self.writer.access(Access { kind, addr, size })
    }

    fn shim_line(&mut self, line: &[u8]) -> io::Result<()> {
        let Some(&kind) = line.get(1) else {
            self.unknown(line);
            return Ok(());
        };
        let Some(values) = hex_fields(line.get(2..).unwrap_or_default()) else {
            self.unknown(line);
            return Ok(());
        };
        let v = |i: usize| values.get(i).copied().unwrap_or(0);
        let expect = |n: usize| values.len() == n;
        let event = match kind {
            b'S' if expect(2) => {
                self.shim_text = Some((v(0), v(1)));
                return Ok(());
            }
            b'>' if expect(0) => {
                self.in_call = true;
                return Ok(());
            }
            b'm' if expect(2) => Event::Malloc {
                size: v(0),
                ptr: v(1),
            },
            b'c' if expect(3) => Event::Calloc {
                nmemb: v(0),
                size: v(1),
                ptr: v(2),
            },
            b'r' if expect(3) => Event::Realloc {
                old: v(0),
                size: v(1),
                ptr: v(2),
            },
            b'f' if expect(1) => Event::Free { ptr: v(0) },
            b'p' if expect(3) => Event::PosixMemalign {
                align: v(0),
                size: v(1),
                ptr: v(2),
            },
            b'a' if expect(3) => Event::AlignedAlloc {
                align: v(0),
                size: v(1),
                ptr: v(2),
            },
            b'g' if expect(3) => Event::Memalign {
                align: v(0),
                size: v(1),
                ptr: v(2),
            },
            // The shim writes 32-bit values (prot, flags, fd, a result) as
            // their unsigned bit patterns; `as` restores the sign.
            b'M' if expect(7) => Event::Mmap {
                addr: v(0),
                len: v(1),
                prot: v(2) as u32,
                flags: v(3) as u32,
                fd: v(4) as u32 as i32,
                offset: v(5),
                result: v(6),
            },
            b'U' if expect(3) => Event::Munmap {
                addr: v(0),
                len: v(1),
                result: v(2) as u32 as i32,
            },
            b'B' if expect(2) => Event::Brk {
                old_end: v(0),
                new_end: v(1),
            },
            _ => {
                self.unknown(line);
                return Ok(());
            }
        };
        self.in_call = false;
        self.writer
            .instructions(std::mem::take(&mut self.instructions));
        self.writer.event(event)
    }

    fn unknown(&mut self, line: &[u8]) {
        self.unknown_lines += 1;
        if self.first_unknown.is_none() {
            self.first_unknown = Some(String::from_utf8_lossy(line).into_owned());
        }
    }

    /// Hands every pending count to the writer and returns it, with what
    /// the parser saw.
    pub fn finish(mut self) -> (TraceWriter<W>, ParseSummary) {
        self.writer.instructions(self.instructions);
        self.writer.filtered(self.filtered);
        let summary = ParseSummary {
            started: self.started,
            shim_loaded: self.shim_text.is_some(),
            unknown_lines: self.unknown_lines,
            first_unknown: self.first_unknown,
        };
        (self.writer, summary)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `ADDR,SIZE` (hex, decimal), as lackey prints them.
#[inline]
fn addr_size(text: &[u8]) -> Option<(u64, u64)> {
    let comma = text.iter().position(|&b| b == b',')?;
    Some((parse_hex(&text[..comma])?, parse_dec(&text[comma + 1..])?))
}

#[inline]
fn parse_hex(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    let mut value = 0u64;
    for &b in text {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        value = (value << 4) | u64::from(digit);
    }
    Some(value)
}

#[inline]
fn parse_dec(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// Space-separated hex values (a leading space before each).
fn hex_fields(text: &[u8]) -> Option<Vec<u64>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    let rest = text.strip_prefix(b" ")?;
    rest.split(|&b| b == b' ').map(parse_hex).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace::{ExitStatus, Header, Record, TraceReader};

    fn parse(text: &str) -> (Vec<Record>, trace::Totals, ParseSummary) {
        let writer = TraceWriter::new(Vec::new(), &Header::default(), 1).unwrap();
        let mut parser = LackeyParser::new(writer);
        for line in text.lines() {
            parser.line(line.as_bytes()).unwrap();
        }
        let (writer, summary) = parser.finish();
        let (_, bytes) = writer.finish(ExitStatus::Exited(0)).unwrap();
        let mut reader = TraceReader::new(&bytes[..]).unwrap();
        let mut records = Vec::new();
        while let Some(r) = reader.next_record().unwrap() {
            records.push(r);
        }
        (records, reader.totals().unwrap().clone(), summary)
    }

    #[test]
    fn launcher_lines_shim_calls_and_shim_code_are_dropped() {
        let text = "\
#S 7f0000 7f1000
#>
#m 20 55cda822f2a0
==1== Lackey, an example Valgrind tool
==1== Command: ./uaf
==1== 
I  0401ab70,3
 S 1fff000778,8
#S 483d000 483e000
I  0483d100,4
 S 1fff000770,8
#>
I  04a00000,4
 L 04a2e748,8
#m 40 4035310
I  0483d200,1
 L 1fff000770,8
I  0010919f,4
 L 04035318,1
 M 04035318,4
--1-- a debug line
==1== Exit code: 0
";
        let (records, totals, summary) = parse(text);
        let access = |kind, addr, size| Record::Access(Access { kind, addr, size });
        assert_eq!(
            records,
            vec![
                access(AccessKind::Store, 0x1f_ff00_0778, 8),
                Record::Instructions(1),
                Record::Event(Event::Malloc {
                    size: 0x40,
                    ptr: 0x403_5310
                }),
                access(AccessKind::Load, 0x403_5318, 1),
                access(AccessKind::Modify, 0x403_5318, 4),
                Record::Instructions(1),
            ]
        );
        // The shim's store, the allocator's load, the shim's epilogue load.
        assert_eq!(totals.filtered_accesses, 3);
        assert!(summary.started && summary.shim_loaded);
        assert_eq!(summary.unknown_lines, 0);
    }

    #[test]
    fn every_event_kind_parses() {
        let text = "\
==7== Command: x
#c 3 8 1000
#r 1000 40 2000
#f 2000
#p 40 64 3000
#a 10 20 4000
#g 1000 1 5000
#M 0 100000 3 22 ffffffff 0 7f0000000000
#U 7f0000000000 100000 0
#B 5000 26000
";
        let (records, ..) = parse(text);
        assert_eq!(
            records[6],
            Record::Event(Event::Mmap {
                addr: 0,
                len: 0x10_0000,
                prot: 3,
                flags: 0x22,
                fd: -1,
                offset: 0,
                result: 0x7f00_0000_0000
            })
        );
        assert_eq!(
            records[8],
            Record::Event(Event::Brk {
                old_end: 0x5000,
                new_end: 0x26000
            })
        );
        assert_eq!(records.len(), 9);
    }

    #[test]
    fn unexpected_lines_are_counted_not_fatal() {
        let (records, _, summary) =
            parse("==1== Command: x\nhello\n L zz,8\n L 10,0\n#q 1\n#m 1\n L 10,8\n");
        assert_eq!(summary.unknown_lines, 5);
        assert_eq!(summary.first_unknown.as_deref(), Some("hello"));
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_hex(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex(b"1ffffffffffffffff"), None);
        assert_eq!(parse_dec(b"16"), Some(16));
        assert_eq!(parse_dec(b"99999999999999999999"), None);
        assert_eq!(hex_fields(b" a b"), Some(vec![10, 11]));
        assert_eq!(hex_fields(b"a"), None);
    }
}
