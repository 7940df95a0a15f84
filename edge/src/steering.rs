//! Which worker process reads a tunnel datagram while two generations of
//! the edge run side by side (an upgrade in place).
//!
//! Each worker has its own UDP socket on the tunnel address, all in one
//! `SO_REUSEPORT` group held open by the supervisor. Left alone the kernel
//! would hash a connector's packets onto any socket of the group, and a
//! worker that does not know the connection would drop them: the upgrade
//! would cut every tunnel connection. Instead every worker puts its
//! generation in the first byte of the connection IDs it issues
//! ([`CidGenerator`]), and the supervisor attaches a classic BPF program to
//! the group ([`Group::program`]) that sends
//! - a packet whose destination connection ID is one of ours (a short
//!   header; a long header whose ID has our length) to the socket of the
//!   generation that ID names, so a handshake under way stays with the
//!   worker that began it, and
//! - everything else (a new connection's first Initial, whose 20-byte ID a
//!   quinn client chose) to the newest generation.
//!
//! So connections stay with the process that has their keys, new ones go
//! to the new process, and nothing is copied between processes. (Katran and
//! mvfst route QUIC by a server id in the connection ID the same way.) A
//! worker that gets another's packet anyway (while the program is being
//! replaced) answers with a stateless reset the connector ignores: the reset
//! token is derived from each worker's own random key, so only packet loss
//! results, which QUIC repairs.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// Length of the connection IDs the edge issues: the generation byte and
/// seven random bytes (quinn's default length is 8 too).
pub const CID_LEN: usize = 8;

/// Most generations alive at once (one serving, the rest draining); the
/// program's jumps are 8-bit, and an operator upgrading this often has a
/// problem worth an error.
pub const MAX_GENERATIONS: usize = 32;

/// Issues connection IDs whose first byte is the worker's generation.
#[derive(Debug)]
pub struct CidGenerator {
    generation: u8,
    rng: SystemRandom,
}

impl CidGenerator {
    /// IDs for the worker of `generation`.
    pub fn new(generation: u8) -> Self {
        Self {
            generation,
            rng: SystemRandom::new(),
        }
    }
}

impl quinn::ConnectionIdGenerator for CidGenerator {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[0] = self.generation;
        // The system RNG does not fail on Linux once booted; were it to, the
        // zeros would still be unique enough to route but not to hide.
        let _ = self.rng.fill(&mut bytes[1..]);
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset when the test holds.
    pub jt: u8,
    /// Jump offset when it does not.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

const LD_B_ABS: u16 = 0x30;
const JSET_K: u16 = 0x45;
const JEQ_K: u16 = 0x15;
const JA: u16 = 0x05;
const RET_K: u16 = 0x06;

/// Offsets in a long-header packet: flags (1) and version (4), then the
/// destination connection ID's length and the ID.
const LONG_DCID_LEN_AT: u32 = 5;
const LONG_DCID_AT: u32 = 6;

/// The kernel's array of a reuseport group, by generation: a socket joins
/// at the end, and a socket that leaves is replaced by the last one
/// (`reuseport_detach_sock`). The program returns indices into this array,
/// so the supervisor mirrors every join and leave and attaches a new
/// program after each.
#[derive(Debug, Default, Clone)]
pub struct Group {
    sockets: Vec<u8>,
}

impl Group {
    /// A socket of `generation` joined (it was bound last).
    pub fn join(&mut self, generation: u8) {
        self.sockets.push(generation);
    }

    /// The socket of `generation` was closed.
    pub fn leave(&mut self, generation: u8) {
        if let Some(i) = self.sockets.iter().position(|&g| g == generation) {
            self.sockets.swap_remove(i);
        }
    }

    /// Sockets in the group.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether the group is empty.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The steering program: by connection ID to each generation, new
    /// connections to `newest`. `None` when `newest` is not in the group.
    pub fn program(&self, newest: u8) -> Option<Vec<Insn>> {
        let newest_at = self.sockets.iter().position(|&g| g == newest)? as u32;
        let others: Vec<(u32, u8)> = self
            .sockets
            .iter()
            .enumerate()
            .filter(|&(_, &g)| g != newest)
            .map(|(i, &g)| (i as u32, g))
            .collect();
        // Jumps skip the match chain: two instructions per generation.
        let chain = u8::try_from(2 * others.len()).ok()?;
        let insn = |code, jt, jf, k| Insn { code, jt, jf, k };
        let mut p = vec![
            // 0: the first byte: long header when its top bit is set.
            insn(LD_B_ABS, 0, 0, 0),
            // 1: long -> 4; short -> 2.
            insn(JSET_K, 2, 0, 0x80),
            // 2: short header: the DCID starts at byte 1.
            insn(LD_B_ABS, 0, 0, 1),
            // 3: -> the match chain at 7.
            insn(JA, 0, 0, 3),
            // 4: long header: an ID of our length is one we issued (a
            // quinn client's first Initial has a 20-byte ID of its own).
            insn(LD_B_ABS, 0, 0, LONG_DCID_LEN_AT),
            // 5: ours -> 6; anything else -> the newest.
            insn(JEQ_K, 0, chain.checked_add(1)?, CID_LEN as u32),
            // 6: the long header's DCID.
            insn(LD_B_ABS, 0, 0, LONG_DCID_AT),
        ];
        for (index, generation) in others {
            p.push(insn(JEQ_K, 0, 1, u32::from(generation)));
            p.push(insn(RET_K, 0, 0, index));
        }
        p.push(insn(RET_K, 0, 0, newest_at));
        Some(p)
    }
}

/// Runs a program the way the kernel does on a datagram's payload (for the
/// tests: only the instructions [`Group::program`] emits). A load past the
/// end aborts with 0, as in the kernel.
pub fn run(program: &[Insn], packet: &[u8]) -> u32 {
    let mut a: u32 = 0;
    let mut pc = 0usize;
    while let Some(i) = program.get(pc) {
        pc += 1;
        match i.code {
            LD_B_ABS => match packet.get(i.k as usize) {
                Some(&b) => a = u32::from(b),
                None => return 0,
            },
            JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
            JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
            JA => pc += i.k as usize,
            RET_K => return i.k,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(generation: u8) -> Vec<u8> {
        vec![0x40, generation, 1, 2, 3, 4, 5, 6, 7, 0xaa, 0xbb]
    }

    /// A long-header packet of `kind` to one of our 8-byte IDs.
    fn long(kind: u8, dcid_first: u8) -> Vec<u8> {
        let mut p = vec![0xc0 | kind << 4, 0, 0, 0, 1, 8, dcid_first];
        p.extend([1, 2, 3, 4, 5, 6, 7]);
        p
    }

    /// A client's first Initial: a 20-byte ID of its choosing.
    fn first_initial(dcid_first: u8) -> Vec<u8> {
        let mut p = vec![0xc0, 0, 0, 0, 1, 20, dcid_first];
        p.extend([9; 19]);
        p
    }

    #[test]
    fn packets_go_to_their_generation_and_new_connections_to_the_newest() {
        let mut g = Group::default();
        g.join(7);
        g.join(8);
        g.join(9);
        let p = g.program(9).unwrap();
        assert_eq!(run(&p, &short(7)), 0);
        assert_eq!(run(&p, &short(8)), 1);
        assert_eq!(run(&p, &short(9)), 2);
        // An ID no live generation issued: the newest (which resets it).
        assert_eq!(run(&p, &short(200)), 2);
        // A first Initial, whatever its first byte: the newest.
        assert_eq!(run(&p, &first_initial(7)), 2);
        assert_eq!(run(&p, &first_initial(8)), 2);
        // The rest of a handshake (Initial, Handshake) carries our ID: it
        // stays with the worker that began it.
        assert_eq!(run(&p, &long(0, 7)), 0);
        assert_eq!(run(&p, &long(2, 7)), 0);
        assert_eq!(run(&p, &long(2, 8)), 1);
    }

    #[test]
    fn indices_follow_the_kernels_swap_on_leave() {
        let mut g = Group::default();
        for generation in [1, 2, 3, 4] {
            g.join(generation);
        }
        // Generation 2 (index 1) leaves: the last (4) takes its place.
        g.leave(2);
        let p = g.program(4).unwrap();
        assert_eq!(run(&p, &short(1)), 0);
        assert_eq!(run(&p, &short(4)), 1);
        assert_eq!(run(&p, &short(3)), 2);
        assert_eq!(run(&p, &first_initial(3)), 1);
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn a_lone_generation_gets_everything_and_a_missing_one_no_program() {
        let mut g = Group::default();
        g.join(5);
        let p = g.program(5).unwrap();
        for packet in [short(5), short(6), first_initial(1), long(2, 9), vec![0x40]] {
            assert_eq!(run(&p, &packet), 0, "{packet:?}");
        }
        assert!(g.program(6).is_none());
    }

    #[test]
    fn generations_up_to_the_cap_fit_the_jumps() {
        let mut g = Group::default();
        for generation in 0..MAX_GENERATIONS as u8 {
            g.join(generation);
        }
        let newest = MAX_GENERATIONS as u8 - 1;
        let p = g.program(newest).unwrap();
        for generation in 0..MAX_GENERATIONS as u8 {
            assert_eq!(run(&p, &short(generation)), u32::from(generation));
        }
        assert_eq!(run(&p, &first_initial(3)), u32::from(newest));
    }

    #[test]
    fn ids_carry_the_generation_and_differ() {
        use quinn::ConnectionIdGenerator;
        let mut g = CidGenerator::new(42);
        let a = g.generate_cid();
        let b = g.generate_cid();
        assert_eq!(a.len(), CID_LEN);
        assert_eq!(a[0], 42);
        assert_ne!(a, b);
    }
}
