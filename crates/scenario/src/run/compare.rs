//! Outcomes: whether a result matches what a line expects, and both written
//! in the scenario syntax for messages.
//!
//! Rules (`docs/language.md`, "Statements"):
//! - values compare as numbers (`value 0x0` is `value 0`);
//! - `ok` accepts success with or without a count: written without `N` on a
//!   command that returns a count (`write-fd`, `read-fd`, `poketags`), it
//!   accepts any count, zero included (a decision: the spec lists `ok` and
//!   `ok N` as two outcomes, and `ok` says only that the call succeeded);
//!   `ok N` accepts exactly that count;
//! - `tag-in MASK` accepts a tag whose bit is set in the mask;
//! - `tags T,...` accepts exactly that list (same length, same order);
//! - `fault CODE` accepts that code at any address (or none); `fault CODE
//!   addr=PTR` also needs the fault's address to equal `PTR` on bits 55:0
//!   ([`mte::same_address_bits`]), and a fault reported without an address
//!   does not match it.
//!
//! Text: `ok`, `ok 48` (counts in decimal), `value 0x42`, `tag 7`,
//! `tag-in 0xfffe`, `tags 7,7`, `mismatch 0x10`, `error EINVAL`,
//! `fault SEGV_MTESERR addr=0x500...` (values, offsets, masks and addresses
//! in hex, addresses with their top byte).

use std::fmt;

use mte::{Tag, TaggedPtr, same_address_bits};
use uapi::Outcome as Actual;

use lang::ast::Outcome as Expected;

/// Whether `actual` is what `expected` asks for. `addr` is the value of the
/// expected fault's `addr=` pointer, evaluated when the line ran.
pub fn matches(expected: &Expected, addr: Option<TaggedPtr>, actual: &Actual) -> bool {
    match (expected, actual) {
        (Expected::Ok, Actual::Ok | Actual::Count(_)) => true,
        (Expected::OkCount(n), Actual::Count(m)) => n == m,
        (Expected::Value(v), Actual::Value(w)) => v.get() == *w,
        (Expected::Tag(t), Actual::Tag(u)) => t == u,
        (Expected::TagIn(mask), Actual::Tag(t)) => mask.contains(*t),
        (Expected::Tags(ts), Actual::Tags(us)) => ts[..] == us[..],
        (Expected::Mismatch(o), Actual::Mismatch(p)) => o == p,
        (Expected::Error(e), Actual::Error(f)) => e == f,
        (Expected::Stuck, Actual::Stuck) => true,
        (Expected::Fault { code, .. }, Actual::Fault(fault)) => {
            *code == fault.code
                && match addr {
                    None => true,
                    Some(want) => fault.addr.is_some_and(|got| same_address_bits(want, got)),
                }
        }
        _ => false,
    }
}

/// A result in the scenario syntax (`value 0x42`).
pub fn actual_text(actual: &Actual) -> String {
    let mut text = String::new();
    // Writing to a `String` cannot fail.
    let _ = write_actual(&mut text, actual);
    text
}

/// [`actual_text`] written to `out`, without allocating for the results of
/// loads and stores (the runner hashes the text of results other than `ok`
/// and `value V` into the run's digest).
pub fn write_actual(out: &mut impl fmt::Write, actual: &Actual) -> fmt::Result {
    match actual {
        Actual::Ok => out.write_str("ok"),
        Actual::Value(v) => {
            // `{v:#x}` by hand: the formatting machinery costs more than
            // the access it reports.
            let mut digits = [0u8; 32];
            let mut i = digits.len();
            let mut rest = *v;
            loop {
                i -= 1;
                digits[i] = b"0123456789abcdef"[(rest & 0xf) as usize];
                rest >>= 4;
                if rest == 0 {
                    break;
                }
            }
            out.write_str("value 0x")?;
            // Hex digits are ASCII.
            out.write_str(core::str::from_utf8(&digits[i..]).unwrap_or("?"))
        }
        other => out.write_str(&other_text(other)),
    }
}

fn other_text(actual: &Actual) -> String {
    match actual {
        Actual::Ok => "ok".to_owned(),
        Actual::Count(n) => format!("ok {n}"),
        Actual::Value(v) => format!("value {v:#x}"),
        Actual::Tag(t) => format!("tag {t}"),
        Actual::Tags(ts) => format!("tags {}", tag_list(ts)),
        Actual::Mismatch(o) => format!("mismatch {o:#x}"),
        Actual::Error(e) => format!("error {e}"),
        Actual::Fault(fault) => fault.to_string(),
        Actual::Stuck => "stuck".to_owned(),
    }
}

/// An expected outcome in the scenario syntax, its `addr=` evaluated.
pub fn expected_text(expected: &Expected, addr: Option<TaggedPtr>) -> String {
    match expected {
        Expected::Ok => "ok".to_owned(),
        Expected::OkCount(n) => format!("ok {n}"),
        Expected::Value(v) => format!("value {:#x}", v.get()),
        Expected::Tag(t) => format!("tag {t}"),
        Expected::TagIn(mask) => format!("tag-in {:#x}", mask.bits()),
        Expected::Tags(ts) => format!("tags {}", tag_list(ts)),
        Expected::Mismatch(o) => format!("mismatch {o:#x}"),
        Expected::Error(e) => format!("error {e}"),
        Expected::Fault { code, .. } => match addr {
            Some(addr) => format!("fault {code} addr={:#x}", addr.raw()),
            None => format!("fault {code}"),
        },
        Expected::Stuck => "stuck".to_owned(),
    }
}

fn tag_list(tags: &[Tag]) -> String {
    let mut text = String::with_capacity(tags.len() * 3);
    for (i, tag) in tags.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&tag.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use lang::ast::{PtrBase, PtrExpr, Span, Value128};
    use mte::TagMask;
    use uapi::{Errno, Fault, FaultCode};

    #[test]
    fn values_are_written_as_the_formatter_writes_them() {
        for v in [
            0,
            1,
            0xf,
            0x10,
            0xdead_beef,
            u128::from(u64::MAX),
            u128::MAX,
        ] {
            assert_eq!(actual_text(&Actual::Value(v)), format!("value {v:#x}"));
        }
        assert_eq!(actual_text(&Actual::Ok), "ok");
        assert_eq!(actual_text(&Actual::Count(48)), "ok 48");
    }

    fn tag(v: u8) -> Tag {
        Tag::new(v).unwrap()
    }

    fn fault(code: FaultCode, addr: Option<u64>) -> Actual {
        Actual::Fault(Fault {
            code,
            addr: addr.map(TaggedPtr::from_raw),
        })
    }

    fn expected_fault(code: FaultCode) -> Expected {
        let expr = PtrExpr {
            span: Span::default(),
            base: PtrBase::Raw(TaggedPtr::from_raw(0)),
            tag: None,
        };
        Expected::Fault {
            code,
            addr: Some(Box::new(expr)),
        }
    }

    #[test]
    fn ok_accepts_any_success_and_ok_n_one_count() {
        assert!(matches(&Expected::Ok, None, &Actual::Ok));
        // Decision (module doc): `ok` on a count-returning call accepts any
        // count, zero included.
        assert!(matches(&Expected::Ok, None, &Actual::Count(48)));
        assert!(matches(&Expected::Ok, None, &Actual::Count(0)));
        assert!(matches(&Expected::OkCount(48), None, &Actual::Count(48)));
        assert!(!matches(&Expected::OkCount(48), None, &Actual::Count(47)));
        assert!(!matches(&Expected::OkCount(0), None, &Actual::Ok));
        assert!(!matches(&Expected::Ok, None, &Actual::Error(Errno::Fault)));
    }

    #[test]
    fn values_compare_as_numbers() {
        // Spec: "`value 0x0` and `value 0` are the same": both parse to 0,
        // and 128-bit values keep their high half.
        assert!(matches(
            &Expected::Value(Value128::new(0)),
            None,
            &Actual::Value(0)
        ));
        let wide = 0xffff_0000_0000_0000_0000_0000_0000_0042_u128;
        assert!(matches(
            &Expected::Value(Value128::new(wide)),
            None,
            &Actual::Value(wide)
        ));
        assert!(!matches(
            &Expected::Value(Value128::new(0x42)),
            None,
            &Actual::Value(wide)
        ));
        assert!(!matches(
            &Expected::Value(Value128::new(0)),
            None,
            &Actual::Tag(tag(0))
        ));
    }

    #[test]
    fn tags_tag_in_and_lists() {
        assert!(matches(&Expected::Tag(tag(7)), None, &Actual::Tag(tag(7))));
        assert!(!matches(&Expected::Tag(tag(7)), None, &Actual::Tag(tag(3))));
        // `tag-in 0xfffe`: any tag but 0.
        let mask = Expected::TagIn(TagMask::from_bits(0xfffe));
        assert!(matches(&mask, None, &Actual::Tag(tag(1))));
        assert!(matches(&mask, None, &Actual::Tag(tag(15))));
        assert!(!matches(&mask, None, &Actual::Tag(tag(0))));
        let list = Expected::Tags(vec![tag(7), tag(7)].into_boxed_slice());
        assert!(matches(&list, None, &Actual::Tags(vec![tag(7), tag(7)])));
        assert!(!matches(&list, None, &Actual::Tags(vec![tag(7)])));
        assert!(!matches(
            &list,
            None,
            &Actual::Tags(vec![tag(7), tag(7), tag(7)])
        ));
        assert!(!matches(&list, None, &Actual::Tags(vec![tag(9), tag(7)])));
        assert!(matches(
            &Expected::Mismatch(0x10),
            None,
            &Actual::Mismatch(16)
        ));
        assert!(matches(
            &Expected::Error(Errno::Srch),
            None,
            &Actual::Error(Errno::Srch)
        ));
        assert!(!matches(
            &Expected::Error(Errno::Srch),
            None,
            &Actual::Error(Errno::Inval)
        ));
    }

    #[test]
    fn fault_addresses_compare_on_bits_55_to_0() {
        let serr = expected_fault(FaultCode::SegvMteSerr);
        // Spec: `addr=PTR` compared on bits 55:0 (Linux clears the tag bits
        // of si_addr, QEMU keeps them).
        let want = TaggedPtr::from_raw(0x0300_0000_1000_0040);
        assert!(matches(
            &serr,
            Some(want),
            &fault(FaultCode::SegvMteSerr, Some(0x0000_0000_1000_0040))
        ));
        assert!(matches(
            &serr,
            Some(want),
            &fault(FaultCode::SegvMteSerr, Some(0xf500_0000_1000_0040))
        ));
        assert!(!matches(
            &serr,
            Some(want),
            &fault(FaultCode::SegvMteSerr, Some(0x0300_0000_1000_0050))
        ));
        // An address is asked for but none was reported.
        assert!(!matches(
            &serr,
            Some(want),
            &fault(FaultCode::SegvMteSerr, None)
        ));
        // Without `addr=`, any address and no address match.
        let any = Expected::Fault {
            code: FaultCode::SegvMteAerr,
            addr: None,
        };
        assert!(matches(&any, None, &fault(FaultCode::SegvMteAerr, None)));
        assert!(matches(
            &any,
            None,
            &fault(FaultCode::SegvMteAerr, Some(0x1234))
        ));
        assert!(!matches(&any, None, &fault(FaultCode::SegvMteSerr, None)));
        assert!(!matches(&any, None, &Actual::Ok));
    }

    #[test]
    fn texts_are_scenario_syntax() {
        assert_eq!(actual_text(&Actual::Ok), "ok");
        assert_eq!(actual_text(&Actual::Count(48)), "ok 48");
        assert_eq!(actual_text(&Actual::Value(0x42)), "value 0x42");
        assert_eq!(actual_text(&Actual::Value(0)), "value 0x0");
        assert_eq!(actual_text(&Actual::Tag(tag(9))), "tag 9");
        assert_eq!(actual_text(&Actual::Tags(vec![tag(9), tag(7)])), "tags 9,7");
        assert_eq!(actual_text(&Actual::Mismatch(16)), "mismatch 0x10");
        assert_eq!(actual_text(&Actual::Error(Errno::Inval)), "error EINVAL");
        assert_eq!(
            actual_text(&fault(FaultCode::SegvMteSerr, Some(0x0300_0000_1000_0040))),
            "fault SEGV_MTESERR addr=0x300000010000040"
        );
        assert_eq!(
            actual_text(&fault(FaultCode::SegvMteAerr, None)),
            "fault SEGV_MTEAERR"
        );
        assert_eq!(
            expected_text(
                &expected_fault(FaultCode::BusAdrAln),
                Some(TaggedPtr::from_raw(0x1001))
            ),
            "fault BUS_ADRALN addr=0x1001"
        );
        assert_eq!(
            expected_text(&Expected::TagIn(TagMask::from_bits(0xfffe)), None),
            "tag-in 0xfffe"
        );
        assert_eq!(
            expected_text(&Expected::Value(Value128::new(0)), None),
            "value 0x0"
        );
        assert_eq!(expected_text(&Expected::OkCount(48), None), "ok 48");
    }
}
