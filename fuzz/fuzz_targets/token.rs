//! Callback token verification.
//!
//! A genuine token is signed for fuzz-chosen run, wait and expiry, then either
//! edited byte by byte or replaced by fuzz-chosen text, and verified.
//!
//! Checked: no panic; the untouched token verifies and yields its expiry; it
//! does not verify under another secret, run or wait; and any token that
//! verifies is byte-for-byte the one `sign` produces for the expiry it carries
//! (a token has exactly one accepted spelling — no malleability).

#![no_main]

use arcrun::core::callback::{sign, verify, TokenError};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"secret";

#[derive(Debug, Arbitrary)]
enum Edit {
    Replace { at: u8, byte: u8 },
    Insert { at: u8, byte: u8 },
    Remove { at: u8 },
    Prefix(String),
    Suffix(String),
}

#[derive(Debug, Arbitrary)]
enum Token {
    /// The genuine token with edits applied.
    Edited(Vec<Edit>),
    /// Arbitrary text.
    Raw(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    run_id: String,
    wait_id: String,
    expires_at: u64,
    other_run: String,
    other_wait: String,
    token: Token,
}

fn apply(token: &str, edits: &[Edit]) -> String {
    let mut b = token.as_bytes().to_vec();
    for e in edits {
        match e {
            Edit::Replace { at, byte } if !b.is_empty() => {
                let i = *at as usize % b.len();
                b[i] = *byte;
            }
            Edit::Insert { at, byte } => {
                let i = *at as usize % (b.len() + 1);
                b.insert(i, *byte);
            }
            Edit::Remove { at } if !b.is_empty() => {
                let i = *at as usize % b.len();
                b.remove(i);
            }
            Edit::Prefix(s) => b.splice(0..0, s.bytes()).for_each(drop),
            Edit::Suffix(s) => b.extend_from_slice(s.as_bytes()),
            _ => {}
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fuzz_target!(|input: Input| {
    let Input {
        run_id,
        wait_id,
        expires_at,
        other_run,
        other_wait,
        token,
    } = input;
    let genuine = sign(SECRET, &run_id, &wait_id, expires_at);

    assert_eq!(verify(&[SECRET], &run_id, &wait_id, Some(&genuine)), Ok(expires_at));
    assert_eq!(
        verify(&[b"old", SECRET], &run_id, &wait_id, Some(&genuine)),
        Ok(expires_at),
        "rotation: a later secret in the list still verifies"
    );
    assert_eq!(
        verify(&[b"other-secret"], &run_id, &wait_id, Some(&genuine)),
        Err(TokenError::BadSignature)
    );
    if other_run != run_id || other_wait != wait_id {
        assert_eq!(
            verify(&[SECRET], &other_run, &other_wait, Some(&genuine)),
            Err(TokenError::BadSignature),
            "token moved to another run or wait"
        );
    }

    let candidate = match &token {
        Token::Edited(edits) => apply(&genuine, edits),
        Token::Raw(s) => s.clone(),
    };
    match verify(&[SECRET], &run_id, &wait_id, Some(&candidate)) {
        Ok(exp) => assert_eq!(
            candidate,
            sign(SECRET, &run_id, &wait_id, exp),
            "verify accepted a token that sign would never produce"
        ),
        Err(e) => {
            assert_ne!(candidate, genuine);
            assert!(!e.message().is_empty());
            if candidate.is_empty() {
                assert_eq!(e, TokenError::Missing);
            }
        }
    }
});
