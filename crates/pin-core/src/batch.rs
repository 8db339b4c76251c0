//! The wire format of a DMA batch: records of four u64 words in one
//! BigUint64Array, so that many ops cross from JS in one call with no object
//! or BigInt per argument. The encoder is src/memory/dma-batch.ts.
//!
//! - word 0: kind (bits 0-7), prot (bit 8 read, bit 9 write; maps only),
//!   fd (bits 32-63; map-file only); every other bit is zero
//! - word 1: IOVA (copy: the destination IOVA)
//! - word 2: size
//! - word 3: vaddr (map), file offset (map-file), source IOVA (copy); for an
//!   unmap, zero going in and the bytes the kernel unmapped coming back

use crate::planner::{Op, Region};
use crate::table::{Backing, Prot};

pub const WORDS: usize = 4;

pub const MAP: u64 = 1;
pub const MAP_FILE: u64 = 2;
pub const UNMAP: u64 = 3;
pub const COPY: u64 = 4;

pub const READ: u64 = 1 << 8;
pub const WRITE: u64 = 1 << 9;

const KIND: u64 = 0xff;
const FD_SHIFT: u32 = 32;

/// A record pin-core cannot read: a bug in the encoder, so the whole batch is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    pub index: usize,
    pub why: String,
}

fn prot_bits(p: Prot) -> u64 {
    (if p.read { READ } else { 0 }) | (if p.write { WRITE } else { 0 })
}

pub fn encode(op: &Op) -> [u64; WORDS] {
    match *op {
        Op::Map(r) => match r.backing {
            Backing::Vaddr(v) => [MAP | prot_bits(r.prot), r.iova, r.size, v],
            Backing::File { fd, offset } => [MAP_FILE | prot_bits(r.prot) | (u64::from(fd as u32) << FD_SHIFT), r.iova, r.size, offset],
        },
        Op::Unmap { iova, size } => [UNMAP, iova, size, 0],
        Op::Copy { src_iova, dst_iova, size } => [COPY, dst_iova, size, src_iova],
    }
}

fn decode_one(w: &[u64]) -> Result<Op, String> {
    let (head, iova, size, arg) = (w[0], w[1], w[2], w[3]);
    let kind = head & KIND;
    let prot = Prot { read: head & READ != 0, write: head & WRITE != 0 };
    let fd = (head >> FD_SHIFT) as u32 as i32;
    let (allowed, op) = match kind {
        MAP => (KIND | READ | WRITE, Op::Map(Region { iova, size, backing: Backing::Vaddr(arg), prot })),
        MAP_FILE if fd < 0 => return Err(format!("map-file record with fd {fd}")),
        MAP_FILE => (
            KIND | READ | WRITE | (0xffff_ffff << FD_SHIFT),
            Op::Map(Region { iova, size, backing: Backing::File { fd, offset: arg }, prot }),
        ),
        UNMAP if arg != 0 => return Err(format!("unmap record with word 3 = {arg:#x} (must be 0)")),
        UNMAP => (KIND, Op::Unmap { iova, size }),
        COPY => (KIND, Op::Copy { src_iova: arg, dst_iova: iova, size }),
        k => return Err(format!("unknown kind {k} (1 map, 2 map-file, 3 unmap, 4 copy)")),
    };
    if head & !allowed != 0 {
        return Err(format!("word 0 = {head:#x} has bits set that kind {kind} does not use"));
    }
    Ok(op)
}

/// The ops of `words` (whole records only), all read before any is run.
pub fn decode(words: &[u64]) -> Result<Vec<Op>, BadRecord> {
    // Sized up front: collecting Results into a Vec cannot know the length and regrows it.
    let mut ops = Vec::with_capacity(words.len() / WORDS);
    for (index, w) in words.chunks_exact(WORDS).enumerate() {
        ops.push(decode_one(w).map_err(|why| BadRecord { index, why })?);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(backing: Backing, prot: Prot) -> Region {
        Region { iova: 0xffff_ffff_ffff_f000, size: 0x1000, backing, prot }
    }

    #[test]
    fn every_op_round_trips() {
        let ops = [
            Op::Map(region(Backing::Vaddr(0x7f00_dead_b000), Prot::READ_WRITE)),
            Op::Map(region(Backing::Vaddr(u64::MAX - 0xfff), Prot::READ_ONLY)),
            Op::Map(region(Backing::File { fd: i32::MAX, offset: 1 << 40 }, Prot { read: false, write: true })),
            Op::Unmap { iova: 1 << 32, size: u64::MAX },
            Op::Copy { src_iova: 0x1000, dst_iova: 0x2000, size: 0x3000 },
        ];
        let words: Vec<u64> = ops.iter().flat_map(encode).collect();
        assert_eq!(decode(&words).unwrap(), ops);
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let file = Op::Map(Region { iova: 0x10, size: 0x20, backing: Backing::File { fd: 7, offset: 0x30 }, prot: Prot::READ_WRITE });
        assert_eq!(encode(&file), [(7 << 32) | 0x300 | 2, 0x10, 0x20, 0x30]);
        assert_eq!(encode(&Op::Unmap { iova: 0x10, size: 0x20 }), [3, 0x10, 0x20, 0]);
        assert_eq!(encode(&Op::Copy { src_iova: 0x40, dst_iova: 0x10, size: 0x20 }), [4, 0x10, 0x20, 0x40]);
    }

    #[test]
    fn a_bad_record_names_its_index_and_what_is_wrong() {
        let good = encode(&Op::Unmap { iova: 0, size: 0x1000 });
        let bad = |w0: u64, w3: u64| decode(&[good, [w0, 0, 0x1000, w3]].concat()).unwrap_err();
        assert_eq!(bad(9, 0), BadRecord { index: 1, why: "unknown kind 9 (1 map, 2 map-file, 3 unmap, 4 copy)".into() });
        assert_eq!(bad(UNMAP | READ, 0).why, "word 0 = 0x103 has bits set that kind 3 does not use");
        assert_eq!(bad(MAP | (5 << 32), 0).why, "word 0 = 0x500000001 has bits set that kind 1 does not use", "an fd on a vaddr map");
        assert_eq!(bad(MAP | (1 << 12), 0).index, 1);
        assert_eq!(bad(MAP_FILE | (0xffff_ffff << 32), 0).why, "map-file record with fd -1");
        assert_eq!(bad(UNMAP, 4096).why, "unmap record with word 3 = 0x1000 (must be 0)");
        assert_eq!(decode(&good[..3]).unwrap(), vec![], "only whole records");
    }
}
