//! How the Redis store keeps a score: lz4-compressed behind a zero byte, when that is shorter.
//!
//! Every partner commit hands its stored score to the commit script, and Redis's Lua hashes
//! every byte of every argument before the script runs: an empty script given a 2.8 KB
//! commit's arguments cost Redis 13–14 µs, against 3.5 µs without them
//! (docs/performance-log.md, fourteenth round). A new partner's stored score
//! is 1.5 KB of its 1.7 KB commit, and its explanations' wording repeats: compressed it is
//! 0.56 KB, in about a microsecond on the scoring side, and Redis also holds that much less.
//! Reading it back (GetScore) costs about 0.2 µs.
//!
//! A protobuf message never starts with a zero byte (field number 0 does not exist), so a
//! score stored plain, by an earlier pcs or because compressing did not shorten it, reads as
//! it is.

use lz4_flex::block::{compress_into, decompress_into, get_maximum_output_size};
use std::borrow::Cow;

/// The first byte of a compressed score; the uncompressed length (u32, little-endian) and
/// the lz4 block follow.
const COMPRESSED: u8 = 0;
const HEADER: usize = 5;
/// The longest score kept compressed, and so the longest a stored length may claim: a
/// corrupt length cannot make a read allocate gigabytes. A score is a few kilobytes; a
/// longer one is kept as it is.
const LONGEST_SCORE: usize = 16 << 20;

/// `score` as the store keeps it.
pub fn pack(score: &[u8]) -> Cow<'_, [u8]> {
    if score.len() > LONGEST_SCORE {
        return Cow::Borrowed(score);
    }
    let length = score.len() as u32;
    let mut packed = vec![0; HEADER + get_maximum_output_size(score.len())];
    packed[0] = COMPRESSED;
    packed[1..HEADER].copy_from_slice(&length.to_le_bytes());
    match compress_into(score, &mut packed[HEADER..]) {
        Ok(written) if HEADER + written < score.len() => {
            packed.truncate(HEADER + written);
            Cow::Owned(packed)
        }
        _ => Cow::Borrowed(score),
    }
}

/// The score `stored` holds (as [`pack`] wrote it, or plain protobuf).
pub fn unpack(stored: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let Some((&COMPRESSED, rest)) = stored.split_first() else { return Ok(Cow::Borrowed(stored)) };
    let (length, block) = rest.split_first_chunk::<4>().ok_or("a compressed score cut short")?;
    let length = u32::from_le_bytes(*length) as usize;
    if length > LONGEST_SCORE {
        return Err(format!("a compressed score claims {length} bytes"));
    }
    let mut score = vec![0; length];
    match decompress_into(block, &mut score) {
        Ok(written) if written == length => Ok(Cow::Owned(score)),
        Ok(written) => Err(format!("a compressed score of {written} bytes claims {length}")),
        Err(e) => Err(format!("a compressed score does not decompress: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wordy() -> Vec<u8> {
        let mut score = vec![0x0a, 0x02, b'P', b'1'];
        for i in 0..40 {
            score.extend_from_slice(format!("customer C{i} counted for DATA_AI in 2024-06; ").as_bytes());
        }
        score
    }

    #[test]
    fn a_score_that_compresses_is_kept_compressed_and_reads_back() {
        let score = wordy();
        let packed = pack(&score);
        assert_eq!(packed[0], COMPRESSED);
        assert!(packed.len() < score.len() / 3, "{} of {} bytes", packed.len(), score.len());
        assert_eq!(unpack(&packed).unwrap(), score);
    }

    #[test]
    fn a_score_that_does_not_shrink_and_a_score_stored_before_read_as_they_are() {
        let short = [0x0a, 0x02, b'P', b'1'];
        assert!(matches!(pack(&short), Cow::Borrowed(_)));
        assert_eq!(unpack(&short).unwrap(), &short[..]);
        assert!(unpack(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_score_longer_than_a_read_may_claim_is_kept_as_it_is() {
        let long = vec![1; LONGEST_SCORE + 1];
        assert!(matches!(pack(&long), Cow::Borrowed(_)));
        assert_eq!(pack(&long[..LONGEST_SCORE])[0], COMPRESSED);
    }

    #[test]
    fn a_corrupt_compressed_score_is_an_error_not_a_panic_or_a_huge_allocation() {
        let packed = pack(&wordy()).into_owned();
        assert!(unpack(&packed[..3]).is_err());
        assert!(unpack(&packed[..packed.len() - 4]).is_err());
        let mut huge = packed.clone();
        huge[1..HEADER].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unpack(&huge).unwrap_err().contains("claims"));
        let mut longer = packed;
        let claimed = u32::from_le_bytes(longer[1..HEADER].try_into().unwrap()) + 1;
        longer[1..HEADER].copy_from_slice(&claimed.to_le_bytes());
        assert!(unpack(&longer).is_err());
    }
}
